"""Transitions between frames and the walks made of them: every walk walkreg takes is built here.

Layouts: dense feature maps are ``(B, C, h, w)`` with ``N = h * w`` cells in row-major order (the
:mod:`walkreg.cells` grid); node embeddings are ``(B, C, N)``. A transition from frame ``a`` to frame ``b`` is
row-stochastic ``(B, N_a, N_b)``: row ``i`` is the probability of stepping from node ``i`` of ``a`` to each node of
``b``. :class:`SparseTransitions` keeps only the ``K`` strongest entries of each row.

- :func:`transition_matrix`: dense transitions (training, small grids).
- :func:`local_transitions`: radius-limited top-k transitions between two feature maps, without an ``N x N``
  matrix, and :func:`local_transitions_both_ways` (both directions from one set of affinities);
  :class:`WalkConfig` holds their hyper-parameters.
- :meth:`SparseTransitions.apply`: carry values of the key frame onto the query frame.
- :func:`compose`: a multi-step walk as one transition.
- :func:`leaky`: a walker that changes colour between cells may leak out of the walk.
- :func:`home_mass` and :func:`round_trip_confidence`: how much of a walk comes home, and the confidence of a
  cell that follows from it (low for occluded, disoccluded or ambiguous cells).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from walkreg.windows import LocalWindows, gather_rows


DROPPED_EDGE = -1e20  # affinity given to dropped edges (the official code's value), before the temperature


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, but is {temperature}.")


def check_edge_dropout(edge_dropout: float) -> None:
    if not 0.0 <= edge_dropout < 1.0:
        raise ValueError(f"`edge_dropout` must be in [0, 1), but is {edge_dropout}.")


def drop_edges(affinity: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set each entry of ``affinity`` to a huge negative value with probability ``rate`` (a new tensor)."""
    if rate == 0:
        return affinity
    noise = torch.rand(affinity.shape, generator=generator, device=affinity.device, dtype=affinity.dtype)
    return affinity.masked_fill(noise < rate, DROPPED_EDGE)


def transition_matrix(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.05,
    top_k: int | None = None,
    edge_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dense transitions from every query node to every key node.

    Args:
        query: ``(B, C, N)`` L2-normalised embeddings of the frame the walk leaves.
        key: ``(B, C, M)`` L2-normalised embeddings of the frame it reaches.
        temperature: softmax temperature applied to the cosine affinities.
        top_k: keep only the ``top_k`` largest affinities of each row (``None`` keeps all).
        edge_dropout: probability of dropping each edge before the softmax (training regulariser).

    Returns:
        ``(B, N, M)`` row-stochastic matrix.
    """
    check_temperature(temperature)
    check_edge_dropout(edge_dropout)
    affinity = drop_edges(torch.einsum("bcn,bcm->bnm", query, key), edge_dropout, generator)
    if top_k is not None and top_k < affinity.shape[-1]:
        values, _ = affinity.topk(top_k, dim=-1)
        affinity = affinity.masked_fill(affinity < values[..., -1:], float("-inf"))
    return F.softmax(affinity / temperature, dim=-1)


@dataclass
class SparseTransitions:
    """Transitions kept as the K strongest entries of each row.

    Attributes:
        indices: ``(B, N, K)`` long, key-node index of each kept entry.
        weights: ``(B, N, K)`` float, transition probabilities; a row sums to 1 (less for a :func:`leaky` step).
        num_keys: number of key nodes ``M``.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    num_keys: int

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """Pull values of the key frame back onto the query nodes: ``(B, L, M) -> (B, L, N)``."""
        rows = values.transpose(1, 2)  # (B, M, L): gathering whole rows is fast for many channels
        gathered = gather_rows(rows, self.indices, per_batch=True)  # (B, N, K, L)
        return torch.einsum("bnkl,bnk->bln", gathered, self.weights.to(values.dtype))

    def to_dense(self) -> torch.Tensor:
        """``(B, N, M)`` dense matrix (for tests and small grids)."""
        b, n, _ = self.indices.shape
        dense = self.weights.new_zeros(b, n, self.num_keys)
        return dense.scatter_add_(2, self.indices, self.weights)

    def to(self, device: torch.device | str) -> SparseTransitions:
        return SparseTransitions(self.indices.to(device), self.weights.to(device), self.num_keys)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.indices.shape[0], self.indices.shape[1], self.num_keys)


