"""Where the frame axis of a pipeline's latents is, and how many source frames one latent frame covers.

Supported layouts (the names spell the latent tensor's axes):

- ``"FCHW"``: frames are the batch, ``(F, C, h, w)`` -- per-frame Stable Diffusion img2img, ControlNet img2img and
  InstructPix2Pix (its UNet takes 8 channels, the noisy latents and the frame's image latents, but the latents the
  scheduler steps and the callbacks see are the 4-channel ``(F, 4, h, w)``).
- ``"BCFHW"``: ``(B, C, F, h, w)`` -- AnimateDiff video-to-video, with or without ControlNet (no time compression),
  and Wan (x4, causal).
- ``"BFCHW"``: ``(B, F, C, h, w)`` -- CogVideoX video-to-video (x4, causal).

A *causal* time-compressed VAE encodes source frame 0 alone in latent frame 0 and frames ``r*(j-1)+1 .. r*j`` in
latent frame ``j``. Packed-token layouts (LTX) and anything unrecognised are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


LAYOUTS = ("FCHW", "BCFHW", "BFCHW")

# pipeline class name (or a base class name) -> (layout, time-compression attribute or None, causal)
_KNOWN_PIPELINES = {
    "StableDiffusionImg2ImgPipeline": ("FCHW", None, False),
    "StableDiffusionControlNetImg2ImgPipeline": ("FCHW", None, False),
    "StableDiffusionInstructPix2PixPipeline": ("FCHW", None, False),
    "AnimateDiffVideoToVideoPipeline": ("BCFHW", None, False),
    "AnimateDiffVideoToVideoControlNetPipeline": ("BCFHW", None, False),
    "WanVideoToVideoPipeline": ("BCFHW", "vae_scale_factor_temporal", True),
    "CogVideoXVideoToVideoPipeline": ("BFCHW", "vae_scale_factor_temporal", True),
}
_REFUSED = {
    "LTX": "packs its latents into tokens (B, S, D)",
    "Lucy": "denoises pure noise (the source is a condition)",
}


@dataclass(frozen=True)
class LatentLayout:
    """How to read frames out of a latent tensor.

    Attributes:
        axes: one of ``LAYOUTS``.
        temporal_compression: source frames per latent frame (1 for image VAEs, 4 for Wan / CogVideoX).
        causal: the first latent frame encodes source frame 0 alone (Wan, CogVideoX).
    """

    axes: str
    temporal_compression: int = 1
    causal: bool = False

    def __post_init__(self):
        if self.axes not in LAYOUTS:
            raise ValueError(f"`latent_layout` must be one of {LAYOUTS}, but is {self.axes!r}.")
        if self.temporal_compression < 1:
            raise ValueError(f"`temporal_compression` must be >= 1, but is {self.temporal_compression}.")

    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames the VAE makes from ``num_frames`` source frames."""
        r = self.temporal_compression
        if r == 1:
            return num_frames
        return (num_frames - 1) // r + 1 if self.causal else num_frames // r

    def source_frame(self, latent_index: int) -> int:
        """The source frame that stands for latent frame ``latent_index`` (the last frame it covers)."""
        r = self.temporal_compression
        return latent_index * r if self.causal else latent_index * r + r - 1

    def to_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents in this layout -> ``(B, F, C, h, w)`` (a view where possible)."""
        expected = 4 if self.axes == "FCHW" else 5
        if latents.ndim != expected:
            raise ValueError(
                f"`latents` must have {expected} dims for layout {self.axes!r}, but got shape {tuple(latents.shape)}."
            )
        if self.axes == "FCHW":
            return latents.unsqueeze(0)
        if self.axes == "BCFHW":
            return latents.transpose(1, 2)
        return latents

    def from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_frames`: ``(B, F, C, h, w)`` -> latents in this layout."""
        if self.axes == "FCHW":
            return frames.squeeze(0)
        if self.axes == "BCFHW":
            return frames.transpose(1, 2)
        return frames


def infer_layout(pipeline, latent_layout: str | None = None, temporal_compression: int | None = None) -> LatentLayout:
    """The :class:`LatentLayout` of a Diffusers pipeline, from its class (subclasses included) and scale attributes.

    ``latent_layout`` (and ``temporal_compression``) override the detection, e.g. for a custom pipeline; a pipeline
    that is neither known nor overridden is refused with an error that says how to override.
    """
    if latent_layout is not None:
        return LatentLayout(latent_layout, temporal_compression or 1, causal=(temporal_compression or 1) > 1)
    names = [cls.__name__ for cls in type(pipeline).__mro__]
    for name in names:
        if name in _KNOWN_PIPELINES:
            axes, attribute, causal = _KNOWN_PIPELINES[name]
            ratio = int(getattr(pipeline, attribute)) if attribute else 1
            return LatentLayout(axes, temporal_compression or ratio, causal)
    for prefix, why in _REFUSED.items():
        if names[0].startswith(prefix):
            raise ValueError(f"walkreg does not support {names[0]}: it {why}; latent propagation needs a frame axis.")
    raise ValueError(
        f"Cannot tell the frame axis of the latents of {names[0]}; pass `latent_layout` as one of {LAYOUTS} "
        "(and `temporal_compression` if its VAE compresses time)."
    )
