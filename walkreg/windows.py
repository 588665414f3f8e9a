"""Tiled local windows: radius-restricted affinities on a feature grid without an ``N x N`` matrix.

The ``h x w`` grid is cut into ``tile x tile`` query tiles. A tile's key window is the tile grown by the largest
offset that a radius allows, so every key a cell of the tile may reach lies inside it; cells farther than the
radius (Euclidean, strictly less than ``radius`` is kept) and cells outside the frame are masked to ``-inf``.
Per tile, affinities are one small matrix product, so the cost is ``N * window`` instead of ``N * N``.

Cells are indexed row-major (``y * w + x``); index ``N`` is a sentinel for padding that callers map to zeros.
Grids are kept cell-major, ``(B, N + 1, C)``, so that gathering a window copies whole feature vectors.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch


class OffsetTables(NamedTuple):
    """Index tables of the per-cell offset layout of :class:`LocalWindows` (``O`` offsets within the radius).

    Attributes:
        slots: ``(S, O)`` long, the window slot of each offset from each query slot.
        keys: ``(N, O)`` long, the cell ``o`` away from each cell (``N`` outside the frame).
        mirrored: ``(N, O)`` long, the flat ``(N, O)`` position of the mirrored entry ``(i + o, -o)`` (``N * O``
            outside the frame).
    """

    slots: torch.Tensor
    keys: torch.Tensor
    mirrored: torch.Tensor


class LocalWindows:
    """Index tables for tiling an ``height x width`` grid with neighbourhoods of a given radius.

    Attributes:
        num_cells: ``N = height * width``.
        num_tiles: number of query tiles.
        tile_cells: ``S = tile * tile`` query slots per tile (slots past the grid edge are padding).
        window_size: ``W = (tile + 2 * margin) ** 2`` key slots per tile.
        query_index: ``(num_tiles, S)`` long, cell of each query slot (``N`` for padding).
        key_index: ``(num_tiles, W)`` long, cell of each key slot (``N`` for padding).
        mask: ``(num_tiles, S, W)`` bool, True where the key is inside the frame and within the radius.
        bias: ``(num_tiles, S, W)`` float, 0 where ``mask`` holds and ``-inf`` elsewhere (added to the affinities).
        offsets: the per-cell offset layout's :class:`OffsetTables` (built on first use).
    """

    def __init__(
        self, height: int, width: int, radius: float, tile: int = 8, device: torch.device | str | None = None
    ):
        if not radius > 0:
            raise ValueError(f"`radius` must be > 0 feature cells, but is {radius}.")
        if tile < 1:
            raise ValueError(f"`tile` must be >= 1, but is {tile}.")
        self.height, self.width, self.radius, self.tile = height, width, radius, tile
        self.num_cells = height * width
        margin = math.ceil(radius) - 1  # the largest integer offset d with |d| < radius
        side = tile + 2 * margin
        tiles_y, tiles_x = math.ceil(height / tile), math.ceil(width / tile)
        self.num_tiles, self.tile_cells, self.window_size = tiles_y * tiles_x, tile * tile, side * side

        def cells(top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
            """``(tiles_y, tiles_x)`` corners -> ``(num_tiles, size * size)`` cell indices, ``N`` outside."""
            offs = torch.arange(size, device=device)
            ys = (top[:, None, None, None] + offs[None, None, :, None]).expand(tiles_y, tiles_x, size, size)
            xs = (left[None, :, None, None] + offs[None, None, None, :]).expand(tiles_y, tiles_x, size, size)
            inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            return torch.where(inside, ys * width + xs, self.num_cells).reshape(tiles_y * tiles_x, size * size)

        top = torch.arange(tiles_y, device=device) * tile
        left = torch.arange(tiles_x, device=device) * tile
        self.query_index = cells(top, left, tile)
        self.key_index = cells(top - margin, left - margin, side)

        q = torch.arange(tile, device=device)
        k = torch.arange(side, device=device) - margin
        dy = k[None, :, None, None] - q[:, None, None, None]  # (tile, side, 1, 1): key row - query row
        dx = k[None, None, None, :] - q[None, None, :, None]  # (1, 1, tile, side)
        near = (dy**2 + dx**2) < radius**2  # (qy, ky, qx, kx)
        near = near.permute(0, 2, 1, 3).reshape(self.tile_cells, self.window_size)
        self.mask = near[None] & (self.key_index < self.num_cells)[:, None, :]
        self.bias = torch.zeros(self.mask.shape, device=device).masked_fill_(~self.mask, float("-inf"))

        valid = self.query_index.flatten() < self.num_cells
        slot_of_cell = torch.empty(self.num_cells, dtype=torch.long, device=device)
        slot_of_cell[self.query_index.flatten()[valid]] = torch.nonzero(valid).squeeze(1)
        self.slot_of_cell = slot_of_cell  # (N,) position of each cell in the flattened (tiles, S) layout
        self.margin, self.device = margin, device

    @functools.cached_property
    def offsets(self) -> OffsetTables:
        """Index tables of the per-cell offset layout (see :meth:`by_offset`), built once, on first use."""
        margin, side, device = self.margin, self.tile + 2 * self.margin, self.device
        steps = torch.arange(-margin, margin + 1, device=device)
        dy, dx = torch.meshgrid(steps, steps, indexing="ij")
        near = dy**2 + dx**2 < self.radius**2
        dy, dx = dy[near], dx[near]  # row-major over a centrally symmetric set: offset O-1-o is -(offset o)
        slots = torch.arange(self.tile_cells, device=device)
        qy, qx = slots.div(self.tile, rounding_mode="floor")[:, None], (slots % self.tile)[:, None]
        cells = torch.arange(self.num_cells, device=device)
        ys, xs = cells.div(self.width, rounding_mode="floor")[:, None] + dy, (cells % self.width)[:, None] + dx
        inside = (ys >= 0) & (ys < self.height) & (xs >= 0) & (xs < self.width)
        keys, count = ys * self.width + xs, len(dy)
        mirrored = torch.arange(count - 1, -1, -1, device=device)
        return OffsetTables(
            slots=(qy + dy + margin) * side + qx + dx + margin,
            keys=torch.where(inside, keys, self.num_cells),
            mirrored=torch.where(inside, keys * count + mirrored, self.num_cells * count),
        )

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def cached(height: int, width: int, radius: float, tile: int = 8, device: str = "cpu") -> LocalWindows:
        """A shared instance per grid, radius, tile and device: the index tables are built once."""
        return LocalWindows(height, width, radius, tile, device)

    def tile_chunks(self, max_tiles: int) -> list[slice]:
        """Consecutive tile ranges of at most ``max_tiles`` tiles."""
        return [slice(i, min(i + max_tiles, self.num_tiles)) for i in range(0, self.num_tiles, max_tiles)]

    @staticmethod
    def pad(x: torch.Tensor) -> torch.Tensor:
        """``(B, L, h, w)`` -> cell-major ``(B, N + 1, L)`` with a zero sentinel row at index ``N``."""
        rows = x.flatten(2).transpose(1, 2)
        return torch.cat([rows, rows.new_zeros(rows.shape[0], 1, rows.shape[2])], dim=1)

    def queries(self, padded: torch.Tensor, tiles: slice = slice(None)) -> torch.Tensor:
        """``(B, N + 1, C)`` padded grid -> ``(B, tiles, S, C)`` query slots of the chosen tiles."""
        return gather_rows(padded, self.query_index[tiles])

    def window_similarities(
        self, queries: torch.Tensor, padded_key: torch.Tensor, tiles: slice = slice(None)
    ) -> torch.Tensor:
        """Masked dot products of each query slot with its tile's key window.

        Args:
            queries: ``(B, tiles, S, C)`` from :meth:`queries`.
            padded_key: ``(B, N + 1, C)`` padded key grid.

        Returns:
            ``(B, tiles, S, W)``; ``-inf`` outside the frame or the radius.
        """
        keys = gather_rows(padded_key, self.key_index[tiles])  # (B, tiles, W, C)
        b, t, s, c = queries.shape
        bias = self.bias[tiles].to(queries.dtype).expand(b, -1, -1, -1).reshape(b * t, s, -1)
        sims = torch.baddbmm(bias, queries.reshape(b * t, s, c), keys.reshape(b * t, -1, c).transpose(1, 2))
        return sims.view(b, t, s, -1)

    def by_offset(self, sims: torch.Tensor) -> torch.Tensor:
        """Window affinities ``(B, tiles, S, W)`` over all tiles -> ``(B, N, O)`` by offset: entry ``(i, o)`` is the
        affinity of cell ``i`` with the cell ``o`` away from it (``offsets.keys[i, o]``), ``-inf`` outside the
        frame. The ``O`` offsets are those within the radius, in row-major order."""
        index = self.offsets.slots.expand(*sims.shape[:2], -1, -1)
        return self.to_cells(sims.gather(-1, index))

    def reverse(self, by_offset: torch.Tensor) -> torch.Tensor:
        """The affinities ``(B, N, O)`` of :meth:`by_offset` from frame ``a`` to frame ``b`` -> those from ``b`` to
        ``a`` in the same layout: the same dot products, entry ``(j, o)`` taken from ``(j + o, -o)``."""
        flat = by_offset.flatten(1)
        flat = torch.cat([flat, flat.new_full((flat.shape[0], 1), float("-inf"))], dim=1)
        return flat.index_select(1, self.offsets.mirrored.flatten()).view_as(by_offset)

    def key_cells(self, slots: torch.Tensor, tiles: slice = slice(None)) -> torch.Tensor:
        """Window slots ``(B, tiles, S, k)`` -> key cell indices of the same shape (``N`` for padding)."""
        table = self.key_index[tiles]
        b, t, s, k = slots.shape
        return table[None, :, None, :].expand(b, t, s, -1).gather(-1, slots)

    def to_cells(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, tiles, S, ...)`` over all tiles -> ``(B, N, ...)`` in cell order (padding slots dropped)."""
        return x.flatten(1, 2)[:, self.slot_of_cell]


def gather_rows(padded: torch.Tensor, index: torch.Tensor, per_batch: bool = False) -> torch.Tensor:
    """Rows of a cell-major grid: ``(B, N + 1, C)`` at ``index`` -> ``(B, *index_shape, C)``.

    ``index`` is shared by the batch, or ``(B, ...)`` with one index set per batch item when ``per_batch``.
    Uses ``index_select`` (a row copy), several times faster on CPU than advanced indexing.
    """
    b, rows, c = padded.shape
    if per_batch:
        offsets = torch.arange(b, device=index.device).view(-1, *([1] * (index.ndim - 1))) * rows
        return padded.reshape(b * rows, c).index_select(0, (index + offsets).flatten()).view(*index.shape, c)
    return padded.index_select(1, index.flatten()).view(b, *index.shape, c)
