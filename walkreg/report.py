"""A self-contained HTML report of ``walkreg score``: opens offline, no script, every image embedded.

Contents: the overall scores, a per-frame-pair plot of every score (inline SVG), the worst frame pairs (both frames
beside the inconsistency heat map, embedded PNG) and the inconsistency over the clip (a CSS animation over inline
SVG frames, plus a static strip of the same frames). Needs only numpy and torch: the PNGs come from
:func:`walkreg.video.png_bytes` and the heat maps are coloured through a small built-in colour table.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Callable

import numpy as np
import torch

from walkreg.atomic import write_text_atomic
from walkreg.scoring import PairView, ScoreOutput
from walkreg.video import png_bytes


# Dark-to-bright perceptual colour table for the heat maps (anchors of the CC0 "inferno" map, linearly
# interpolated): ``(9, 3)`` RGB in [0, 255] at values 0, 1/8, ..., 1.
HEAT_ANCHORS = np.array(
    [
        (0, 0, 4),
        (27, 12, 65),
        (74, 12, 107),
        (120, 28, 109),
        (165, 44, 96),
        (207, 68, 70),
        (237, 105, 37),
        (251, 155, 6),
        (252, 255, 164),
    ],
    dtype=np.float64,
)

# Line styles of the plot, (colour, dash pattern, width): a colour-blind-safe palette (Okabe & Ito) and a distinct
# dash pattern per score, so that lines stay apart in grey too. Unknown keys take the fallbacks in turn.
SERIES_STYLES = {
    "consistency": ("#000000", "", 3.2),
    "walk_back": ("#0072B2", "7 4", 1.8),
    "fidelity": ("#D55E00", "2 3", 2.0),
    "agreement": ("#009E73", "10 3 2 3", 1.8),
    "fidelity_error": ("#CC79A7", "", 2.0),
    "flow_warp_error": ("#E69F00", "7 4", 2.0),
}
_FALLBACK_STYLES = [("#56B4E9", "4 2", 1.6), ("#7F7F7F", "1 3", 1.6), ("#F0E442", "12 4", 1.6)]

FRAME_SECONDS = 0.125  # animation: seconds per preview frame

# plot geometry (SVG user units, about pixels)
_WIDTH, _LEFT, _RIGHT, _LEGEND_X = 960, 64, 740, 756
_SCORE_HEIGHT, _ERROR_HEIGHT, _PANEL_GAP, _TOP = 200, 130, 58, 30
_MARKERS_UP_TO = 80  # pairs: draw a marker on every point (1 pair would be invisible as a line)
_HOVER_STRIPS = 400  # at most this many hover strips (each with a tooltip) across the plot


def _esc(text: object) -> str:
    """``text`` escaped for HTML and XML text or a quoted attribute."""
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    """A coordinate for SVG: 2 decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


# -- images -----------------------------------------------------------------------------------------------------------


def _rgb(image: torch.Tensor) -> np.ndarray:
    """``(3, h, w)`` float in [0, 1] -> ``(h, w, 3)`` uint8."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """``(h, w)`` values in [0, 1] (clipped; NaN counts as 0) -> ``(h, w, 3)`` uint8 through :data:`HEAT_ANCHORS`."""
    values = np.nan_to_num(np.clip(np.asarray(heat, dtype=np.float64), 0, 1))
    stops = np.linspace(0, 1, len(HEAT_ANCHORS))
    channels = [np.interp(values, stops, HEAT_ANCHORS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def _resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w, ...)`` -> ``(*size, ...)`` by nearest neighbour (pixel centres)."""
    rows = np.minimum((np.arange(size[0]) + 0.5) * image.shape[0] / size[0], image.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * image.shape[1] / size[1], image.shape[1] - 1).astype(int)
    return image[rows][:, cols]


def _heat_rgb(view: PairView) -> np.ndarray:
    """The coloured ``(h, w, 3)`` uint8 heat map of ``view``, at the size of its frames ``(n, 3, h, w)``."""
    heat = view.heat.detach().float().cpu().numpy()
    return _resize_nearest(heat_colours(heat), tuple(view.frames.shape[-2:]))


