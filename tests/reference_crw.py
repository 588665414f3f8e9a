"""A loop-by-loop restatement of the official CRW loss, written from the method description (reference notes §4).

Deliberately naive and literal: affinities are built per frame pair, edge dropout writes -1e20 in place into the
shared affinity (so the backward matrices inherit forward drops), and every palindrome is multiplied out from
scratch, left to right. Used only to check `walkreg.walk_back_loss`.
"""

import torch
import torch.nn.functional as F


def reference_walk_loss(nodes: torch.Tensor, temperature: float, edge_dropout: float = 0.0):
    """nodes (B, C, T, N) -> (loss, [per-cycle xent], [per-cycle acc]); draws dropout masks with torch.rand_like."""
    b, c, t, n = nodes.shape
    affinity = torch.stack([nodes[:, :, i].transpose(1, 2) @ nodes[:, :, i + 1] for i in range(t - 1)], dim=1)
    forward = []
    for i in range(t - 1):
        a = affinity[:, i]  # a view: in-place drops reach `affinity`
        if edge_dropout > 0:
            a[torch.rand_like(a) < edge_dropout] = -1e20
        forward.append(F.softmax(a / temperature, dim=-1))
    backward = []
    for i in range(t - 1):
        a = affinity[:, i].transpose(-1, -2)
        if edge_dropout > 0:
            a[torch.rand_like(a) < edge_dropout] = -1e20
        backward.append(F.softmax(a / temperature, dim=-1))
    losses, accs = [], []
    for k in range(1, t - 1):
        chain = forward[: k + 1] + backward[: k + 1][::-1]
        walk = chain[0]
        for step in chain[1:]:
            walk = walk @ step
        logits = torch.log(walk + 1e-20).flatten(0, 1)
        target = torch.arange(n).repeat(b)
        losses.append(F.cross_entropy(logits, target))
        accs.append((logits.argmax(-1) == target).float().mean())
    return sum(losses) / len(losses), losses, accs
