"""Label and latent propagation along CRW correspondences (the paper's video label-propagation protocol).

Each target frame attends to a context: the first frame (unrestricted in space, the "long memory") and the
``num_context`` frames just before it, whose keys must lie strictly within ``radius`` feature cells of the query.
Before the clip starts, the short-term context is filled with copies of the first frame, as the official code
pads the sequence. For every query cell the ``top_k`` most similar context cells are chosen jointly over the
whole context, their similarities (cosine / ``temperature``) are soft-maxed, and the prediction is the weighted
sum of their values. Predictions are fed back as the values of later context frames.

Values may be one-hot or soft labels or latents with any number of channels. Frames stream through a generator,
so memory depends on the context length, never on the clip length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from walkreg.windows import LocalWindows


@dataclass
class PropagationConfig:
    """Hyper-parameters of :func:`propagate`; defaults are the paper's DAVIS protocol.

    Attributes:
        num_context: previous frames attended to besides the first frame (20 on DAVIS).
        top_k: neighbours kept per query cell, chosen jointly over the whole context (10).
        radius: short-term context keys must be strictly closer than this, in feature cells (12).
        temperature: softmax temperature on cosine similarities (0.05).
        restrict_first: also apply the radius to the first frame (the official code does not).
        implementation: ``"windowed"`` (tiled local windows, memory ~ N * window), ``"dense"`` (all pairs, masked;
            memory ~ N * N) or ``"auto"`` (dense only when a window would cover the whole grid anyway).
        max_tiles: query tiles processed together (bounds peak memory of the windowed implementation).
    """

    num_context: int = 20
    top_k: int = 10
    radius: float = 12.0
    temperature: float = 0.05
    restrict_first: bool = False
    implementation: str = "auto"
    max_tiles: int = 32

    def __post_init__(self):
        if self.num_context < 0:
            raise ValueError(f"`num_context` must be >= 0, but is {self.num_context}.")
        if self.top_k < 1:
            raise ValueError(f"`top_k` must be >= 1, but is {self.top_k}.")
        if not self.radius > 0:
            raise ValueError(f"`radius` must be > 0 feature cells, but is {self.radius}.")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0, but is {self.temperature}.")
        if self.implementation not in ("auto", "windowed", "dense"):
            raise ValueError(f"`implementation` must be 'auto', 'windowed' or 'dense', but is {self.implementation!r}.")
        if self.max_tiles < 1:
            raise ValueError(f"`max_tiles` must be >= 1, but is {self.max_tiles}.")


def _merge_top_k(best: tuple | None, values: torch.Tensor, labels: torch.Tensor, k: int) -> tuple:
    """Keep the ``k`` best of the running candidates and new ones: values ``(..., q, k')``, labels ``(L, ..., q, k')``."""
    if best is not None:
        values = torch.cat([best[0], values], dim=-1)
        labels = torch.cat([best[1], labels], dim=-1)
    if values.shape[-1] > k:
        values, order = values.topk(k, dim=-1)
        labels = labels.gather(-1, order.unsqueeze(0).expand(labels.shape[0], *order.shape))
    return values, labels


def _gather_values(padded_values: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """``(B, L, N + 1)`` values at cell indices ``(B, *rest)`` -> ``(L, B, *rest)``."""
    b = cells.shape[0]
    flat = padded_values.gather(2, cells.reshape(b, 1, -1).expand(-1, padded_values.shape[1], -1))
    return flat.view(b, padded_values.shape[1], *cells.shape[1:]).transpose(0, 1)


class _Context:
    """One context frame: padded features ``(B, C, N + 1)``, padded values ``(B, L, N + 1)``, radius flag."""

    def __init__(self, features: torch.Tensor, values: torch.Tensor, restricted: bool):
        self.features = LocalWindows.pad(features)
        self.values = LocalWindows.pad(values)
        self.restricted = restricted


def _predict_windowed(query: torch.Tensor, context: list[_Context], windows: LocalWindows, cfg: PropagationConfig) -> torch.Tensor:
    """Tiled prediction: ``(B, C, h, w)`` query -> ``(B, L, N)``; no ``N x N`` tensor for restricted frames."""
    padded_query = LocalWindows.pad(query)
    b, n = query.shape[0], windows.num_cells
    out = []
    for tiles in windows.tile_chunks(cfg.max_tiles):
        queries = windows.queries(padded_query, tiles)  # (B, C, tiles, S)
        best = None
        for ctx in context:
            if ctx.restricted:
                sims = windows.window_similarities(queries, ctx.features, tiles)  # (B, tiles, S, W)
                values, slots = sims.topk(min(cfg.top_k, sims.shape[-1]), dim=-1)
                cells = windows.key_cells(slots, tiles)
            else:
                sims = torch.einsum("bcts,bcn->btsn", queries, ctx.features[:, :, :n])
                values, cells = sims.topk(min(cfg.top_k, n), dim=-1)
            best = _merge_top_k(best, values, _gather_values(ctx.values, cells), cfg.top_k)
        weights = F.softmax(best[0] / cfg.temperature, dim=-1)  # (B, tiles, S, k)
        out.append((best[1] * weights).sum(-1))  # (L, B, tiles, S)
    return windows.to_cells(torch.cat(out, dim=2).permute(1, 2, 3, 0)).permute(0, 2, 1)  # (B, L, N)


def _predict_dense(query: torch.Tensor, context: list[_Context], distances: torch.Tensor, cfg: PropagationConfig) -> torch.Tensor:
    """All-pairs prediction: ``(B, C, h, w)`` query -> ``(B, L, N)``; builds the masked ``N x N`` affinities."""
    n = distances.shape[0]
    q = query.flatten(2)
    best = None
    for ctx in context:
        sims = torch.einsum("bcn,bcm->bnm", q, ctx.features[:, :, :n])
        if ctx.restricted:
            sims = sims.masked_fill(distances >= cfg.radius, float("-inf"))
        values, cells = sims.topk(min(cfg.top_k, n), dim=-1)
        best = _merge_top_k(best, values, _gather_values(ctx.values, cells), cfg.top_k)
    weights = F.softmax(best[0] / cfg.temperature, dim=-1)
    return (best[1] * weights).sum(-1).transpose(0, 1)  # (B, L, N)


def propagate(
    features: Iterable[torch.Tensor],
    first_values: torch.Tensor,
    config: PropagationConfig | None = None,
    **overrides,
) -> Iterator[torch.Tensor]:
    """Propagate values from the first frame through a clip, one frame at a time.

    Args:
        features: iterable of per-frame L2-normalised features, each ``(B, C, h, w)``, starting with frame 0.
        first_values: ``(B, L, h, w)`` values of frame 0 on the feature grid (one-hot, soft labels or latents).
        config: :class:`PropagationConfig`; keyword ``overrides`` replace its fields.

    Yields:
        ``(B, L, h, w)`` values for every frame, frame 0 first (its given values).
    """
    cfg = PropagationConfig(**{**(config.__dict__ if config else {}), **overrides})
    frames = iter(features)
    first = next(frames, None)
    if first is None:
        raise ValueError("`features` is empty; it needs at least the first frame.")
    if first.ndim != 4 or first_values.ndim != 4 or first.shape[0] != first_values.shape[0] or first.shape[-2:] != first_values.shape[-2:]:
        raise ValueError(
            "`first_values` must have shape (B, L, h, w) matching features (B, C, h, w), but got "
            f"{tuple(first_values.shape)} and {tuple(first.shape)}."
        )
    first_values = first_values.to(first.dtype)
    h, w = first.shape[-2:]
    windows = LocalWindows(h, w, cfg.radius, device=first.device)
    dense = cfg.implementation == "dense" or (cfg.implementation == "auto" and windows.window_size >= windows.num_cells)
    if dense:
        ys, xs = torch.meshgrid(torch.arange(h, device=first.device), torch.arange(w, device=first.device), indexing="ij")
        coords = torch.stack([ys.flatten(), xs.flatten()], dim=1).to(first.dtype)
        distances = torch.cdist(coords, coords)

    anchor = _Context(first, first_values, restricted=cfg.restrict_first)
    padding = _Context(first, first_values, restricted=True)
    recent = deque([padding] * cfg.num_context, maxlen=cfg.num_context)
    yield first_values
    for t, feats in enumerate(frames, start=1):
        if feats.shape != first.shape:
            raise ValueError(f"Features of frame {t} have shape {tuple(feats.shape)}, but frame 0 has {tuple(first.shape)}.")
        context = [anchor, *recent]
        if dense:
            flat = _predict_dense(feats, context, distances, cfg)
        else:
            flat = _predict_windowed(feats, context, windows, cfg)
        values = flat.view(*flat.shape[:2], h, w)
        if cfg.num_context:
            recent.append(_Context(feats, values, restricted=True))
        yield values