def _local_affinities(query: torch.Tensor, key: torch.Tensor, radius: float) -> tuple[LocalWindows, torch.Tensor]:
    """Checked ``(B, C, h, w)`` grids -> their windows and the ``(B, N, O)`` affinities by offset
    (:meth:`LocalWindows.by_offset`)."""
    if query.shape != key.shape or query.ndim != 4:
        raise ValueError(
            "`query` and `key` must both have shape (B, C, h, w), "
            f"but got {tuple(query.shape)} and {tuple(key.shape)}."
        )
    windows = LocalWindows.cached(query.shape[-2], query.shape[-1], float(radius), device=str(query.device))
    sims = windows.window_similarities(windows.queries(windows.pad(query)), windows.pad(key))  # (B, tiles, S, W)
    return windows, windows.by_offset(sims)


def _strongest(windows: LocalWindows, affinity: torch.Tensor, temperature: float, top_k: int | None):
    """``(B, N, O)`` affinities by offset -> :class:`SparseTransitions` of the ``top_k`` strongest of each row."""
    values, slots = affinity.topk(affinity.shape[-1] if top_k is None else min(top_k, affinity.shape[-1]), dim=-1)
    weights = F.softmax(values / temperature, dim=-1)  # cells outside the frame are -inf: weight 0
    keys = windows.offsets.keys.expand(affinity.shape[0], -1, -1).gather(-1, slots)
    return SparseTransitions(keys.clamp(max=windows.num_cells - 1), weights, windows.num_cells)


def local_transitions(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.05,
    radius: float = 12.0,
    top_k: int | None = None,
) -> SparseTransitions:
    """Transitions restricted to a spatial neighbourhood, computed tile by tile (no ``N x N`` matrix is built).

    Args:
        query: ``(B, C, h, w)`` L2-normalised features of the frame the walk leaves.
        key: ``(B, C, h, w)`` L2-normalised features of the frame it reaches (same grid).
        radius: a query cell may step to key cells at Euclidean distance strictly below ``radius`` (in cells).
        top_k: keep the ``top_k`` largest affinities inside the neighbourhood (``None`` keeps all of it).

    Returns:
        :class:`SparseTransitions` with ``N = M = h * w``; entries outside the frame have weight 0.
    """
    check_temperature(temperature)
    windows, affinity = _local_affinities(query, key, radius)
    return _strongest(windows, affinity, temperature, top_k)


def local_transitions_both_ways(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float = 0.05,
    radius: float = 12.0,
    top_k: int | None = None,
) -> tuple[SparseTransitions, SparseTransitions]:
    """:func:`local_transitions` from ``a`` to ``b`` and from ``b`` to ``a`` (both ``(B, C, h, w)``), at the cost of
    one affinity computation: the two directions share their dot products."""
    check_temperature(temperature)
    windows, affinity = _local_affinities(a, b, radius)
    there = _strongest(windows, affinity, temperature, top_k)
    return there, _strongest(windows, windows.reverse(affinity), temperature, top_k)


