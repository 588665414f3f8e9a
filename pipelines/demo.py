"""``walkreg demo --diffusion``: the main job with a real (small) diffusion edit, offline.

The bundled clip is edited frame by frame with SDEdit (img2img) by the small diffusion model trained in this
repository (:mod:`walkreg.pipelines.tiny_diffusion`), which re-synthesises texture that differs from frame to frame.
The same edit is made again with walkreg attached (:class:`WalkRegCallback` on the bundled CRW encoder's source
correspondences; :class:`WalkBackGuidance` too with ``guidance_weight > 0``), and both are scored, written side by
side and reported as in ``walkreg demo`` (:func:`walkreg.demo.produce_demo`). The guidance is off by default:
``bench/diffusion_effect.py`` measured it cutting flicker on its own, but not on top of the callback.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import torch

from walkreg.demo import DEMO_CLIP, DemoResult, produce_demo
from walkreg.features import CachedFeatures, create_features
from walkreg.progress import progress
from walkreg.video import probe_video

from .callback import WalkRegCallback
from .correspondence import CorrespondenceCache
from .guidance import WalkBackGuidance
from .tiny_diffusion import FRAME_MULTIPLE, SHORT_SIDE, load_tiny_diffusion


def model_size(width: int, height: int) -> tuple[int, int]:
    """``(H, W)`` for the model: the short side at :data:`SHORT_SIDE`, both sides multiples of
    :data:`FRAME_MULTIPLE`, the aspect ratio kept as closely as that allows."""
    scale = SHORT_SIDE / min(width, height)
    height, width = (
        max(FRAME_MULTIPLE, round(side * scale / FRAME_MULTIPLE) * FRAME_MULTIPLE) for side in (height, width)
    )
    return height, width


def run_diffusion_demo(
    out: str | os.PathLike,
    clip: str | os.PathLike = DEMO_CLIP,
    encoder_name: str = "default",
    frames: int | None = None,
    seed: int = 0,
    strength: float = 0.6,
    steps: int = 20,
    walkreg_weight: float = 0.5,
    guidance_weight: float = 0.0,
) -> DemoResult:
    """The diffusion demo, written into the folder ``out`` all or none (files as for :func:`walkreg.demo.run_demo`).

    Args:
        clip, frames: the source video and how many of its first frames to edit (resized for the model).
        seed: frame ``i`` is noised with seed ``seed + i``, the same in both edits.
        strength, steps: img2img strength and DDIM steps of the full schedule.
        walkreg_weight: :class:`WalkRegCallback` weight; guidance_weight: :class:`WalkBackGuidance` weight (0: not
            attached).
    """
    if not 0 < strength <= 1:
        raise ValueError(f"`strength` must be in (0, 1], but is {strength}.")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, but is {steps}.")
    info = probe_video(clip)
    size = model_size(info.width, info.height)
    encoder = create_features(encoder_name)
    pipe, embeds = load_tiny_diffusion()
    bar = progress(total=2 * int(steps * strength), desc="denoising (per-frame edit, then walkreg)", unit="step")

    def img2img(source: torch.Tensor, walkreg: bool) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(source))]
        with ExitStack() as stack:
            callback = None
            if walkreg:
                cache = CorrespondenceCache(encoder, source, show_progress=False)
                callback = stack.enter_context(WalkRegCallback(cache=cache, weight=walkreg_weight).attach(pipe))
                if guidance_weight > 0:
                    stack.enter_context(WalkBackGuidance(cache=cache, weight=guidance_weight).attach(pipe))

            def step_end(pipeline, step_index, timestep, kwargs):
                bar.update(1)
                return kwargs if callback is None else callback(pipeline, step_index, timestep, kwargs)

            return pipe(
                image=source,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=1.0,
                generator=generators,
                output_type="pt",
                callback_on_step_end=step_end,
                **{k: v.expand(len(source), -1, -1) for k, v in embeds.items()},
            ).images.float()

    with bar:
        return produce_demo(
            out,
            clip,
            CachedFeatures(encoder),
            encoder_name,
            lambda source: img2img(source, walkreg=False),
            lambda source, edited: img2img(source, walkreg=True),
            frames,
            size,
        )
