import base64
import io
from html.parser import HTMLParser

import pytest
from testing_utils import synthetic_video

from walkreg.cli import main
from walkreg.video import write_video


pytest.importorskip("matplotlib")


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_is_self_contained_and_its_images_decode(tmp_path):
    from PIL import Image

    clip = synthetic_video(6, 48, 64, shift=(0, 4), seed=3) * 0.8 + 0.1
    write_video(tmp_path / "src.mp4", clip, fps=24)
    write_video(tmp_path / "edit.mp4", clip.flip(0), fps=24)
    report = tmp_path / "report.html"
    rc = main(
        [
            "score",
            str(tmp_path / "edit.mp4"),
            "--source",
            str(tmp_path / "src.mp4"),
            "--encoder",
            "rgb",
            "--report",
            str(report),
        ]
    )
    assert rc == 0
    parser = _Images()
    parser.feed(report.read_text())
    assert {"html", "table", "img"} <= set(parser.tags)
    assert len(parser.sources) >= 3  # plot, worst pairs, animation
    kinds = set()
    for src in parser.sources:
        assert src.startswith("data:image/")  # nothing fetched from outside the page
        header, payload = src.split(",", 1)
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.verify()
        kinds.add(image.format)
    assert kinds == {"PNG", "GIF"}