@dataclass(frozen=True)
class WalkConfig:
    """Hyper-parameters of one walk step and of coming home.

    Attributes:
        temperature: softmax temperature on cosine affinities.
        radius: a step may reach cells strictly closer than this, in feature cells.
        top_k: transitions kept per cell.
        home_radius: a walk is home when it ends strictly closer than this to its start, in cells (``> 1``).
    """

    temperature: float = 0.05
    radius: float = 6.0
    top_k: int = 8
    home_radius: float = 1.5

    def __post_init__(self):
        check_temperature(self.temperature)
        if not self.radius > 0:
            raise ValueError(f"`radius` must be > 0 cells, but is {self.radius}.")
        if self.top_k < 1:
            raise ValueError(f"`top_k` must be >= 1, but is {self.top_k}.")
        if not self.home_radius > 1:
            raise ValueError(
                "`home_radius` must be > 1 cell (the start cell itself is at distance 0 < 1), "
                f"but is {self.home_radius}."
            )

    def step(self, query: torch.Tensor, key: torch.Tensor) -> SparseTransitions:
        """:func:`local_transitions` from the cells of ``query`` to those of ``key`` (both ``(B, C, h, w)``)."""
        return local_transitions(query, key, self.temperature, self.radius, self.top_k)

    def steps_both_ways(self, a: torch.Tensor, b: torch.Tensor) -> tuple[SparseTransitions, SparseTransitions]:
        """The steps ``a -> b`` and ``b -> a`` (:func:`local_transitions_both_ways`)."""
        return local_transitions_both_ways(a, b, self.temperature, self.radius, self.top_k)


def leaky(
    step: SparseTransitions, query_colours: torch.Tensor, key_colours: torch.Tensor, colour_scale: float
) -> SparseTransitions:
    """Scale every entry of a batch-1 ``step`` by ``exp(-|colour difference| / colour_scale)`` (colours
    ``(1, 3, h, w)`` of the query and key cells, mean absolute difference), so rows sum to at most 1 and the
    missing mass is the walker that leaked out.

    Without the leak a softmax walk is blind to global colour or brightness changes: every affinity of a row
    moves together and the softmax cancels them.
    """
    target = gather_rows(LocalWindows.pad(key_colours), step.indices[0])  # (1, N, K, 3)
    diff = (query_colours.flatten(2).transpose(1, 2)[:, :, None] - target).abs().mean(-1)  # (1, N, K)
    return SparseTransitions(step.indices, step.weights * torch.exp(-diff / colour_scale), step.num_keys)


def compose(first: SparseTransitions, second: SparseTransitions, top_k: int | None = None) -> SparseTransitions:
    """``first (a -> b)`` then ``second (b -> c)`` = the walk ``a -> c``, ``(B, N, K1 * K2)`` before truncation.

    With ``top_k=None`` every path is kept as its own entry (exact, duplicates included, rows keep their mass).
    With ``top_k``, entries that end on the same node are merged, the ``top_k`` strongest kept and rows
    renormalised to sum to 1.
    """
    b, n, k1 = first.indices.shape
    k2 = second.indices.shape[-1]
    rows = first.indices.reshape(b, n * k1, 1).expand(-1, -1, k2)
    indices = second.indices.gather(1, rows).reshape(b, n, k1 * k2)
    weights = (first.weights.unsqueeze(-1) * second.weights.gather(1, rows).reshape(b, n, k1, k2)).reshape(
        b, n, k1 * k2
    )
    if top_k is None:
        return SparseTransitions(indices, weights, second.num_keys)
    indices, order = indices.sort(dim=-1)
    weights = weights.gather(-1, order)
    segment = torch.cat([indices.new_zeros(b, n, 1), (indices[..., 1:] != indices[..., :-1]).long().cumsum(-1)], -1)
    sums = torch.zeros_like(weights).scatter_add_(-1, segment, weights)
    cells = torch.zeros_like(indices).scatter_(-1, segment, indices)
    kept, slots = sums.topk(min(top_k, k1 * k2), dim=-1)
    kept = kept / kept.sum(-1, keepdim=True).clamp_min(1e-12)
    return SparseTransitions(cells.gather(-1, slots), kept, second.num_keys)


