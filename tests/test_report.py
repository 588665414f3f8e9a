import base64
import importlib
import re
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from testing_utils import CLIPS, synthetic_video

from walkreg.cli import main
from walkreg.features import create_features
from walkreg.report import HEAT_ANCHORS, decimate, heat_colours, plot_svg, render_report
from walkreg.scoring import PairView, ScoreConfig, ScoreOutput, score_clip
from walkreg.video import png_bytes, read_image, read_video, write_video


SVG = "{http://www.w3.org/2000/svg}"
DATA_URI = re.compile(r"data:(image/[a-z+]+);base64,([A-Za-z0-9+/=]*)")
BODY = {"edited": "edit.mp4", "source": "cups.mp4", "encoder": "rgb"}


@pytest.fixture(scope="module")
def cups_scores():
    """Real ScoreOutputs of the bundled cups clip (8 frames, small) with a brightness flicker at frames 2 and 5:
    ``(with the source, without it)``."""
    clip = read_video(CLIPS / "cups.mp4", max_frames=8, size=(96, 172))
    flicker = torch.tensor([1.0, 1.0, 0.8, 1.0, 1.0, 1.15, 1.0, 1.0]).view(-1, 1, 1, 1)
    edit = (clip * flicker).clamp(0, 1)
    encoder = create_features("rgb")
    config = ScoreConfig(num_worst=4, preview_frames=8, preview_width=120)
    return score_clip(edit, encoder, clip, config, num_frames=8), score_clip(edit, encoder, None, config, num_frames=8)


