"""Carry denoised latents along cached source transitions, frame by frame."""

from __future__ import annotations

import torch

from .correspondence import SourceCorrespondences


def propagate_denoised(
    denoised: torch.Tensor, correspondences: SourceCorrespondences, weight: float, anchor_mix: float = 0.3
) -> torch.Tensor:
    """Blend each latent frame's denoised estimate with what the previous (already blended) frame and the anchor
    frame 0 predict for it along the source transitions.

    For frame ``f >= 1`` with own estimate ``x``, pulled previous frame ``p`` and pulled anchor ``a``::

        x' = x + weight * ((1 - anchor_mix) * c_prev * (p - x) + anchor_mix * c_anchor * (a - x))

    where ``c_prev`` and ``c_anchor`` are the per-node round-trip confidences, so uncertain or occluded nodes keep
    their own content. Frame 0 is unchanged.

    Args:
        denoised: ``(B, F, C, h, w)`` denoised estimates (``B`` videos sharing one source video).
        weight: blend strength in [0, 1]; 0 returns ``denoised`` itself.

    Returns:
        ``(B, F, C, h, w)`` float32.
    """
    b, f, c, h, w = denoised.shape
    if (f, (h, w)) != (correspondences.num_latent_frames, correspondences.grid):
        raise ValueError(
            f"`latents` have {f} frames on a {h}x{w} grid, but the source correspondences were built for "
            f"{correspondences.num_latent_frames} frames on {correspondences.grid[0]}x{correspondences.grid[1]}."
        )
    if weight == 0:
        return denoised
    x = denoised.float()
    out = [x[:, 0]]
    flat = lambda frame: frame.reshape(1, b * c, h * w)  # noqa: E731  (videos share the source transitions)
    for i in range(1, f):
        own = x[:, i]
        pulled_prev = correspondences.previous[i].apply(flat(out[i - 1])).view(b, c, h, w)
        pulled_anchor = correspondences.anchor[i].apply(flat(out[0])).view(b, c, h, w)
        c_prev = correspondences.previous_confidence[i].view(1, 1, h, w) * (1 - anchor_mix)
        c_anchor = correspondences.anchor_confidence[i].view(1, 1, h, w) * anchor_mix
        out.append(own + weight * (c_prev * (pulled_prev - own) + c_anchor * (pulled_anchor - own)))
    return torch.stack(out, dim=1)