def _walk(steps: list[SparseTransitions]) -> SparseTransitions:
    """The exact composition of ``steps`` in walking order (every path kept)."""
    return functools.reduce(compose, steps)


@functools.lru_cache(maxsize=8)
def _home_offsets(home_radius: float) -> torch.Tensor:
    """``(2, D)`` integer offsets ``(dy, dx)`` strictly closer than ``home_radius`` to ``(0, 0)``."""
    reach = math.ceil(home_radius) - 1
    ys, xs = torch.meshgrid(torch.arange(-reach, reach + 1), torch.arange(-reach, reach + 1), indexing="ij")
    near = ys.square() + xs.square() < home_radius**2
    return torch.stack([ys[near], xs[near]])


@functools.lru_cache(maxsize=8)
def _cell_coordinates(num_cells: int, width: int) -> torch.Tensor:
    """``(2, N)`` row and column of every cell of a row-major grid."""
    cells = torch.arange(num_cells)
    return torch.stack([cells.div(width, rounding_mode="floor"), cells % width])


def home_mass(
    outward: list[SparseTransitions], inward: list[SparseTransitions], width: int, home_radius: float
) -> torch.Tensor:
    """``(N,)`` mass of the walk ``outward[0] ... outward[-1] inward[0] ... inward[-1]`` that ends strictly closer
    than ``home_radius`` cells to its start node (cells of a row-major grid ``width`` cells wide).

    ``outward`` are the steps away from the start frame, ``inward`` the steps back, in walking order (batch-1
    :class:`SparseTransitions`). Meet in the middle: the inward walks from every turn node are merged
    (``scatter_add``) into a local window of offsets around it, and every outward path sums that window over the
    home disk around its own start: ``O(N * K ** depth)`` work, no ``N x N`` matrix.
    """
    there, back = _walk(outward), _walk(inward)
    turns, away = there.indices[0], there.weights[0]  # (N, P) turn nodes of the paths from each start node
    ends, returned = back.indices[0], back.weights[0]  # (N, Q) end nodes of the paths from each turn node
    num_cells = turns.shape[0]
    coords = _cell_coordinates(num_cells, width).to(turns.device)

    def at(cells: torch.Tensor) -> torch.Tensor:
        return coords.index_select(1, cells.flatten()).view(2, *cells.shape)

    # (2, N, P) offsets as seen from the turn node, 0 on paths without mass (their cells may be padding)
    here = coords[:, :, None]
    inner = (at(ends) - here) * (returned > 0)  # where each inward path ends
    outer = (here - at(turns)) * (away > 0)  # where each outward path started
    home = _home_offsets(home_radius).to(turns.device)
    half = int(max(inner.abs().max(), outer.abs().max())) + int(home.max())
    side = 2 * half + 1
    landed = returned.new_zeros(num_cells, side * side)
    landed.scatter_add_(1, (inner[0] + half) * side + inner[1] + half, returned)
    start = turns * side * side + (outer[0] + half) * side + outer[1] + half  # (N, P) the start in the turn's window
    near = landed.flatten().index_select(0, (start[..., None] + home[0] * side + home[1]).flatten())
    near = near.view(*start.shape, -1).sum(-1)  # (N, P) the inward mass landing near each path's start
    return (away * near).sum(1)


def round_trip_confidence(
    there: SparseTransitions, back: SparseTransitions, width: int, home_radius: float, full_mass: float
) -> torch.Tensor:
    """``(N,)`` confidence in [0, 1] of each cell's correspondence: the :func:`home_mass` of the round trip
    ``there`` then ``back`` (batch-1 transitions), divided by ``full_mass`` (the home-coming mass at and above which a
    cell counts as fully visible) and clipped to 1."""
    if not 0 < full_mass <= 1:
        raise ValueError(f"`full_mass` must be in (0, 1], but is {full_mass}.")
    return (home_mass([there], [back], width, home_radius) / full_mass).clamp(0, 1)