def _data_uri(rgb: np.ndarray) -> str:
    """``(h, w, 3)`` uint8 -> a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(np.ascontiguousarray(rgb))).decode("ascii")


def colour_bar(gradient_id: str, width: int = 400) -> str:
    """An SVG colour bar of :data:`HEAT_ANCHORS` labelled 0 (consistent) to 1 (inconsistent); ``gradient_id`` must
    be unique in the page."""
    stops = "".join(
        f'<stop offset="{i / (len(HEAT_ANCHORS) - 1):.4f}" stop-color="rgb({r:.0f},{g:.0f},{b:.0f})"/>'
        for i, (r, g, b) in enumerate(HEAT_ANCHORS)
    )
    x0, x1 = 84, width - 96
    ticks = "".join(
        f'<line x1="{_num(x0 + v * (x1 - x0))}" y1="16" x2="{_num(x0 + v * (x1 - x0))}" y2="20" stroke="#444"/>'
        f'<text x="{_num(x0 + v * (x1 - x0))}" y="31" text-anchor="middle">{v:g}</text>'
        for v in (0, 0.25, 0.5, 0.75, 1)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="colour-bar" width="{width}" height="36" '
        f'viewBox="0 0 {width} 36" font-family="sans-serif" font-size="11" role="img" '
        'aria-label="inconsistency colour scale from 0 (consistent) to 1 (inconsistent)">'
        f'<defs><linearGradient id="{_esc(gradient_id)}" x1="0" y1="0" x2="1" y2="0">{stops}</linearGradient></defs>'
        f'<rect x="{x0}" y="4" width="{x1 - x0}" height="12" fill="url(#{_esc(gradient_id)})" stroke="#444"/>'
        f'{ticks}<text x="{x0 - 6}" y="14" text-anchor="end">consistent</text>'
        f'<text x="{x1 + 6}" y="14">inconsistent</text></svg>'
    )


# -- the per-pair plot ------------------------------------------------------------------------------------------------


def _decimals(step: float) -> int:
    """Decimals that print every multiple of ``step`` exactly (at most 6)."""
    for decimals in range(7):
        if abs(step * 10**decimals - round(step * 10**decimals)) < 1e-6:
            return decimals
    return 6


def _nice_step(raw: float, mantissas: tuple[float, ...] = (1, 2, 2.5, 5)) -> float:
    """The smallest ``m * 10**k`` (``m`` in ``mantissas``) that is at least ``raw`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next((m * power for m in mantissas if m * power >= raw * (1 - 1e-9)), 10 * power)


def _value_ticks(values: list[float]) -> list[float]:
    """3 to 6 ticks ``0, s, 2s, ..., top`` of an axis ``[0, top]`` that holds the finite ``values`` (>= 0)."""
    finite = [v for v in values if math.isfinite(v)]
    high = max(finite, default=0.0) or 0.01
    step = _nice_step(high / 4)
    return [i * step for i in range(max(1, math.ceil(high / step - 1e-9)) + 1)]


def _pair_ticks(num_pairs: int) -> list[int]:
    """Integer x ticks ``0, s, 2s, ...`` over pairs ``0 .. num_pairs - 1`` (at most about 9)."""
    step = max(1, int(_nice_step(max(num_pairs - 1, 1) / 8, (1, 2, 5))))
    return list(range(0, num_pairs, step))


def _linear(lo: float, hi: float, a: float, b: float) -> Callable[[float], float]:
    """The map from ``[lo, hi]`` onto ``[a, b]``."""
    return lambda value: a + (value - lo) * (b - a) / (hi - lo)


def series_groups(pairs: list[dict[str, float]], keys: list[str]) -> list[tuple[list[str], np.ndarray]]:
    """The series of ``keys`` as ``(names, (num_pairs,) values)``, identical series merged into one group (drawn
    once, e.g. ``consistency`` = ``fidelity`` with a source, = ``walk_back`` without one)."""
    groups: list[tuple[list[str], np.ndarray]] = []
    for key in keys:
        values = np.array([p.get(key, math.nan) for p in pairs], dtype=np.float64)
        match = next((g for g in groups if np.array_equal(g[1], values, equal_nan=True)), None)
        if match is not None:
            match[0].append(key)
        else:
            groups.append(([key], values))
    return groups


def _style(names: list[str], fallback: int) -> tuple[str, str, float]:
    """(colour, dash pattern, width) of a group: its first known key's, else fallback number ``fallback``."""
    known = next((SERIES_STYLES[n] for n in names if n in SERIES_STYLES), None)
    return known or _FALLBACK_STYLES[fallback % len(_FALLBACK_STYLES)]


def decimate(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the finite points of ``values`` ``(n,)``; past ``max_points`` the minimum and the maximum of
    each of ``max_points // 2`` equal runs, in order, so that no dip or spike is lost."""
    index = np.flatnonzero(np.isfinite(values))
    if len(index) <= max_points:
        return index.astype(np.float64), values[index]
    keep = []
    for run in np.array_split(index, max_points // 2):
        low, high = run[np.argmin(values[run])], run[np.argmax(values[run])]
        keep.extend(sorted({low, high}))
    keep = np.array(keep)
    return keep.astype(np.float64), values[keep]


def _series(names, values, style, to_x, to_y, markers: bool) -> str:
    """One drawn series: a polyline (and a marker per point) in a ``<g class="series">``."""
    colour, dash, width = style
    xs, ys = decimate(values, 2 * (_RIGHT - _LEFT))
    points = " ".join(f"{_num(to_x(x))},{_num(to_y(y))}" for x, y in zip(xs, ys, strict=True))
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    parts = [f'<g class="series" data-keys="{_esc(" ".join(names))}">']
    if len(xs) > 1:
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}"{dash_attr} '
            'stroke-linejoin="round"/>'
        )
    if markers or len(xs) == 1:
        parts.extend(
            f'<circle cx="{_num(to_x(x))}" cy="{_num(to_y(y))}" r="{_num(width / 2 + 1.5)}" fill="{colour}"/>'
            for x, y in zip(xs, ys, strict=True)
        )
    parts.append("</g>")
    return "".join(parts)


def _legend(groups, styles, top: float) -> str:
    """The legend of a panel, right of its plot area: a line sample in each group's style and its names."""
    rows = []
    for row, ((names, _), (colour, dash, width)) in enumerate(zip(groups, styles, strict=True)):
        y = top + 12 + 20 * row
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        rows.append(
            f'<line x1="{_LEGEND_X}" y1="{y}" x2="{_LEGEND_X + 30}" y2="{y}" stroke="{colour}" '
            f'stroke-width="{width}"{dash_attr}/>'
            f'<text x="{_LEGEND_X + 36}" y="{y + 4}">{_esc(" = ".join(names))}</text>'
        )
    return f'<g class="legend">{"".join(rows)}</g>'


def _worst_bands(marked: list[int], num_pairs: int, top: float, bottom: float) -> str:
    """Light bands behind the series of a panel at the ``marked`` (worst) pairs, at least 2 units wide."""
    to_x = _linear(-0.5, num_pairs - 0.5, _LEFT, _RIGHT)
    width = max(2.0, to_x(1) - to_x(0))
    bands = "".join(
        f'<rect x="{_num(to_x(t) - width / 2)}" y="{top}" width="{_num(width)}" height="{bottom - top}"/>'
        for t in marked
        if 0 <= t < num_pairs
    )
    return f'<g class="worst-bands" fill="#D55E00" fill-opacity="0.1">{bands}</g>'


def _panel(name: str, title: str, groups, ticks: list[float], top: float, height: float, marked: list[int]) -> str:
    """One panel ``<g class="panel" data-panel=name>``: frame, grid, its own y axis over ``[0, ticks[-1]]``, x
    ticks, the series of ``groups`` (``(num_pairs,)`` each), their legend and bands at the ``marked`` pairs."""
    num_pairs = len(groups[0][1])
    bottom = top + height
    to_x = _linear(-0.5, num_pairs - 0.5, _LEFT, _RIGHT)
    to_y = _linear(0, ticks[-1], bottom, top)
    decimals = _decimals(ticks[1] - ticks[0]) if len(ticks) > 1 else 2
    y_axis = "".join(
        f'<line x1="{_LEFT}" y1="{_num(to_y(v))}" x2="{_RIGHT}" y2="{_num(to_y(v))}" stroke="#e4e4e4"/>'
        f'<text class="tick" x="{_LEFT - 6}" y="{_num(to_y(v) + 4)}" text-anchor="end">{v:.{decimals}f}</text>'
        for v in ticks
    )
    x_axis = "".join(
        f'<line x1="{_num(to_x(t))}" y1="{bottom}" x2="{_num(to_x(t))}" y2="{bottom + 4}" stroke="#444"/>'
        f'<text class="tick" x="{_num(to_x(t))}" y="{bottom + 16}" text-anchor="middle">{t}</text>'
        for t in _pair_ticks(num_pairs)
    )
    styles = [_style(names, i) for i, (names, _) in enumerate(groups)]
    order = sorted(range(len(groups)), key=lambda i: -styles[i][2])  # widest first, thinner lines on top
    series = "".join(
        _series(groups[i][0], groups[i][1], styles[i], to_x, to_y, num_pairs <= _MARKERS_UP_TO) for i in order
    )
    return (
        f'<g class="panel" data-panel="{_esc(name)}">'
        f'<text class="panel-title" x="{_LEFT}" y="{top - 9}" font-weight="bold">{_esc(title)}</text>'
        f'{_worst_bands(marked, num_pairs, top, bottom)}<g class="y-axis">{y_axis}</g><g class="x-axis">{x_axis}</g>'
        f"{series}"
        f'<rect x="{_LEFT}" y="{top}" width="{_RIGHT - _LEFT}" height="{height}" fill="none" stroke="#444"/>'
        f"{_legend(groups, styles, top)}</g>"
    )


def _hover_text(pairs: list[dict[str, float]], start: int, stop: int) -> str:
    """Tooltip of pairs ``start .. stop - 1``: every score (its range over several pairs)."""
    if stop - start == 1:
        lines = [f"pair {start} (frames {start} \u2192 {start + 1})"]
        lines += [f"{k}: {v:.4f}" for k, v in pairs[start].items()]
    else:
        lines = [f"pairs {start}\u2013{stop - 1} (frames {start} \u2192 {stop}), min \u2013 max"]
        for key in pairs[start]:
            values = [p[key] for p in pairs[start:stop]]
            lines.append(f"{key}: {min(values):.4f} \u2013 {max(values):.4f}")
    return "\n".join(lines)


def _hover_strips(pairs: list[dict[str, float]], top: float, bottom: float) -> str:
    """Transparent full-height strips, one per pair (or per run of pairs past :data:`_HOVER_STRIPS`), each with a
    ``<title>`` tooltip of its scores."""
    to_x = _linear(-0.5, len(pairs) - 0.5, _LEFT, _RIGHT)
    edges = np.linspace(0, len(pairs), min(len(pairs), _HOVER_STRIPS) + 1).round().astype(int)
    strips = "".join(
        f'<rect x="{_num(to_x(a - 0.5))}" y="{top}" width="{_num(to_x(b - 0.5) - to_x(a - 0.5))}" '
        f'height="{bottom - top}"><title>{_esc(_hover_text(pairs, a, b))}</title></rect>'
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    )
    return f'<g class="hover" fill="#000" fill-opacity="0" pointer-events="all">{strips}</g>'


def plot_svg(pairs: list[dict[str, float]], worst: list[PairView] | None = None) -> str:
    """The per-pair plot as an inline ``<svg>``: the scores (higher is better, [0, 1]) in one panel, the errors
    (keys ending in ``_error``, lower is better) in a second panel below with its own scale, a legend beside each;
    ``worst`` pairs shaded; hovering a pair shows all its scores."""
    if not pairs:
        raise ValueError("`pairs` is empty; there is nothing to plot.")
    keys = list(pairs[0])
    scores = series_groups(pairs, [k for k in keys if not k.endswith("_error")])
    errors = series_groups(pairs, [k for k in keys if k.endswith("_error")])
    marked, bottom = [v.index for v in worst or []], _TOP + _SCORE_HEIGHT
    ticks = [i / 5 for i in range(6)]
    panels = [_panel("scores", "scores (higher is better)", scores, ticks, _TOP, _SCORE_HEIGHT, marked)]
    if errors:
        error_top = bottom + _PANEL_GAP
        ticks = _value_ticks([float(v) for _, values in errors for v in values])
        panels.append(_panel("errors", "errors (lower is better)", errors, ticks, error_top, _ERROR_HEIGHT, marked))
        bottom = error_top + _ERROR_HEIGHT
    height = bottom + 42
    axis_label = (
        f'<text class="axis-label" x="{(_LEFT + _RIGHT) / 2}" y="{bottom + 34}" text-anchor="middle">'
        "frame pair t (frames t \u2192 t+1)</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" '
        f'height="{height}" font-family="sans-serif" font-size="12" role="img">'
        f"<title>Scores per frame pair ({len(pairs)} pairs)</title>"
        f"{''.join(panels)}{axis_label}"
        f"{_hover_strips(pairs, _TOP, bottom)}</svg>"
    )


# -- page sections ----------------------------------------------------------------------------------------------------


def _overall_table(out: ScoreOutput) -> str:
    """The overall scores as an HTML table with the direction of each."""
    rows = "".join(
        f"<tr><td>{_esc(k)}</td><td>{v:.4f}</td>"
        f"<td>{'lower is better' if k.endswith('_error') else 'higher is better'}</td></tr>"
        for k, v in out.overall.items()
    )
    return f'<table class="overall"><tr><th>score</th><th>mean over pairs</th><th></th></tr>{rows}</table>'


def _worst_pair(rank: int, view: PairView, pair: dict[str, float] | None) -> str:
    """One worst pair: frame t, frame t+1 and the heat map side by side, with its scores."""
    t = view.index
    images = [(_rgb(view.frames[0]), f"frame {t}"), (_rgb(view.frames[-1]), f"frame {t + 1}")]
    images.append((_heat_rgb(view), f"inconsistency {t} \u2192 {t + 1}"))
    figures = "".join(
        f'<figure><img alt="{_esc(label)}" src="{_data_uri(image)}"><figcaption>{_esc(label)}</figcaption></figure>'
        for image, label in images
    )
    consistency = pair["consistency"] if pair else view.score
    scores = ", ".join(f"{k} {v:.4f}" for k, v in (pair or {}).items() if k != "consistency")
    return (
        f'<div class="worst-pair" id="pair-{t}"><p class="caption"><b>#{rank}: pair {t} (frames {t} \u2192 {t + 1})'
        f"</b>, consistency {consistency:.4f}{'; ' + _esc(scores) if scores else ''}</p>"
        f'<div class="row">{figures}</div></div>'
    )


def _worst_section(out: ScoreOutput) -> str:
    """Heading with the count, colour bar and every pair of ``out.worst`` (lowest consistency first)."""
    count = len(out.worst)
    heading = f'<h2 id="worst">Worst frame pairs: {count} of {len(out.pairs)}</h2>'
    if not count:
        return heading + "<p>No thumbnails were kept for this run (scoring ran with <code>num_worst=0</code>).</p>"
    rows = "".join(
        _worst_pair(rank, v, out.pairs[v.index] if 0 <= v.index < len(out.pairs) else None)
        for rank, v in enumerate(out.worst, start=1)
    )
    return (
        f"{heading}<p>The {count} pairs with the lowest consistency, lowest first: frame t, frame t+1 and where the "
        f"edit is inconsistent between them.</p>{colour_bar('worst-colours')}{rows}"
    )


def _animation_style(count: int) -> str:
    """CSS of the heat-map animation: each of ``count`` stacked frames visible for :data:`FRAME_SECONDS` in turn
    (paused on hover, still under reduced motion)."""
    return (
        f".anim .anim-frame{{visibility:hidden;animation:anim-cycle {count * FRAME_SECONDS:.3f}s step-end infinite}}"
        f"@keyframes anim-cycle{{0%{{visibility:visible}}{100 / count:.4f}%{{visibility:hidden}}}}"
        ".anim:hover .anim-frame{animation-play-state:paused}"
        "@media (prefers-reduced-motion:reduce){.anim .anim-frame{animation:none}"
        ".anim .anim-frame:first-of-type{visibility:visible}}"
    )


def _animation_section(preview: list[PairView]) -> str:
    """Each preview frame t beside the heat map of pair t -> t+1: an animated SVG (the frames stacked, shown in
    turn by CSS; where CSS is not applied, the first frame alone) and a static strip that reuses the same embedded
    images through ``<use>``."""
    if not preview:
        return ""
    tiles = [np.concatenate([_rgb(v.frames[0]), _heat_rgb(v)], axis=1) for v in preview]
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    images = "".join(
        f'<image id="anim-{i}" width="{t.shape[1]}" height="{t.shape[0]}" href="{_data_uri(t)}"/>'
        for i, t in enumerate(tiles)
    )
    frames = "".join(
        f'<g class="anim-frame" visibility="{"hidden" if i else "visible"}" '
        f'style="animation-delay:{i * FRAME_SECONDS:.3f}s"><use href="#anim-{i}"/>'
        f'<text x="4" y="{h + 15}">frame {v.index} (pair {v.index} \u2192 {v.index + 1})</text></g>'
        for i, v in enumerate(preview)
    )
    scale, gap = 0.5, 6
    strip = "".join(
        f'<g transform="translate({i * (w * scale + gap):.1f} 0)"><use href="#anim-{i}" transform="scale({scale})"/>'
        f'<text x="2" y="{h * scale + 13:.1f}">{v.index}</text></g>'
        for i, v in enumerate(preview)
    )
    strip_width = len(preview) * (w * scale + gap)
    svg = 'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12"'
    return (
        f"<h2>Inconsistency over the clip: {len(preview)} frames</h2>"
        "<p>Frame t beside the heat map of pair t \u2192 t+1, at "
        f"{1 / FRAME_SECONDS:g} frames per second (hover to pause); below, the same frames as a static strip.</p>"
        f"{colour_bar('anim-colours')}"
        f'<svg {svg} class="anim" width="{w}" height="{h + 20}" viewBox="0 0 {w} {h + 20}" role="img">'
        f"<title>inconsistency over the clip</title><defs>{images}</defs>{frames}</svg>"
        f'<div class="strip"><svg {svg} width="{strip_width:.0f}" height="{h * scale + 18:.0f}" '
        f'viewBox="0 0 {strip_width:.0f} {h * scale + 18:.0f}">{strip}</svg></div>'
    )


_PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#111}td,th{padding:2px 12px;"
    "text-align:left}svg.plot,svg.anim{max-width:100%;height:auto}.hover rect:hover{fill-opacity:.08}"
    ".worst-pair{margin:0 0 1.2em 0}.row{display:flex;gap:8px;flex-wrap:wrap}.row figure{margin:0}"
    ".row img{display:block;max-width:100%}figcaption{font-size:.85em;color:#444}.caption{margin:.3em 0}"
    ".strip{overflow-x:auto;max-width:100%}"
)


def render_report(body: dict, out: ScoreOutput) -> str:
    """The report page as an HTML string (``body`` is the JSON of :func:`walkreg.scoring.score_clip`'s run)."""
    title = _esc(f"walkreg score: {body.get('edited', '')}")
    consistency = "fidelity" if out.has_source else "walk_back"
    animation = _animation_style(len(out.preview)) if out.preview else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{_PAGE_STYLE}{animation}</style></head>
<body><h1>{title}</h1>
<p>Source: {_esc(body.get("source"))}; encoder: {_esc(body.get("encoder"))}; {out.num_frames} frames,
{len(out.pairs)} frame pairs. Scores are in [0, 1], higher is more consistent; errors: lower is better.
<code>consistency</code> is <code>{consistency}</code> here. The heat maps show 1 - exp(-error / colour_scale) per
8x8 cell (with a source) or the mass of the walk t \u2192 t+1 \u2192 t that does not come home (without one).</p>
{_overall_table(out)}
<h2>Per frame pair</h2>
<p>Identical series are drawn once and named together in the legend; shaded: the worst pairs; hover a pair to read
its scores.</p>
{plot_svg(out.pairs, out.worst)}
{_worst_section(out)}
{_animation_section(out.preview)}
</body></html>
"""


def write_report(path: str | os.PathLike, body: dict, out: ScoreOutput) -> None:
    """Render the report and write it atomically."""
    write_text_atomic(path, render_report(body, out))
