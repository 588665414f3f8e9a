"""Transition matrices between frames and the palindrome walk-back loss.

Layouts: node embeddings are ``(B, C, T, N)``; dense feature maps are ``(B, C, h, w)`` with ``N = h * w`` cells in
row-major order. A transition matrix from frame ``a`` to frame ``b`` is ``(B, N_a, N_b)``: row ``i`` is the
probability of stepping from node ``i`` of ``a`` to each node of ``b``; rows sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from walkreg.windows import LocalWindows


DROPPED_EDGE = -1e20  # affinity given to dropped edges (the official code's value), before the temperature
EPS = 1e-20  # added inside the log of the cycle cross-entropy, as in the official code


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, but is {temperature}.")


def _check_edge_dropout(edge_dropout: float) -> None:
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
    _check_temperature(temperature)
    _check_edge_dropout(edge_dropout)
    affinity = drop_edges(torch.einsum("bcn,bcm->bnm", query, key), edge_dropout, generator)
    if top_k is not None and top_k < affinity.shape[-1]:
        values, _ = affinity.topk(top_k, dim=-1)
        affinity = affinity.masked_fill(affinity < values[..., -1:], float("-inf"))
    return F.softmax(affinity / temperature, dim=-1)


@dataclass
class SparseTransitions:
    """Row-stochastic transitions kept as the K strongest entries of each row.

    Attributes:
        indices: ``(B, N, K)`` long, key-node index of each kept entry.
        weights: ``(B, N, K)`` float, transition probabilities; each row sums to 1.
        num_keys: number of key nodes ``M``.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    num_keys: int

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """Pull values of the key frame back onto the query nodes: ``(B, L, M) -> (B, L, N)``."""
        b, n, k = self.indices.shape
        gathered = values.gather(2, self.indices.reshape(b, 1, n * k).expand(-1, values.shape[1], -1))
        return (gathered.view(b, -1, n, k) * self.weights.unsqueeze(1).to(values.dtype)).sum(-1)

    def to_dense(self) -> torch.Tensor:
        """``(B, N, M)`` dense matrix (for tests and small grids)."""
        b, n, _ = self.indices.shape
        dense = self.weights.new_zeros(b, n, self.num_keys)
        return dense.scatter_add_(2, self.indices, self.weights)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.indices.shape[0], self.indices.shape[1], self.num_keys)


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
        top_k: keep the ``top_k`` largest affinities inside the neighbourhood (``None`` keeps the whole window).

    Returns:
        :class:`SparseTransitions` with ``N = M = h * w``; entries outside the neighbourhood have weight 0.
    """
    _check_temperature(temperature)
    if query.shape != key.shape or query.ndim != 4:
        raise ValueError(
            f"`query` and `key` must both have shape (B, C, h, w), but got {tuple(query.shape)} and {tuple(key.shape)}."
        )
    windows = LocalWindows.cached(query.shape[-2], query.shape[-1], float(radius), device=str(query.device))
    sims = windows.window_similarities(windows.queries(windows.pad(query)), windows.pad(key))  # (B, tiles, S, W)
    k = windows.window_size if top_k is None else min(top_k, windows.window_size)
    values, slots = sims.topk(k, dim=-1)
    weights = F.softmax(values / temperature, dim=-1)  # cells outside the frame or radius are -inf: weight 0
    indices = windows.key_cells(slots).clamp(max=windows.num_cells - 1)
    return SparseTransitions(windows.to_cells(indices), windows.to_cells(weights), windows.num_cells)


@dataclass
class WalkBackOutput:
    """Result of :func:`walk_back_loss`.

    Attributes:
        loss: scalar tensor, the mean of the cycle cross-entropies.
        cycle_losses: ``(T - 2,)`` cross-entropy of the palindrome reaching frame ``k`` for ``k = 2..T-1``.
        cycle_accuracies: ``(T - 2,)`` fraction of nodes whose most likely walk end is the start node.
        walks: the ``(B, N, N)`` round-trip matrices, one per cycle (``k = 2..T-1``).
    """

    loss: torch.Tensor
    cycle_losses: torch.Tensor
    cycle_accuracies: torch.Tensor
    walks: list[torch.Tensor]


def walk_back_loss(
    nodes: torch.Tensor,
    temperature: float = 0.05,
    edge_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> WalkBackOutput:
    """Palindrome contrastive random-walk loss (Jabri et al. 2020), with the official code's conventions.

    For ``k = 1..T-2`` the walk ``P(0->1) ... P(k->k+1) P(k+1->k) ... P(1->0)`` (right-multiplied, row-stochastic)
    is scored by the cross-entropy of returning to its start node; the loss averages the ``T - 2`` cycles.
    Edge dropout follows the official code exactly: each forward affinity loses edges with probability
    ``edge_dropout``; the backward affinity is the transpose of the already-dropped forward one and then loses
    edges again (so about ``1 - (1 - p)^2`` of backward edges are dropped). Masks are drawn forward ``t = 0..T-2``
    first, then backward, so results match the official code bit for bit given the same random stream.

    Args:
        nodes: ``(B, C, T, N)`` L2-normalised node embeddings, ``T >= 3``.

    Returns:
        :class:`WalkBackOutput`.
    """
    if nodes.ndim != 4:
        raise ValueError(f"`nodes` must have shape (B, C, T, N), but got {tuple(nodes.shape)}.")
    b, _, t, n = nodes.shape
    if t < 3:
        raise ValueError(f"`nodes` needs at least 3 frames to form a palindrome walk (T >= 3), but has T={t}.")
    _check_temperature(temperature)
    _check_edge_dropout(edge_dropout)
    affinities = torch.einsum("bctn,bctm->btnm", nodes[:, :, :-1], nodes[:, :, 1:])  # (B, T-1, N, N)
    forward_aff = [drop_edges(affinities[:, i], edge_dropout, generator) for i in range(t - 1)]
    # the official code draws the backward mask with rand_like on the transposed view, which keeps its memory
    # layout: the noise is laid out like the forward matrix, so drop on it first and transpose afterwards
    backward_aff = [drop_edges(a, edge_dropout, generator).transpose(-1, -2) for a in forward_aff]
    forward = [F.softmax(a / temperature, dim=-1) for a in forward_aff]
    backward = [F.softmax(a / temperature, dim=-1) for a in backward_aff]

    # walk_k = F_k @ B_k with the shared prefix F_k = P01...P(k,k+1) and suffix B_k = P(k+1,k)...P10
    targets = torch.arange(n, device=nodes.device).repeat(b)
    prefix, suffix = forward[0], backward[0]
    walks, losses, accuracies = [], [], []
    for k in range(1, t - 1):
        prefix = prefix @ forward[k]
        suffix = backward[k] @ suffix
        walk = prefix @ suffix
        logits = torch.log(walk + EPS).flatten(0, 1)
        walks.append(walk)
        losses.append(F.cross_entropy(logits, targets))
        accuracies.append((logits.argmax(-1) == targets).float().mean())
    cycle_losses = torch.stack(losses)
    return WalkBackOutput(cycle_losses.mean(), cycle_losses, torch.stack(accuracies).detach(), walks)
