"""Correspondence accuracy against known motion: stride-8 transitions from frame t to t+1 (and t+4) scored against
ground-truth flow, for several encoders side by side with a no-motion, an optical-flow and an ideal-cell baseline.

Cells are the 8x8 blocks of frame t (row-major over ``ceil(H/8) x ceil(W/8)``; a cell's centre is pixel
``(8 * column + 3.5, 8 * row + 3.5)``). A cell is scored when its whole block lies inside the frame, every one of its
64 pixels is visible in the next frame (per the data's visibility mask) and its ground-truth target, the cell centre
plus the mean ground-truth flow over the block, lies inside the next frame (``-0.5 <= x <= W - 0.5``, same for y).

Each method gives every cell an argmax target cell and a soft target point; per scored cell:

- argmax end-point error: pixels from the argmax target cell's centre to the ground-truth target;
- soft end-point error: pixels from the soft target to the ground-truth target;
- "<=8px": the end-point error is at most 8 pixels;
- "cell": the cell hit rate: the argmax cell (for the soft target: the cell whose block contains the soft point,
  clamped to the grid) is the cell whose block contains the ground-truth target.

Methods: encoders (``--encoders``: any names of :func:`walkreg.create_features` or encoder directories) walk
radius/top-k transitions (:class:`walkreg.walks.WalkConfig`); their argmax target is the most probable cell (paths
ending on the same cell merged) and their soft target the probability-weighted mean of target cell centres. The
4-step walk ``t -> t+4`` composes four transitions exactly (:func:`walkreg.walks.compose`, every path kept).
``zero`` stays in the same cell. ``dis`` is OpenCV DIS flow (medium preset) at full resolution averaged over each
block: its soft target is the centre plus that mean flow and its argmax the cell containing that point; for 4 steps
the per-pixel DIS flows are chained with :func:`walkreg.synthetic.compose_flow`. ``cell-rounded GT`` takes the cell
containing the ground-truth target for both targets: the best any whole-cell argmax can do.

Data sets (every figure pools all scored cells of a set):

- ``real``: ground-truth flow pairs from the shared data (``flow/``): MPI-Sintel alley_2 frame 2 -> 3 (1024x436;
  visible = not occluded and not invalid) and FlyingChairs 00009 (512x384; no occlusion mask ships with it, so a
  forward-splatting check stands in: a pixel is visible when it lands inside the frame and its flow agrees within 1
  pixel with the flow of the pixel that best explains, by photometric residual, the pixel it lands on), each at
  native size, 3/4 and 1/2 (frames resized with antialiasing, flow and visibility area-averaged, flow scaled, a
  pixel visible when all pixels under it were): 6 views, 1 step each. Skipped, with a note, without shared data.
- ``synthetic``: a fixed held-out set rendered by :func:`walkreg.synthetic.synthetic_sequence` from images no
  training recipe uses (``bench/synthetic_motion.py``'s ``source_images()``, the repository's fixtures without the
  shared data): ``--sequences`` sequences (6) of ``--frames`` frames (6) at ``--size`` (240x427), seeds 1000 + i,
  3 objects moving up to ``--max-speed`` pixels per frame (16; the camera pans up to half of it), camera roll up to
  1.5 degrees per frame, lighting 0.5, blur up to 1 pixel; 1 and ``--steps`` (4) steps from every start frame that
  allows them.

Prints :func:`machine.describe` first, then one table per data set and horizon (rows = methods) and a per-view
table of the real pairs; ``--json`` stores every figure, per set, per horizon, per method and per view. Usage:

    OMP_NUM_THREADS=1 python bench/correspondence.py --json runs/correspondence.json
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import describe
from synthetic_motion import SHARED, source_images

from walkreg.cells import STRIDE, cell_means
from walkreg.features import create_features
from walkreg.flow import dis_flow, warp
from walkreg.progress import progress
from walkreg.synthetic import compose_flow, synthetic_sequence
from walkreg.video import read_image
from walkreg.walks import SparseTransitions, WalkConfig, compose


DEFAULT_ENCODERS = ("default", "random-resnet18", "random-resnet18-small", "lab")
REAL_SCALES = (1.0, 0.75, 0.5)
FLO_TAG = 202021.25
COMPOSE_ROWS = 256  # rows of a multi-step walk composed at a time (bounds memory: rows * top_k ** steps entries)
METRICS = ("mean", "median", "within_8px", "cell")


# --- data -------------------------------------------------------------------------------------------------------


@dataclass
class View:
    """One clip with known motion.

    Attributes:
        name: label in tables and JSON.
        frames: ``(T, 3, H, W)`` float RGB in [0, 1].
        flow: ``(T-1, 2, H, W)`` ground-truth flow ``t -> t+1``, ``(dx, dy)`` in pixels.
        visible: ``(T-1, H, W)`` bool, the pixels of frame ``t`` whose point is visible in frame ``t+1``.
    """

    name: str
    frames: torch.Tensor
    flow: torch.Tensor
    visible: torch.Tensor


def read_flo(path: Path) -> torch.Tensor:
    """A Middlebury ``.flo`` file -> ``(2, H, W)`` float32 flow ``(u, v)``."""
    with open(path, "rb") as file:
        tag = np.fromfile(file, np.float32, 1)
        width, height = np.fromfile(file, np.int32, 2)
        data = np.fromfile(file, np.float32, int(width) * int(height) * 2)
    if tag.size != 1 or tag[0] != FLO_TAG or data.size != width * height * 2:
        raise ValueError(f"{str(path)!r} is not a Middlebury .flo file (tag {tag}, size {width}x{height}).")
    return torch.from_numpy(data.reshape(height, width, 2)).permute(2, 0, 1).contiguous()


def read_mask(path: Path) -> torch.Tensor:
    """A black/white PNG -> ``(H, W)`` bool, true where it is white."""
    return read_image(path).mean(0) > 0.5


def splat_visibility(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor, tolerance: float = 1.0):
    """``(H, W)`` bool visibility of a flow without an occlusion mask, by forward splatting.

    Every pixel of ``first`` ``(3, H, W)`` lands on the nearest pixel of ``second`` along ``flow`` ``(2, H, W)``; of
    the pixels landing on the same one, the one with the smallest photometric residual (mean absolute RGB difference
    along the flow) is taken as seen there. A pixel is visible when it lands inside the frame and its flow is within
    ``tolerance`` pixels of the flow of the pixel seen where it lands (itself, or another point of the same surface).
    """
    height, width = flow.shape[-2:]
    residual = (warp(second, flow) - first).abs().mean(0).flatten()
    x = (flow[0] + torch.arange(width) + 0.5).floor().long()
    y = (flow[1] + torch.arange(height)[:, None] + 0.5).floor().long()
    inside = ((x >= 0) & (x < width) & (y >= 0) & (y < height)).flatten()
    landing = (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).flatten()
    residual = residual.masked_fill(~inside, math.inf)
    best = torch.full_like(residual, math.inf).scatter_reduce(0, landing, residual, "amin")
    seen = inside & (residual == best[landing])
    flat = flow.flatten(1)
    seen_flow = torch.zeros_like(flat)
    seen_flow[:, landing[seen]] = flat[:, seen]
    agrees = (flat - seen_flow[:, landing]).norm(dim=0) <= tolerance
    return (inside & agrees).view(height, width)


def resize_view(view: View, scale: float) -> View:
    """``view`` resized by ``scale``: frames with antialiased bilinear filtering, flow and visibility area-averaged
    (flow scaled per axis; a pixel visible when all the pixels under it were)."""
    if scale == 1:
        return view
    height, width = view.frames.shape[-2:]
    size = (round(height * scale), round(width * scale))
    frames = F.interpolate(view.frames, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    flow = F.interpolate(view.flow, size=size, mode="area")
    flow = flow * torch.tensor([size[1] / width, size[0] / height]).view(1, 2, 1, 1)
    visible = F.interpolate(view.visible[:, None].float(), size=size, mode="area")[:, 0] > 1 - 1e-6
    return View(f"{view.name} x{scale:g}", frames, flow, visible)


def sintel_view(root: Path) -> View:
    """MPI-Sintel alley_2 frame 2 -> 3, visible = not occluded and not invalid."""
    frames = torch.stack([read_image(root / f"clean/alley_2/frame_000{i}.png") for i in (2, 3)])
    flow = read_flo(root / "flow/alley_2/frame_0002.flo")
    hidden = read_mask(root / "occlusions/alley_2/frame_0002.png") | read_mask(root / "invalid/alley_2/frame_0002.png")
    return View("sintel alley_2", frames, flow[None], ~hidden[None])


def chairs_view(root: Path) -> View:
    """FlyingChairs 00009 img1 -> img2, visibility from :func:`splat_visibility`."""
    frames = torch.stack([read_image(root / f"00009_img{i}.png") for i in (1, 2)])
    flow = read_flo(root / "00009_flow.flo")
    return View("flyingchairs 00009", frames, flow[None], splat_visibility(frames[0], frames[1], flow)[None])


def real_views(shared: Path) -> list[View]:
    """The real ground-truth flow pairs at every scale of ``REAL_SCALES``."""
    pairs = [sintel_view(shared / "flow/sintel/training"), chairs_view(shared / "flow/flyingchairs")]
    return [resize_view(view, scale) for view in pairs for scale in REAL_SCALES]


def synthetic_views(sequences: int, frames: int, size: tuple[int, int], max_speed: float) -> list[View]:
    """The held-out synthetic set (see the module docstring)."""
    backgrounds, textures = source_images()
    views = []
    for i in range(sequences):
        background = backgrounds[i % len(backgrounds)]
        shifted = textures[i % len(textures) :] + textures[: i % len(textures)]
        clip = synthetic_sequence(
            read_image(background),
            [read_image(p) for p in shifted],
            num_frames=frames,
            size=size,
            num_objects=3,
            max_speed=max_speed,
            seed=1000 + i,
            rotation=1.5,
            lighting=0.5,
            blur=1.0,
        )
        views.append(View(f"synthetic-{i:02d} ({background.parent.name})", clip.frames, clip.flow, clip.visible))
    return views


def chained(flows: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flows ``(S, 2, H, W)`` and visibilities ``(S, H, W)`` of consecutive steps -> the ``(2, H, W)`` flow and
    ``(H, W)`` visibility of the whole walk (:func:`walkreg.synthetic.compose_flow`)."""
    flow, seen = flows[0], visible[0]
    for step_flow, step_seen in zip(flows[1:], visible[1:], strict=True):
        flow, seen = compose_flow(flow, seen, step_flow, step_seen)
    return flow, seen


