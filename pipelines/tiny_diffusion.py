"""The small img2img model trained in this repository (``assets/tiny-diffusion``, see its README.md), for the
diffusion demo, the tests and the benchmarks.

Unlike random-weight components, it has learned to denoise real video frames, so SDEdit at strength 0.4-0.7
re-synthesises texture that differs frame to frame, as real models do. It has no text encoder: pass the returned
embeddings. Frames should be about :data:`SHORT_SIDE` px on the short side, with both sides a multiple of
:data:`FRAME_MULTIPLE` (e.g. ``(64, 112)``). Made by ``examples/train_tiny_diffusion.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


TINY_DIFFUSION = Path(__file__).parent / "assets" / "tiny-diffusion"
NULL_EMBEDS_FILE = "null_prompt_embeds.safetensors"
SHORT_SIDE = 64  # the training crops' size
FRAME_MULTIPLE = 16  # the VAE's x4 and the UNet's x4 downsampling


def load_tiny_diffusion(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    batch: int = 1,
    path: str | Path = TINY_DIFFUSION,
):
    """Load the model as a ``StableDiffusionImg2ImgPipeline`` (progress bar off) with the null prompt embeddings.

    Args:
        device: where to put the pipeline and the embeddings.
        dtype: weights and embeddings dtype (stored as float16; float32 by default).
        batch: the embeddings are expanded to this batch size, which must equal the number of frames per call.
        path: the model directory (the bundled model by default; ``examples/train_tiny_diffusion.py`` writes others).

    Returns:
        ``(pipe, kwargs)`` where ``kwargs`` is ``{"prompt_embeds": ..., "negative_prompt_embeds": ...}``, each
        ``(batch, 1, cross_attention_dim)``. Both are the same constant, so ``guidance_scale=1`` is enough.
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    if batch < 1:
        raise ValueError(f"`batch` must be >= 1, but is {batch}.")
    path = Path(path)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        path,
        text_encoder=None,
        tokenizer=None,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    ).to(device)
    if pipe.unet.dtype != dtype:  # float16 on disk; diffusers 0.42 loads float32 (its dtype argument was renamed)
        pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    embeds = load_file(str(path / NULL_EMBEDS_FILE))
    kwargs = {k: v.to(device, dtype).expand(batch, -1, -1) for k, v in embeds.items()}
    return pipe, kwargs
