"""``WalkBackGuidance``: a gradient step on the denoised estimate that lowers the walk-back loss against the source.

Applied before the scheduler step, on the (guidance-combined) model output the scheduler receives, so multistep
schedulers (UniPC, DPM-Solver) integrate the corrected estimate instead of undoing it.

Loss. For consecutive latent frames ``f-1, f``, a walker leaves node ``i`` of frame ``f`` along the cached *source*
transition ``f -> f-1`` and comes back along the *edited* video's transition ``f-1 -> f`` (dense softmax of CRW
feature affinities of the decoded estimate). The loss is the cross-entropy of returning to ``i``, averaged over nodes
weighted by the source walk's own cycle confidence: it is low when the edit moves the way the source moves.

Cost: every guided step decodes all frames with the VAE, runs the CRW encoder, and backpropagates through both --
``bench/pipeline_overhead.py`` measured one guided step at 3.4 UNet steps (SD-1.5-shaped UNet and VAE, 8 frames at
256x256, CPU), against 0.8 % of a UNet step for the propagation callback -- and it holds activations for all frames
at once. Use it for a few early steps (the default ``end=0.3``), where layout is decided, and prefer
:class:`~walkreg.pipelines.WalkRegCallback` alone when speed matters. Time-compressed latents (Wan, CogVideoX) are
refused: their VAE decodes a latent frame into several frames.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from walkreg.walks import transition_matrix

from .callback import check_step_range, is_active
from .correspondence import CorrespondenceCache, CorrespondenceConfig, SourceCorrespondences
from .layouts import LatentLayout, infer_layout
from .schedules import tapped


def decode_frames(pipeline, denoised: torch.Tensor) -> torch.Tensor:
    """``(B, F, C, h, w)`` latents -> ``(B, F, 3, H, W)`` pixels in [0, 1] through ``pipeline.vae``
    (differentiable)."""
    b, f = denoised.shape[:2]
    vae = pipeline.vae
    latents = denoised.flatten(0, 1).to(vae.dtype) / vae.config.scaling_factor
    pixels = vae.decode(latents).sample.float()
    return ((pixels + 1) / 2).clamp(0, 1).unflatten(0, (b, f))


def walk_back_against_source(
    features: torch.Tensor, correspondences: SourceCorrespondences, temperature: float
) -> torch.Tensor:
    """Scalar loss of the mixed palindromes (source ``f -> f-1``, edited ``f-1 -> f``).

    Args:
        features: ``(B, C, F, h, w)`` L2-normalised CRW features of the edited frames on the latent grid.
    """
    b, _, f, h, w = features.shape
    nodes = features.flatten(3)
    home = torch.arange(h * w, device=features.device).view(h * w, 1)
    total = weight_sum = 0.0
    for i in range(1, f):
        edited = transition_matrix(nodes[:, :, i - 1], nodes[:, :, i], temperature)  # (B, N, N): f-1 -> f
        source = correspondences.previous[i]
        returned = (source.weights[0] * edited[:, source.indices[0], home]).sum(-1)  # (B, N)
        confidence = correspondences.previous_confidence[i].to(returned.dtype)
        total = total + (-torch.log(returned + 1e-20) * confidence).sum()
        weight_sum = weight_sum + confidence.sum() * b
    return total / weight_sum.clamp_min(1e-12)


class WalkBackGuidance:
    """Walk-back regulariser for Diffusers video pipelines (layouts without time compression).

    Args:
        encoder, source_video: as for :class:`~walkreg.pipelines.WalkRegCallback` (or share its ``cache``).
        weight: step size as a fraction of the estimate's RMS (the gradient is RMS-normalised); 0 disables it.
        start, end: the fraction ``[start, end)`` of the denoising steps where it acts.
        temperature: softmax temperature of the edited transitions.

    Use ``with guidance.attach(pipe): pipe(...)``.
    """

    def __init__(
        self,
        encoder=None,
        source_video=None,
        weight: float = 0.05,
        start: float = 0.0,
        end: float = 0.3,
        temperature: float = 0.05,
        latent_layout: str | None = None,
        cache: CorrespondenceCache | None = None,
    ):
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, but is {weight}.")
        check_step_range(start, end)
        self.encoder = encoder if encoder is not None else cache.encoder
        self.cache = cache or CorrespondenceCache(encoder, source_video, CorrespondenceConfig(temperature=temperature))
        self.weight, self.start, self.end, self.temperature, self.latent_layout = (
            weight,
            start,
            end,
            temperature,
            latent_layout,
        )

    def layout(self, pipeline) -> LatentLayout:
        layout = infer_layout(pipeline, self.latent_layout)
        if layout.temporal_compression != 1:
            raise ValueError(
                f"`WalkBackGuidance` needs one latent frame per video frame, but {type(pipeline).__name__} compresses "
                f"time x{layout.temporal_compression}; use `WalkRegCallback` for this pipeline."
            )
        return layout

    def loss(self, pipeline, denoised: torch.Tensor) -> torch.Tensor:
        """Walk-back loss of ``denoised`` latents (in the pipeline's layout) against the source walk."""
        layout = self.layout(pipeline)
        frames = layout.to_frames(denoised)
        correspondences = self.cache.for_latents(frames, layout)
        h, w = frames.shape[-2:]
        pixels = decode_frames(pipeline, frames)
        pixels = F.interpolate(
            pixels.flatten(0, 1), size=(8 * h, 8 * w), mode="bilinear", antialias=True, align_corners=False
        )
        self.encoder.to(pixels.device)
        features = self.encoder(pixels.unflatten(0, frames.shape[:2]))
        return walk_back_against_source(features, correspondences, self.temperature)

    def step(self, pipeline, denoised: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One RMS-normalised gradient step on ``denoised``; returns the new estimate and the loss before it."""
        with torch.enable_grad():
            x = denoised.detach().float().requires_grad_(True)
            loss = self.loss(pipeline, x)
            (grad,) = torch.autograd.grad(loss, x)
        scale = x.detach().pow(2).mean().sqrt() / grad.pow(2).mean().sqrt().clamp_min(1e-12)
        return (x.detach() - self.weight * scale * grad).to(denoised.dtype), float(loss.detach())

    @contextmanager
    def attach(self, pipeline):
        """Register the guidance on ``pipeline.scheduler`` for the block."""

        def transform(denoised, sample, step_index):
            total = getattr(pipeline, "num_timesteps", None) or len(pipeline.scheduler.timesteps)
            position = step_index - (len(pipeline.scheduler.timesteps) - total)  # loops run the schedule's tail
            if self.weight == 0 or not is_active(pipeline, position, self.start, self.end):
                return denoised
            return self.step(pipeline, denoised)[0]

        with tapped(pipeline.scheduler) as tap:
            tap.transforms.append(transform)
            try:
                yield self
            finally:
                tap.transforms.remove(transform)