# --- scoring ----------------------------------------------------------------------------------------------------


@dataclass
class CellTruth:
    """Ground truth of one frame pair on the cell grid (``N = h * w`` cells, row-major).

    Attributes:
        target: ``(N, 2)`` float, where each cell's block moves on average: centre + mean flow, ``(x, y)`` pixels.
        cell: ``(N,)`` long, the cell whose block contains ``target`` (clamped to the grid).
        scored: ``(N,)`` bool, the cells that count (see the module docstring).
        grid: ``(h, w)`` cells.
    """

    target: torch.Tensor
    cell: torch.Tensor
    scored: torch.Tensor
    grid: tuple[int, int]


@dataclass
class CellErrors:
    """Per scored cell: ``(M,)`` end-point errors in pixels and ``(M,)`` bool cell hits, argmax and soft."""

    argmax_error: torch.Tensor
    argmax_hit: torch.Tensor
    soft_error: torch.Tensor
    soft_hit: torch.Tensor

    @staticmethod
    def cat(parts: list[CellErrors]) -> CellErrors:
        return CellErrors(*(torch.cat([getattr(p, f) for p in parts]) for f in CellErrors.__dataclass_fields__))


def cell_centres(grid: tuple[int, int]) -> torch.Tensor:
    """``(N, 2)`` pixel coordinates ``(x, y)`` of the centres of a row-major ``(h, w)`` cell grid."""
    rows, columns = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    return torch.stack([columns, rows], dim=-1).flatten(0, 1).float() * STRIDE + (STRIDE - 1) / 2


