"""``WalkBackGuidance``: a gradient step on the denoised estimate that lowers the walk-back loss against the source.

Applied before the scheduler step, on the (guidance-combined) model output the scheduler receives, so multistep
schedulers (UniPC, DPM-Solver) integrate the corrected estimate instead of undoing it.

Loss. For consecutive latent frames ``f-1, f``, a walker leaves node ``i`` of frame ``f`` along the cached *source*
transition ``f -> f-1`` (top-k sparse) and comes back along the *edited* video's transition ``f-1 -> f`` (softmax of
feature affinities of the estimate over all nodes of frame ``f``). The loss is the cross-entropy of returning to
``i``, averaged over nodes weighted by the source walk's own cycle confidence: it is low when the edit moves the way
the source moves. Only the ``K`` edited probabilities the source walk reaches are read, and the affinities behind
their normalisers are computed a block of rows at a time (see :func:`walk_back_against_source`): no ``N x N`` matrix
is held, forward or backward.

Features (``features=``). ``"latent"`` (the default): each latent cell's 3x3 neighbourhood of latent values -- no
decode, no encoder; one guided step at SD-1.5 size costs 0.01 UNet steps (``bench/pipeline_overhead.py --guidance``).
``"crw"``: the CRW encoder on the VAE-decoded estimate, 3.4 UNet steps per guided step. On the small diffusion model
trained here (``bench/diffusion_effect.py``, per-frame SDEdit at strength 0.6 on 4 held-out clips), guidance alone at
the defaults (latent features, weight 0.2 on the first 80 % of the steps) cuts the output's flicker by 43 % at a
distance of 14 (of 255) from the plain edit; CRW features at the same weight and steps cut 27 % at 13x the time.
Stacked on :class:`~walkreg.pipelines.WalkRegCallback` it does not help: the callback alone removes 81-90 % of the
flicker, and the guidance's contrastive push (away from cells that are not the source's match) adds per-frame
change the callback then has to undo, so the pair is 5-19 points below the callback alone at equal distance.

Latent layouts. With CRW features, per-frame Stable Diffusion (``FCHW``) and AnimateDiff (``BCFHW``) latents are
decoded frame by frame by their image VAE. Wan (``BCFHW``) and CogVideoX (``BFCHW``) latents compress time x4: the
whole latent video is decoded by the pipeline's video VAE, and latent frame ``j`` is represented by decoded frame
``layout.source_frame(j)`` -- the source frame its correspondences were computed on.

Cost of CRW features. Every guided step decodes the whole video with the VAE, runs the CRW encoder on one frame per
latent frame, and backpropagates through both, holding their activations at once. With the tiny test pipelines
(CPU, one thread; the denoiser call includes classifier-free guidance; peak = tensor memory allocated during the step,
forward and backward):

================================  ============  =================  ===============  ===========
layout (latents)                  denoiser ms   guided step ms     step / call      peak MiB
================================  ============  =================  ===============  ===========
SD img2img FCHW (3 x 16x16)       67            77                 1.2              13.6
AnimateDiff BCFHW (3 x 16x16)     136           86                 0.6              13.6
Wan BCFHW x4 (3 x 4x4, 9 frames)  11            147                13               4.4
CogVideoX BFCHW x4 (3 x 2x2)      2.7           72                 27               3.2
================================  ============  =================  ===============  ===========

The time-compressed VAEs decode and backpropagate through all 4 frames of each latent frame, though one of them
feeds the loss, while the tiny transformers cost next to nothing; with real models the denoiser's share grows. The
loss itself is small next to the decode: at a 64x64 latent grid (512x512 SD, 256 feature channels, K = 10), one frame
pair forward and backward takes 0.83 s and 59 MiB, against 0.88 s and 201 MiB for the dense ``N x N`` softmax it
replaced, and 8 frames 149 MiB against 612 MiB (the dense loss kept a matrix per frame pair for the backward pass;
``bench/pipeline_overhead.py --loss``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .callback import check_step_range, is_active
from .correspondence import CorrespondenceCache, CorrespondenceConfig, SourceCorrespondences
from .layouts import LatentLayout, infer_layout
from .schedules import tapped


CHUNK_SIZE = 512  # nodes per block of the loss: a block holds (B, CHUNK_SIZE, N) affinities


def vae_input(vae, latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, F, h, w)`` video latents -> what the pipeline hands to its video VAE's ``decode``.

    Wan's VAE has per-channel ``latents_mean`` / ``latents_std`` (its pipeline de-normalises with them);
    CogVideoX's divides by ``scaling_factor``.
    """
    mean = getattr(vae.config, "latents_mean", None)
    if mean is None:
        return latents / vae.config.scaling_factor
    channels = (1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=latents.device, dtype=latents.dtype).view(channels)
    return latents * std + torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(channels)