@pytest.fixture
def no_plotting_libraries(monkeypatch):
    """matplotlib and PIL unimportable, and walkreg.report imported afresh under that."""
    for name in ("matplotlib", "matplotlib.pyplot", "PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "walkreg.report")
    return importlib.import_module("walkreg.report")


class _Page(HTMLParser):
    """Tags, ``src``/``href`` values and the ``class`` of every element of a page."""

    def __init__(self, page: str):
        super().__init__()
        self.tags, self.links, self.classes = [], [], []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        self.classes.append(attrs.get("class", ""))


def svg_fragments(page: str) -> list[ET.Element]:
    """Every inline ``<svg>`` of ``page`` parsed as XML (fails if one is not well-formed)."""
    fragments = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert fragments
    return [ET.fromstring(fragment) for fragment in fragments]


def check_png(data: bytes) -> tuple[int, int]:
    """Check a PNG's signature, chunk CRCs and image data size; return its ``(height, width)``."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, idat = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, payload = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, kind
        chunks.append(kind)
        idat += payload if kind == b"IDAT" else b""
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", payload[:10])
        position += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    assert (depth, colour_type) == (8, 2)
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return height, width


def decode_png(data: bytes, tmp_path) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels of a PNG, decoded by FFmpeg (PyAV)."""
    path = tmp_path / "decode.png"
    path.write_bytes(data)
    return (read_image(path).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def check_page(page: str, tmp_path) -> list[tuple[int, int]]:
    """Checks of every report page: self-contained, well-formed SVG, every image a decodable PNG; returns their
    sizes."""
    parsed = _Page(page)
    assert {"html", "table", "svg", "img"} <= set(parsed.tags) and "script" not in parsed.tags
    assert all(link.startswith(("data:image/png;base64,", "#")) for link in parsed.links), "a link leaves the page"
    assert not re.search(r"url\((?!#)", page) and "@import" not in page
    svg_fragments(page)
    sizes = []
    for kind, payload in DATA_URI.findall(page):
        assert kind == "image/png"
        data = base64.b64decode(payload, validate=True)
        size = check_png(data)
        assert decode_png(data, tmp_path).shape[:2] == size
        sizes.append(size)
    return sizes


def panels(svg: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-panel"): g for g in svg.iter(f"{SVG}g") if g.get("class") == "panel"}


def series_keys(panel: ET.Element) -> set[str]:
    return {key for g in panel.iter(f"{SVG}g") if g.get("class") == "series" for key in g.get("data-keys").split()}


def tick_labels(panel: ET.Element, axis: str) -> list[str]:
    group = next(g for g in panel.iter(f"{SVG}g") if g.get("class") == axis)
    return [t.text for t in group.iter(f"{SVG}text")]


def point_ys(panel: ET.Element) -> list[float]:
    ys = [float(c.get("cy")) for c in panel.iter(f"{SVG}circle")]
    for line in panel.iter(f"{SVG}polyline"):
        ys += [float(point.split(",")[1]) for point in line.get("points").split()]
    return ys


def frame_box(panel: ET.Element) -> tuple[float, float]:
    frame = [r for r in panel.findall(f"{SVG}rect") if r.get("fill") == "none"][0]
    return float(frame.get("y")), float(frame.get("y")) + float(frame.get("height"))


def test_report_renders_without_matplotlib_or_pil(no_plotting_libraries, cups_scores, tmp_path):
    out = cups_scores[0]
    page = no_plotting_libraries.render_report(BODY, out)
    (tmp_path / "report.html").write_text(page)
    sizes = check_page(page, tmp_path)
    assert len(sizes) == 3 * len(out.worst) + len(out.preview)  # 2 frames + heat map per worst pair, 1 per preview


def test_scores_and_errors_are_on_their_own_axes(cups_scores):
    out = cups_scores[0]
    plot = svg_fragments(render_report(BODY, out))[0]
    assert plot.get("class") == "plot"
    found = panels(plot)
    assert set(found) == {"scores", "errors"}
    assert series_keys(found["scores"]) == {"consistency", "walk_back", "fidelity", "agreement"}
    assert series_keys(found["errors"]) == {"fidelity_error"}
    score_ticks = [float(t) for t in tick_labels(found["scores"], "y-axis")]
    error_ticks = [float(t) for t in tick_labels(found["errors"], "y-axis")]
    assert score_ticks[0] == 0 and score_ticks[-1] == 1
    highest_error = max(p["fidelity_error"] for p in out.pairs)
    assert highest_error <= error_ticks[-1] < 1 and len(error_ticks) >= 3  # its own scale, fitted to the errors
    for panel in found.values():  # every point lies inside its own panel
        top, bottom = frame_box(panel)
        assert all(top - 1e-6 <= y <= bottom + 1e-6 for y in point_ys(panel))
    assert frame_box(found["scores"])[1] < frame_box(found["errors"])[0]


def test_identical_series_are_drawn_once_and_named_together(cups_scores):
    with_source, without_source = (svg_fragments(render_report(BODY, out))[0] for out in cups_scores)
    legend = [t.text for t in with_source.iter(f"{SVG}text") if t.text and "=" in t.text]
    assert legend == ["consistency = fidelity"]
    assert [g.get("data-keys") for g in with_source.iter(f"{SVG}g") if g.get("class") == "series"].count(
        "consistency fidelity"
    ) == 1
    assert set(panels(without_source)) == {"scores"}  # no source and no flow: no errors
    assert series_keys(panels(without_source)["scores"]) == {"consistency", "walk_back"}
    assert "consistency = walk_back" in [t.text for t in without_source.iter(f"{SVG}text")]


def test_the_page_shows_exactly_the_worst_pairs_of_the_output(cups_scores):
    for out in cups_scores:
        page = render_report(BODY, out)
        assert _Page(page).classes.count("worst-pair") == len(out.worst) == 4
        assert f"Worst frame pairs: {len(out.worst)} of {len(out.pairs)}" in page
        assert re.findall(r'class="worst-pair" id="pair-(\d+)"', page) == [str(v.index) for v in out.worst]
    fewer = ScoreOutput(out.num_frames, out.has_source, out.overall, out.pairs, out.worst[:1], [])
    page = render_report(BODY, fewer)
    assert _Page(page).classes.count("worst-pair") == 1 and "Worst frame pairs: 1 of" in page
    assert "anim-frame" not in page  # no preview, no animation
    none = ScoreOutput(out.num_frames, out.has_source, out.overall, out.pairs)
    page = render_report(BODY, none)
    assert "worst-pair" not in _Page(page).classes and "Worst frame pairs: 0 of" in page


def test_the_animation_cycles_through_every_preview_frame(cups_scores):
    out = cups_scores[0]
    page = render_report(BODY, out)
    animation = next(svg for svg in svg_fragments(page) if svg.get("class") == "anim")
    frames = [g for g in animation.iter(f"{SVG}g") if g.get("class") == "anim-frame"]
    assert len(frames) == len(out.preview) > 1
    assert [g.get("visibility") for g in frames] == ["visible"] + ["hidden"] * (len(frames) - 1)  # without CSS
    delays = [float(re.search(r"animation-delay:([0-9.]+)s", g.get("style")).group(1)) for g in frames]
    assert delays == sorted(delays) and delays[0] == 0
    assert "@keyframes anim-cycle" in page and "prefers-reduced-motion" in page
    images = {image.get("id") for image in animation.iter(f"{SVG}image")}
    strip = [use.get("href") for use in svg_fragments(page)[-1].iter(f"{SVG}use")]  # the static strip
    assert strip == [f"#anim-{i}" for i in range(len(out.preview))] and {s[1:] for s in strip} == images


def test_plot_of_one_pair_and_of_thousands():
    one = ET.fromstring(plot_svg([{"consistency": 0.5, "walk_back": 0.5, "flow_warp_error": 0.02}]))
    assert series_keys(panels(one)["scores"]) == {"consistency", "walk_back"}
    assert len(list(panels(one)["scores"].iter(f"{SVG}circle"))) == 1  # a lone point is drawn as a marker
    assert tick_labels(panels(one)["scores"], "x-axis") == ["0"]

    rng = np.random.default_rng(0)
    n = 5000
    consistency = rng.uniform(0.8, 1.0, n)
    consistency[3210] = 0.05
    pairs = [
        {"consistency": c, "walk_back": 0.9, "fidelity": c, "fidelity_error": e, "flow_warp_error": 2 * e}
        for c, e in zip(consistency, rng.uniform(0.01, 0.05, n), strict=True)
    ]
    svg_text = plot_svg(pairs)
    assert len(svg_text) < 1_000_000
    many = ET.fromstring(svg_text)
    found = panels(many)
    assert series_keys(found["errors"]) == {"fidelity_error", "flow_warp_error"}
    assert float(tick_labels(found["errors"], "y-axis")[-1]) == pytest.approx(0.1)
    for line in many.iter(f"{SVG}polyline"):
        assert len(line.get("points").split()) <= 2 * 680
    assert not list(many.iter(f"{SVG}circle"))
    hover = [r for g in many.iter(f"{SVG}g") if g.get("class") == "hover" for r in g.findall(f"{SVG}rect")]
    assert 100 <= len(hover) <= 400 and all(r.find(f"{SVG}title") is not None for r in hover)
    top, bottom = frame_box(found["scores"])
    assert max(point_ys(found["scores"])) == pytest.approx(bottom - 0.05 * (bottom - top), abs=0.01)  # dip kept


def test_decimate_keeps_extremes_in_order():
    values = np.sin(np.linspace(0, 20, 1001))
    values[500], values[501] = -5.0, np.nan
    xs, ys = decimate(values, 100)
    assert len(xs) <= 100 and np.all(np.diff(xs) > 0)
    assert ys.min() == -5.0 and 500 in xs and 501 not in xs
    xs, ys = decimate(values[:50], 100)
    assert len(xs) == 50 and np.array_equal(ys, values[:50])


def test_heat_colours_follow_the_table():
    colours = heat_colours(np.array([[0.0, 0.5, 1.0, 2.0, np.nan]]))
    assert colours.dtype == np.uint8 and colours.shape == (1, 5, 3)
    np.testing.assert_array_equal(colours[0, [0, 2, 3, 4]], HEAT_ANCHORS[[0, -1, -1, 0]].astype(np.uint8))
    ramp = heat_colours(np.linspace(0, 1, 101)[None])[0].astype(float)
    luma = ramp @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luma) > 0)  # dark to bright throughout


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (33, 64)])
def test_png_bytes_round_trips_through_ffmpeg(shape, tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    data = png_bytes(rgb)
    assert check_png(data) == shape
    np.testing.assert_array_equal(decode_png(data, tmp_path), rgb)


def test_png_bytes_rejects_other_arrays():
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            png_bytes(bad)


def test_report_of_a_view_whose_heat_map_differs_in_size(tmp_path):
    frames = torch.rand(2, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    view = PairView(0, 0.5, frames, torch.rand(5, 8))
    pairs = [{"consistency": 0.5, "walk_back": 0.5}]
    out = ScoreOutput(2, False, dict(pairs[0]), pairs, [view], [PairView(0, 0.5, frames[:1], torch.rand(5, 8))])
    assert check_page(render_report({}, out), tmp_path) == [(20, 30)] * 3 + [(20, 60)]


def test_cli_report_is_self_contained_and_its_images_decode(no_plotting_libraries, tmp_path):
    clip = synthetic_video(6, 48, 64, shift=(0, 4), seed=3) * 0.8 + 0.1
    write_video(tmp_path / "src.mp4", clip, fps=24)
    write_video(tmp_path / "edit.mp4", clip.flip(0), fps=24)
    report = tmp_path / "report.html"
    edited, source = str(tmp_path / "edit.mp4"), str(tmp_path / "src.mp4")
    assert main(["score", edited, "--source", source, "--encoder", "rgb", "--report", str(report)]) == 0
    page = report.read_text()
    assert len(check_page(page, tmp_path)) >= 4  # worst pairs and animation frames
    assert _Page(page).classes.count("worst-pair") == 5  # every pair of a 6-frame clip is among the 8 worst
