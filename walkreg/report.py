"""A self-contained HTML report of ``walkreg score``: opens offline, every image embedded as base64.

Contents: the overall scores, a per-frame-pair plot of every score, the worst frame pairs (both frames beside the
inconsistency heat map) and an animated heat-map strip of the clip. Needs matplotlib (``pip install
'walkreg[report]'``), imported only when a report is written.
"""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np
import torch

from walkreg.atomic import write_text_atomic
from walkreg.scoring import PairView, ScoreOutput


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("`--report` needs matplotlib: `pip install 'walkreg[report]'`.") from err
    return plt


def _rgb(image: torch.Tensor) -> np.ndarray:
    """``(3, h, w)`` float in [0, 1] -> ``(h, w, 3)`` uint8."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _heat_rgb(heat: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` in [0, 1] -> ``(*size, 3)`` uint8 through the ``inferno`` colour map (nearest-resized to
    ``size``)."""
    plt = _pyplot()
    heat = torch.nn.functional.interpolate(heat[None, None].float(), size=size, mode="nearest")[0, 0]
    return (plt.get_cmap("inferno")(heat.clamp(0, 1).numpy())[..., :3] * 255).astype(np.uint8)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_scores(out: ScoreOutput) -> str:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 3.2))
    for key in out.pairs[0]:
        if key != "consistency":
            values = [p[key] for p in out.pairs]
            axis.plot(values, label=key + (" (lower is better)" if key.endswith("error") else ""), linewidth=1.2)
    axis.plot([p["consistency"] for p in out.pairs], label="consistency", color="black", linewidth=2)
    axis.set_xlabel("frame pair (t, t+1)")
    axis.set_ylabel("score")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower left", ncol=3)
    return _png(figure)


def _pair_image(view: PairView) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(10, 2.6))
    for axis, image, title in zip(
        axes,
        [_rgb(view.frames[0]), _rgb(view.frames[1]), _heat_rgb(view.heat, view.frames.shape[-2:])],
        [f"frame {view.index}", f"frame {view.index + 1}", "inconsistency"],
        strict=True,
    ):
        axis.imshow(image)
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    return _png(figure)


def _animation(preview: list[PairView]) -> str:
    """Animated GIF: each kept frame beside its heat map."""
    from PIL import Image

    frames = [
        Image.fromarray(np.concatenate([_rgb(v.frames[0]), _heat_rgb(v.heat, v.frames.shape[-2:])], axis=1))
        for v in preview
    ]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_report(body: dict, out: ScoreOutput) -> str:
    """The report page as an HTML string (``body`` is the JSON of :func:`walkreg.scoring.score_clip`'s run)."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in out.overall.items())
    worst = "".join(
        f'<figure><img alt="pair {v.index}" src="data:image/png;base64,{_pair_image(v)}">'
        f"<figcaption>pair {v.index}-{v.index + 1}: consistency {v.score:.4f}</figcaption></figure>"
        for v in out.worst
    )
    animation = (
        "<h2>Inconsistency over the clip</h2>"
        f'<img alt="heat-map animation" src="data:image/gif;base64,{_animation(out.preview)}">'
        if out.preview
        else ""
    )
    title = html.escape(f"walkreg score: {body.get('edited', '')}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}}td{{padding:2px 12px}}
figure{{margin:0 0 1em 0}}img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>
<p>Source: {html.escape(str(body.get("source")))}; encoder: {html.escape(str(body.get("encoder")))};
{out.num_frames} frames. Scores are in [0, 1], higher is more consistent (errors: lower is better).
The heat maps show 1 - exp(-error / colour_scale) per 8x8 cell (with a source) or the mass of the walk
t -> t+1 -> t that does not come home (without one).</p>
<table>{rows}</table>
<h2>Per frame pair</h2><img alt="per-pair scores" src="data:image/png;base64,{_plot_scores(out)}">
<h2>Worst frame pairs</h2>{worst}
{animation}
</body></html>
"""


def write_report(path: str | os.PathLike, body: dict, out: ScoreOutput) -> None:
    """Render the report and write it atomically."""
    write_text_atomic(path, render_report(body, out))
