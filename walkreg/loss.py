"""The palindrome contrastive random-walk loss that trains the walk encoder (Jabri et al. 2020).

Layout: node embeddings are ``(B, C, T, N)``, ``N`` nodes per frame; transitions follow :mod:`walkreg.walks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from walkreg.walks import check_edge_dropout, check_temperature, drop_edges


EPS = 1e-20  # added inside the log of the cycle cross-entropy, as in the official code


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
    check_temperature(temperature)
    check_edge_dropout(edge_dropout)
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


def transition_loss(
    features: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """Supervised transitions: each cell's ``t -> t+1`` transition row against where the cell truly goes.

    The row is the softmax over all cells of frame ``t+1`` of the cosine affinities over ``temperature``, as in
    :func:`walkreg.walks.transition_matrix`. Its target puts bilinear weights on the (up to) four cells around the
    true position, so a motion of a fraction of a cell is a soft target between two cells; the loss is the
    cross-entropy with that target, averaged over the cells whose motion is known and lands inside frame ``t+1``.

    Args:
        features: ``(B, C, T, h, w)`` L2-normalised dense features (``N = h * w`` cells per frame, row-major).
        targets: ``(B, T-1, 2, h, w)`` position ``(x, y)``, in cells of frame ``t+1``, that cell ``(y, x)`` of frame
            ``t`` moves to (its index plus its motion divided by the cell size).
        valid: ``(B, T-1, h, w)`` bool, the cells whose motion is known.

    Returns:
        Scalar mean cross-entropy (zero, still attached to ``features``, when no cell counts).
    """
    if features.ndim != 5:
        raise ValueError(f"`features` must have shape (B, C, T, h, w), but got {tuple(features.shape)}.")
    b, _, t, h, w = features.shape
    if tuple(targets.shape) != (b, t - 1, 2, h, w) or tuple(valid.shape) != (b, t - 1, h, w):
        raise ValueError(
            f"`targets` must have shape {(b, t - 1, 2, h, w)} and `valid` {(b, t - 1, h, w)} for features of shape "
            f"{tuple(features.shape)}, but they have {tuple(targets.shape)} and {tuple(valid.shape)}."
        )
    check_temperature(temperature)
    cells = features.flatten(3)
    logits = torch.einsum("bctn,bctm->btnm", cells[:, :, :-1], cells[:, :, 1:]) / temperature
    log_p = logits.log_softmax(dim=-1)  # (B, T-1, N, N)
    x, y = targets[:, :, 0].flatten(2).float(), targets[:, :, 1].flatten(2).float()  # (B, T-1, N)
    counted = valid.flatten(2) & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    corners = ((x0, y0, (1 - fx) * (1 - fy)), (x1, y0, fx * (1 - fy)), (x0, y1, (1 - fx) * fy), (x1, y1, fx * fy))
    loss = torch.zeros_like(x)
    for cx, cy, weight in corners:
        index = (cy * w + cx).long().unsqueeze(-1)
        loss = loss - weight * log_p.gather(-1, index).squeeze(-1)
    counted = counted.to(loss.dtype)
    return (loss * counted).sum() / counted.sum().clamp(min=1)