def cell_of(points: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(N,)`` row-major index of the cell whose block contains each ``(x, y)`` point of ``(N, 2)``, clamped to the
    ``(h, w)`` grid (so a point off the grid gets the nearest cell)."""
    column = ((points[:, 0] + 0.5) / STRIDE).floor().long().clamp(0, grid[1] - 1)
    row = ((points[:, 1] + 0.5) / STRIDE).floor().long().clamp(0, grid[0] - 1)
    return row * grid[1] + column


def block_means(image: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` -> ``(N, C)``: the mean of every 8x8 block, zero-padded at the bottom and right
    (:func:`walkreg.cells.cell_means` in the row-major node layout)."""
    return cell_means(image.float(), "constant")[0].flatten(1).T


def cell_truth(flow: torch.Tensor, visible: torch.Tensor) -> CellTruth:
    """:class:`CellTruth` of a ``(2, H, W)`` ground-truth flow and its ``(H, W)`` bool visibility."""
    height, width = flow.shape[-2:]
    grid = (math.ceil(height / STRIDE), math.ceil(width / STRIDE))
    target = cell_centres(grid) + block_means(flow)
    whole = block_means(visible[None])[:, 0] == 1  # the zero padding fails partial blocks too
    inside = (target >= -0.5).all(1) & (target[:, 0] <= width - 0.5) & (target[:, 1] <= height - 0.5)
    return CellTruth(target, cell_of(target, grid), whole & inside, grid)


def score_targets(argmax: torch.Tensor, soft: torch.Tensor, truth: CellTruth) -> CellErrors:
    """Errors of ``(N,)`` argmax target cells and ``(N, 2)`` soft target points ``(x, y)`` on the scored cells."""
    keep = truth.scored
    goal = truth.target[keep]
    argmax_error = (cell_centres(truth.grid)[argmax[keep]] - goal).norm(dim=1)
    soft_error = (soft[keep] - goal).norm(dim=1)
    soft_cell = cell_of(soft[keep], truth.grid)
    return CellErrors(argmax_error, argmax[keep] == truth.cell[keep], soft_error, soft_cell == truth.cell[keep])


def merged_argmax(indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` target cells and weights (duplicates allowed) -> ``(N,)`` the cell with the most total weight."""
    indices, order = indices.sort(dim=1)
    weights = weights.gather(1, order)
    starts = torch.ones_like(indices, dtype=torch.bool)
    starts[:, 1:] = indices[:, 1:] != indices[:, :-1]
    segment = starts.long().cumsum(1) - 1
    totals = torch.zeros_like(weights).scatter_add_(1, segment, weights)
    cells = torch.zeros_like(indices).scatter_(1, segment, indices)
    return cells.gather(1, totals.argmax(1, keepdim=True))[:, 0]


def transition_targets(transitions: SparseTransitions, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-1 transitions ``(1, N, K)`` on a row-major ``(h, w)`` grid -> ``(N,)`` argmax cells (paths ending on the
    same cell merged) and ``(N, 2)`` probability-weighted mean target cell centres ``(x, y)``."""
    if transitions.indices.shape[0] != 1:
        raise ValueError(f"`transitions` must have batch size 1, but have {transitions.indices.shape[0]}.")
    indices, weights = transitions.indices[0], transitions.weights[0].float()
    centres = cell_centres(grid).to(weights.device)
    soft = (weights[..., None] * centres[indices]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-12)
    return merged_argmax(indices, weights).cpu(), soft.cpu()


def score_transitions(transitions: SparseTransitions, flow: torch.Tensor, visible: torch.Tensor) -> dict:
    """Score batch-1 cell transitions ``(1, N, K)`` from frame ``t`` (``N`` cells of its stride-8 grid) against the
    ground-truth flow ``(2, H, W)`` from ``t`` to the frame they reach and its ``(H, W)`` bool visibility:
    :func:`summarize` of the argmax and soft end-point errors on the scored cells (module docstring)."""
    truth = cell_truth(flow, visible)
    if transitions.indices.shape[1] != truth.grid[0] * truth.grid[1]:
        raise ValueError(
            f"`transitions` have {transitions.indices.shape[1]} rows but the flow's grid has {truth.grid} cells."
        )
    return summarize(score_targets(*transition_targets(transitions, truth.grid), truth))


def summarize(errors: CellErrors) -> dict:
    """``{"cells": M, "argmax": {...}, "soft": {...}}`` with mean and median end-point error (pixels) and the
    percentages of cells within 8 pixels and in the right cell."""

    def stats(error: torch.Tensor, hit: torch.Tensor) -> dict:
        if error.numel() == 0:
            return dict.fromkeys(METRICS, float("nan"))
        return {
            "mean": float(error.mean()),
            "median": float(error.median()),
            "within_8px": 100 * float((error <= 8).float().mean()),
            "cell": 100 * float(hit.float().mean()),
        }

    return {
        "cells": int(errors.argmax_error.numel()),
        "argmax": stats(errors.argmax_error, errors.argmax_hit),
        "soft": stats(errors.soft_error, errors.soft_hit),
    }


# --- methods ----------------------------------------------------------------------------------------------------


def walk_targets(steps: list[SparseTransitions], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the exact composition of batch-1 ``steps`` (:func:`walkreg.walks.compose`, every path kept),
    composed ``COMPOSE_ROWS`` start cells at a time."""
    first = steps[0]
    argmax, soft = [], []
    for start in range(0, first.indices.shape[1], COMPOSE_ROWS):
        rows = slice(start, start + COMPOSE_ROWS)
        walk = SparseTransitions(first.indices[:, rows], first.weights[:, rows], first.num_keys)
        for step in steps[1:]:
            walk = compose(walk, step)
        parts = transition_targets(walk, grid)
        argmax.append(parts[0])
        soft.append(parts[1])
    return torch.cat(argmax), torch.cat(soft)


def flow_targets(flow: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(2, H, W)`` flow averaged per block: ``(N,)`` the cell containing centre + mean flow, and ``(N, 2)`` that
    point."""
    soft = cell_centres(grid) + block_means(flow)
    return cell_of(soft, grid), soft


def encoder_errors(features, config: WalkConfig, view: View, horizons: list[int]) -> dict[int, CellErrors]:
    """Per horizon, the errors of walks on ``features`` over every start frame of ``view`` that allows it."""
    with torch.inference_mode():
        maps = list(features.iter_features(view.frames))
        steps = [config.step(a, b) for a, b in zip(maps[:-1], maps[1:], strict=True)]
    grid = tuple(maps[0].shape[-2:])
    errors = {}
    for horizon in horizons:
        parts = []
        for t in range(len(steps) - horizon + 1):
            truth = cell_truth(*chained(view.flow[t : t + horizon], view.visible[t : t + horizon]))
            parts.append(score_targets(*walk_targets(steps[t : t + horizon], grid), truth))
        errors[horizon] = CellErrors.cat(parts)
    return errors


def baseline_errors(view: View, horizons: list[int]) -> dict[str, dict[int, CellErrors]]:
    """Per baseline (``zero``, ``dis``, ``cell-rounded GT``) and horizon, the errors over every start frame."""
    dis = torch.stack([dis_flow(a, b) for a, b in zip(view.frames[:-1], view.frames[1:], strict=True)])
    everywhere = torch.ones_like(view.visible)
    out: dict[str, dict[int, CellErrors]] = {"zero": {}, "dis": {}, "cell-rounded GT": {}}
    for horizon in horizons:
        parts: dict[str, list[CellErrors]] = {name: [] for name in out}
        for t in range(len(view.flow) - horizon + 1):
            span = slice(t, t + horizon)
            truth = cell_truth(*chained(view.flow[span], view.visible[span]))
            own = torch.arange(truth.grid[0] * truth.grid[1])
            parts["zero"].append(score_targets(own, cell_centres(truth.grid), truth))
            parts["dis"].append(
                score_targets(*flow_targets(chained(dis[span], everywhere[span])[0], truth.grid), truth)
            )
            rounded = cell_centres(truth.grid)[truth.cell]
            parts["cell-rounded GT"].append(score_targets(truth.cell, rounded, truth))
        for name in out:
            out[name][horizon] = CellErrors.cat(parts[name])
    return out


def horizons_of(view: View, steps: int) -> list[int]:
    """1, and ``steps`` when the view is long enough."""
    return [1] + ([steps] if steps > 1 and len(view.flow) >= steps else [])


def run(features: dict[str, object], config: WalkConfig, sets: dict[str, list[View]], steps: int) -> dict:
    """Score the baselines and every feature extractor of ``features`` (by name) on every view of ``sets`` (by set
    name): ``{set: {"pooled": {horizon: {method: summary}}, "views": {view: {horizon: {method: summary}}}}}``."""
    errors: dict[str, dict[str, dict[int, dict[str, CellErrors]]]] = {}
    jobs = [(name, view) for name, views in sets.items() for view in views]
    bar = progress(total=len(jobs) * (len(features) + 1), desc="correspondence", unit="method")
    for name, view in jobs:
        per_view = errors.setdefault(name, {}).setdefault(view.name, {})
        for method, per_horizon in baseline_errors(view, horizons_of(view, steps)).items():
            for horizon, found in per_horizon.items():
                per_view.setdefault(horizon, {})[method] = found
        bar.update()
        for encoder, extractor in features.items():
            bar.set_postfix_str(f"{encoder} on {view.name}")
            found = encoder_errors(extractor, config, view, horizons_of(view, steps))
            for horizon, value in found.items():
                per_view[horizon][encoder] = value
            bar.update()
    bar.close()
    return {name: summarize_set(per_view) for name, per_view in errors.items()}


def summarize_set(per_view: dict[str, dict[int, dict[str, CellErrors]]]) -> dict:
    """Summaries per view and pooled over the views (all scored cells together)."""
    pooled: dict[int, dict[str, list[CellErrors]]] = {}
    for found in per_view.values():
        for horizon, methods in found.items():
            for method, value in methods.items():
                pooled.setdefault(horizon, {}).setdefault(method, []).append(value)
    return {
        "pooled": {h: {m: summarize(CellErrors.cat(v)) for m, v in methods.items()} for h, methods in pooled.items()},
        "views": {
            view: {h: {m: summarize(v) for m, v in methods.items()} for h, methods in found.items()}
            for view, found in per_view.items()
        },
    }


# --- output -----------------------------------------------------------------------------------------------------


def order_methods(summaries: dict[str, dict], encoders: list[str]) -> list[str]:
    """Encoders in the order given, then the baselines."""
    return [m for m in [*encoders, "zero", "dis", "cell-rounded GT"] if m in summaries]


def table(title: str, summaries: dict[str, dict], encoders: list[str]) -> str:
    """A Markdown table: one row per method, argmax then soft metrics (errors in pixels, rates in %)."""
    head = "| method | cells | argmax mean | median | <=8px % | cell % | soft mean | median | <=8px % | cell % |"
    lines = [f"\n{title}\n", head, "|" + "---|" * 10]
    for method in order_methods(summaries, encoders):
        found = summaries[method]
        values = [found[kind][metric] for kind in ("argmax", "soft") for metric in METRICS]
        text = [f"{v:.2f}" if i % 4 < 2 else f"{v:.1f}" for i, v in enumerate(values)]  # errors, then rates
        lines.append(f"| {method} | {found['cells']} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def view_table(title: str, views: dict[str, dict], horizon: int, encoders: list[str]) -> str:
    """A Markdown table of the argmax cell hit rate (%) and median end-point error per view."""
    names = list(views)
    methods = order_methods(views[names[0]][horizon], encoders)
    lines = [f"\n{title}\n", "| method | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for method in methods:
        row = [views[v][horizon][method]["argmax"] for v in names]
        lines.append(f"| {method} | " + " | ".join(f"{r['cell']:.1f}% / {r['median']:.2f}px" for r in row) + " |")
    return "\n".join(lines)


def report(results: dict, encoders: list[str]) -> str:
    """Every table of a run."""
    parts = []
    for name, found in results.items():
        for horizon, summaries in found["pooled"].items():
            steps = "1 step (t -> t+1)" if horizon == 1 else f"{horizon} steps composed (t -> t+{horizon})"
            views = len(found["views"])
            parts.append(table(f"{name}: {views} views, {steps}, cells pooled", summaries, encoders))
        if name == "real":
            parts.append(
                view_table("real pairs per view (argmax cell hit % / median px)", found["views"], 1, encoders)
            )
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="*", default=list(DEFAULT_ENCODERS), help="feature names or directories")
    parser.add_argument("--radius", type=float, default=12.0, help="transition radius, cells")
    parser.add_argument("--top-k", type=int, default=10, help="transitions kept per cell")
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=4, help="the long horizon: transitions composed")
    parser.add_argument("--sequences", type=int, default=6, help="synthetic sequences")
    parser.add_argument("--frames", type=int, default=6, help="frames per synthetic sequence")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 427), metavar=("H", "W"))
    parser.add_argument("--max-speed", type=float, default=16.0, help="synthetic object speed bound, pixels/frame")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    print(describe())
    config = WalkConfig(temperature=args.temperature, radius=args.radius, top_k=args.top_k)

    sets: dict[str, list[View]] = {}
    if SHARED.is_dir():
        sets["real"] = real_views(SHARED)
    else:
        print(f"note: no shared data at {SHARED}; the real ground-truth flow pairs are skipped.")
    sets["synthetic"] = synthetic_views(args.sequences, args.frames, tuple(args.size), args.max_speed)
    features = {encoder: create_features(encoder) for encoder in args.encoders}
    results = run(features, config, sets, args.steps)
    print(report(results, args.encoders))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": describe(),
            "config": {**vars(args), "json": str(args.json), "real_scales": REAL_SCALES},
            "results": results,
        }
        args.json.write_text(json.dumps(document, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
