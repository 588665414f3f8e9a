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

from walkreg.windows import LocalWindows, gather_rows


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
            raise ValueError(
                f"`implementation` must be 'auto', 'windowed' or 'dense', but is {self.implementation!r}."
            )
        if self.max_tiles < 1:
            raise ValueError(f"`max_tiles` must be >= 1, but is {self.max_tiles}.")


def _weighted_top_k(values: list[torch.Tensor], labels: list[torch.Tensor], cfg: PropagationConfig) -> torch.Tensor:
    """Joint top-k over all context candidates, then the softmax-weighted sum of their labels.

    Args:
        values: per context frame ``(B, *q, k_i)`` candidate similarities.
        labels: per context frame ``(B, *q, k_i, L)`` candidate values.

    Returns:
        ``(B, *q, L)``.
    """
    values, labels = torch.cat(values, dim=-1), torch.cat(labels, dim=-2)
    if values.shape[-1] > cfg.top_k:  # the top-k of a union is the top-k of the per-part top-k's
        values, order = values.topk(cfg.top_k, dim=-1)
        labels = labels.gather(-2, order.unsqueeze(-1).expand(*order.shape, labels.shape[-1]))
    weights = F.softmax(values / cfg.temperature, dim=-1)
    return (weights.unsqueeze(-1) * labels).sum(-2)


class _Context:
    """One context frame: cell-major padded features ``(B, N + 1, C)`` and values ``(B, N + 1, L)``, radius flag."""

    def __init__(self, features: torch.Tensor, values: torch.Tensor, restricted: bool):
        self.features = LocalWindows.pad(features)
        self.values = LocalWindows.pad(values)
        self.restricted = restricted


def _predict_windowed(
    query: torch.Tensor, context: list[_Context], windows: LocalWindows, cfg: PropagationConfig
) -> torch.Tensor:
    """Tiled prediction: ``(B, C, h, w)`` query -> ``(B, N, L)``; no ``N x N`` tensor for restricted frames."""
    padded_query = LocalWindows.pad(query)
    n = windows.num_cells
    out = []
    for tiles in windows.tile_chunks(cfg.max_tiles):
        queries = windows.queries(padded_query, tiles)  # (B, tiles, S, C)
        values, labels = [], []
        for ctx in context:
            if ctx.restricted:
                sims = windows.window_similarities(queries, ctx.features, tiles)  # (B, tiles, S, W)
                top, slots = sims.topk(min(cfg.top_k, sims.shape[-1]), dim=-1)
                cells = windows.key_cells(slots, tiles)
            else:
                sims = queries @ ctx.features[:, None, :n].transpose(-1, -2)  # (B, tiles, S, N)
                top, cells = sims.topk(min(cfg.top_k, n), dim=-1)
            values.append(top)
            labels.append(gather_rows(ctx.values, cells, per_batch=True))
        out.append(_weighted_top_k(values, labels, cfg))  # (B, tiles, S, L)
    return windows.to_cells(torch.cat(out, dim=1))


def _predict_dense(
    query: torch.Tensor, context: list[_Context], distances: torch.Tensor, cfg: PropagationConfig
) -> torch.Tensor:
    """All-pairs prediction: ``(B, C, h, w)`` query -> ``(B, N, L)``; builds the masked ``N x N`` affinities."""
    n = distances.shape[0]
    queries = LocalWindows.pad(query)[:, :n]
    values, labels = [], []
    for ctx in context:
        sims = queries @ ctx.features[:, :n].transpose(-1, -2)  # (B, N, N)
        if ctx.restricted:
            sims = sims.masked_fill_(distances >= cfg.radius, float("-inf"))
        top, cells = sims.topk(min(cfg.top_k, n), dim=-1)
        values.append(top)
        labels.append(gather_rows(ctx.values, cells, per_batch=True))
    return _weighted_top_k(values, labels, cfg)


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
    if (
        first.ndim != 4
        or first_values.ndim != 4
        or first.shape[0] != first_values.shape[0]
        or first.shape[-2:] != first_values.shape[-2:]
    ):
        raise ValueError(
            "`first_values` must have shape (B, L, h, w) matching features (B, C, h, w), but got "
            f"{tuple(first_values.shape)} and {tuple(first.shape)}."
        )
    first_values = first_values.to(first.dtype)
    h, w = first.shape[-2:]
    windows = LocalWindows.cached(h, w, float(cfg.radius), device=str(first.device))
    dense = cfg.implementation == "dense" or (
        cfg.implementation == "auto" and windows.window_size >= windows.num_cells
    )
    if dense:
        ys, xs = torch.meshgrid(
            torch.arange(h, device=first.device), torch.arange(w, device=first.device), indexing="ij"
        )
        coords = torch.stack([ys.flatten(), xs.flatten()], dim=1).to(first.dtype)
        distances = torch.cdist(coords, coords)

    anchor = _Context(first, first_values, restricted=cfg.restrict_first)
    padding = _Context(first, first_values, restricted=True)
    recent = deque([padding] * cfg.num_context, maxlen=cfg.num_context)
    yield first_values
    for t, feats in enumerate(frames, start=1):
        if feats.shape != first.shape:
            raise ValueError(
                f"Features of frame {t} have shape {tuple(feats.shape)}, but frame 0 has {tuple(first.shape)}."
            )
        context = [anchor, *recent]
        if dense:
            flat = _predict_dense(feats, context, distances, cfg)
        else:
            flat = _predict_windowed(feats, context, windows, cfg)
        values = flat.transpose(1, 2).reshape(flat.shape[0], -1, h, w)
        if cfg.num_context:
            recent.append(_Context(feats, values, restricted=True))
        yield values
