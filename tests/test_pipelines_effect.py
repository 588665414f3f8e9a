"""Effect of walkreg on a real clip with the tiny random pipeline: less flicker, measured independently of CRW.

Flicker is the OpenCV DIS-flow warp error between consecutive output frames with the flow taken from the *source*
clip (:func:`walkreg.scoring.flow_warp_error`, Lai et al. 2018); it does not use the CRW encoder at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


pytest.importorskip("diffusers")
pytest.importorskip("cv2")

from test_pipelines import embeds, tiny_sd_img2img  # noqa: E402
from testing_utils import CLIPS, tiny_encoder  # noqa: E402

from walkreg.flow import flow_warp_error  # noqa: E402
from walkreg.pipelines import WalkRegCallback  # noqa: E402
from walkreg.video import read_video  # noqa: E402


def flicker(source: torch.Tensor, output: torch.Tensor) -> float:
    """Mean DIS-flow warp error of consecutive output frames along the source's flow (lower is steadier)."""
    return float(
        np.mean(
            [flow_warp_error((source[t], source[t + 1]), (output[t], output[t + 1])) for t in range(len(output) - 1)]
        )
    )


def edit(pipe, frames: torch.Tensor, callback=None) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(i) for i in range(frames.shape[0])]
    kwargs = dict(
        image=frames,
        strength=0.7,
        num_inference_steps=4,
        guidance_scale=2.0,
        generator=generators,
        output_type="pt",
        **embeds(frames.shape[0]),
    )
    if callback is None:
        return pipe(**kwargs).images
    with callback.attach(pipe):
        return pipe(**kwargs, callback_on_step_end=callback).images


def test_walkreg_reduces_flicker_on_a_real_clip_at_a_comparable_distance():
    source = read_video(CLIPS / "cups.mp4", max_frames=6, size=(48, 80))
    pipe = tiny_sd_img2img()
    plain = edit(pipe, source)
    steady = edit(pipe, source, WalkRegCallback(tiny_encoder(), source, weight=1.0, end=1.0))
    flicker_plain, flicker_walkreg = flicker(source, plain), flicker(source, steady)
    edit_size = (plain - source).abs().mean().item()  # how far the plain edit moved from the source
    moved = (steady - plain).abs().mean().item()  # how far walkreg moved from the plain edit
    print(
        f"flicker plain {flicker_plain:.4f} walkreg {flicker_walkreg:.4f} (source {flicker(source, source):.4f}); "
        f"|plain - source| {edit_size:.4f}, |walkreg - plain| {moved:.4f}, "
        f"|walkreg - source| {(steady - source).abs().mean():.4f}"
    )
    assert flicker_walkreg < 0.9 * flicker_plain
    assert moved < 0.5 * edit_size  # still the plain edit, not a copy of the source nor a different picture