def decode_frames(pipeline, frames: torch.Tensor, layout: LatentLayout | None = None) -> torch.Tensor:
    """``(B, F, C, h, w)`` latent frames -> ``(B, F, 3, H, W)`` pixels in [0, 1] through ``pipeline.vae``
    (differentiable): decoded frame ``f`` stands for latent frame ``f``.

    Without time compression (SD, AnimateDiff) every latent frame is decoded alone by the image VAE, divided by
    ``scaling_factor``. With it (Wan, CogVideoX) the whole clip goes through the video VAE, which gives
    ``layout.source_frame(F - 1) + 1`` frames, and frame ``layout.source_frame(j)`` is kept for latent frame ``j``.
    """
    layout = layout or LatentLayout("FCHW")
    vae = pipeline.vae
    latents = frames.to(vae.dtype)
    if layout.temporal_compression == 1:
        pixels = vae.decode(latents.flatten(0, 1) / vae.config.scaling_factor).sample.unflatten(0, frames.shape[:2])
    else:
        video = vae.decode(vae_input(vae, latents.transpose(1, 2))).sample  # (B, 3, T, H, W)
        kept = [layout.source_frame(j) for j in range(frames.shape[1])]
        pixels = video[:, :, kept].transpose(1, 2)
    return ((pixels.float() + 1) / 2).clamp(0, 1)


FEATURES = ("crw", "latent")


def latent_features(frames: torch.Tensor) -> torch.Tensor:
    """``(B, F, C, h, w)`` latent frames -> ``(B, 9C, F, h, w)``: each cell's 3x3 neighbourhood of latent values,
    L2-normalised. The walk-back loss on these needs no VAE decode and no encoder pass, forward or backward."""
    b, f, c, h, w = frames.shape
    patches = F.unfold(frames.flatten(0, 1).float(), kernel_size=3, padding=1).view(b, f, 9 * c, h, w)
    return F.normalize(patches, dim=2).transpose(1, 2)


def _log_probability_block(
    rows: torch.Tensor, keys: torch.Tensor, neighbours: torch.Tensor, nodes: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The edited log-probabilities that start in one block of nodes of frame ``f-1``.

    Args:
        rows: ``(B, C, n)`` features of the block's nodes of frame ``f-1``.
        keys: ``(B, C, N)`` features of frame ``f``.
        neighbours: ``(N, K)`` long, source neighbours of each node of frame ``f``, counted from the block's first
            node (outside ``[0, n)`` when the neighbour is in another block).
        nodes: ``(N, 1)`` long, ``0 .. N-1``.

    Returns:
        ``(B, N, K)``: ``log P(neighbours[i, k] -> i)`` where the neighbour is in the block, 0 elsewhere.
    """
    logits = torch.einsum("bcn,bcm->bnm", rows / temperature, keys)  # (B, n, N); scaling rows is C/N the work
    normalisers = logits.logsumexp(-1)  # (B, n): the softmax runs over all nodes of frame f
    inside = (neighbours >= 0) & (neighbours < rows.shape[-1])
    starts = neighbours.clamp(0, rows.shape[-1] - 1)
    return torch.where(inside, logits[:, starts, nodes] - normalisers[:, starts], 0.0)


def _edited_log_probabilities(
    before: torch.Tensor, after: torch.Tensor, neighbours: torch.Tensor, temperature: float, chunk_size: int
) -> torch.Tensor:
    """``(B, N, K)`` log-probabilities of the edited transition ``f-1 -> f`` from each neighbour
    ``j = neighbours[i, k]`` (a node of frame ``f-1``) to node ``i`` of frame ``f``, normalised over all of frame
    ``f``.

    The nodes of frame ``f-1`` are taken ``chunk_size`` at a time: a block holds their ``(B, chunk_size, N)``
    affinities, and is recomputed in the backward pass instead of being kept (when a gradient is recorded).

    Args:
        before, after: ``(B, C, N)`` L2-normalised node features of frames ``f-1`` and ``f``.
        neighbours: ``(N, K)`` long, nodes of frame ``f-1``.
    """
    nodes = torch.arange(after.shape[-1], device=after.device).view(-1, 1)
    record = torch.is_grad_enabled() and (before.requires_grad or after.requires_grad)
    total = 0.0
    for first in range(0, before.shape[-1], chunk_size):
        args = (before[:, :, first : first + chunk_size], after, neighbours - first, nodes, temperature)
        if record:
            total = total + checkpoint(_log_probability_block, *args, use_reentrant=False, preserve_rng_state=False)
        else:
            total = total + _log_probability_block(*args)
    return total


def walk_back_against_source(
    features: torch.Tensor,
    correspondences: SourceCorrespondences,
    temperature: float,
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """Scalar loss of the mixed palindromes (source ``f -> f-1``, edited ``f-1 -> f``), from sparse transitions.

    For node ``i`` of frame ``f`` and each source neighbour ``j = previous[f].indices[i, k]`` in frame ``f-1``, the
    edited probability is ``P(j -> i) = exp(a_ji - logsumexp_m a_jm)`` with ``a = <feature_j, feature_m> / T``
    over the nodes ``m`` of frame ``f``. The normaliser spans the whole frame, exactly as the dense
    ``transition_matrix`` softmax did, rather than the ``radius`` window of inference's ``local_transitions``: the
    loss is unchanged (to float rounding), and a far-away look-alike the edit creates still takes mass from the walk
    back, which a windowed normaliser would not see. It is computed in blocks of ``chunk_size`` rows, each recomputed
    in the backward pass, so memory is ``O(N * chunk_size)`` while time stays ``O(N^2 C)`` per frame pair -- small
    next to the VAE decode the loss backpropagates through.

    Args:
        features: ``(B, C, F, h, w)`` L2-normalised CRW features of the edited frames on the latent grid.
        correspondences: the source's cached transitions on the same grid (``(1, N, K)`` per frame).
        chunk_size: nodes per block (a positive integer).
    """
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, but is {chunk_size}.")
    b, _, f = features.shape[:3]
    nodes = features.flatten(3)  # (B, C, F, N)
    total = weight_sum = 0.0
    for i in range(1, f):
        source = correspondences.previous[i]
        before, after, neighbours = nodes[:, :, i - 1], nodes[:, :, i], source.indices[0]
        log_edited = _edited_log_probabilities(before, after, neighbours, temperature, chunk_size)
        returned = (source.weights[0] * log_edited.exp()).sum(-1)  # (B, N)
        confidence = correspondences.previous_confidence[i].to(returned.dtype)
        total = total + (-torch.log(returned + 1e-20) * confidence).sum()
        weight_sum = weight_sum + confidence.sum() * b
    return total / weight_sum.clamp_min(1e-12)


class WalkBackGuidance:
    """Walk-back regulariser for Diffusers video pipelines (every layout of :mod:`~walkreg.pipelines.layouts`).

    Args:
        encoder, source_video: as for :class:`~walkreg.pipelines.WalkRegCallback` (or share its ``cache``).
        weight: step size as a fraction of the estimate's RMS (the gradient is RMS-normalised); 0 disables it.
        start, end: the fraction ``[start, end)`` of the denoising steps where it acts.
        temperature: softmax temperature of the edited transitions.
        latent_layout, temporal_compression: override the layout detected from the pipeline (one of ``LAYOUTS``,
            and the source frames per latent frame if its VAE compresses time).
        features: what the edited walk runs on: ``"crw"``, the CRW encoder on the VAE-decoded estimate (costly), or
            ``"latent"``, each latent cell's 3x3 neighbourhood (:func:`latent_features`; no decode, no encoder).

    Use ``with guidance.attach(pipe): pipe(...)``.
    """

    def __init__(
        self,
        encoder=None,
        source_video=None,
        weight: float = 0.2,
        start: float = 0.0,
        end: float = 0.8,
        temperature: float = 0.05,
        latent_layout: str | None = None,
        cache: CorrespondenceCache | None = None,
        temporal_compression: int | None = None,
        features: str = "latent",
    ):
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, but is {weight}.")
        if features not in FEATURES:
            raise ValueError(f"`features` must be one of {FEATURES}, but is {features!r}.")
        check_step_range(start, end)
        self.encoder = encoder if encoder is not None else cache.encoder
        self.cache = cache or CorrespondenceCache(encoder, source_video, CorrespondenceConfig(temperature=temperature))
        self.weight, self.start, self.end, self.temperature = weight, start, end, temperature
        self.latent_layout, self.temporal_compression, self.features = latent_layout, temporal_compression, features

    def layout(self, pipeline) -> LatentLayout:
        return infer_layout(pipeline, self.latent_layout, self.temporal_compression)

    def loss(self, pipeline, denoised: torch.Tensor) -> torch.Tensor:
        """Walk-back loss of ``denoised`` latents (in the pipeline's layout) against the source walk."""
        layout = self.layout(pipeline)
        frames = layout.to_frames(denoised)
        correspondences = self.cache.for_latents(frames, layout)
        if self.features == "latent":
            return walk_back_against_source(latent_features(frames), correspondences, self.temperature)
        h, w = frames.shape[-2:]
        pixels = decode_frames(pipeline, frames, layout)
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
