"""Effect of walkreg on a real diffusion edit: the small img2img model trained here, on a clip it never saw.

Flicker is the OpenCV DIS-flow warp error between consecutive output frames with the flow taken from the *source*
clip (:func:`walkreg.flow.flow_warp_error`, Lai et al. 2018); it does not use the CRW encoder at all.
``bench/diffusion_effect.py`` measures the same over more clips, layouts and settings.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pytest
import torch


pytest.importorskip("diffusers")
pytest.importorskip("cv2")

from testing_utils import CLIPS  # noqa: E402

from walkreg.features import create_features  # noqa: E402
from walkreg.flow import flow_warp_error  # noqa: E402
from walkreg.pipelines import CorrespondenceCache, WalkBackGuidance, WalkRegCallback  # noqa: E402
from walkreg.pipelines.tiny_diffusion import load_tiny_diffusion  # noqa: E402
from walkreg.video import read_video  # noqa: E402


def flicker(source: torch.Tensor, output: torch.Tensor) -> float:
    """Mean DIS-flow warp error of consecutive output frames along the source's flow (lower is steadier)."""
    return float(
        np.mean(
            [flow_warp_error((source[t], source[t + 1]), (output[t], output[t + 1])) for t in range(len(output) - 1)]
        )
    )


@pytest.fixture(scope="module")
def edit():
    source = read_video(CLIPS / "carphone.mp4", max_frames=6, size=(64, 80))  # held out from the model's training
    pipe, embeds = load_tiny_diffusion(batch=len(source))
    cache = CorrespondenceCache(create_features("default"), source, show_progress=False)

    def run(*hooks) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(i) for i in range(len(source))]
        with ExitStack() as stack:
            for hook in hooks:
                stack.enter_context(hook.attach(pipe))
            callback = next((h for h in hooks if isinstance(h, WalkRegCallback)), None)
            return pipe(
                image=source,
                strength=0.6,
                num_inference_steps=20,
                guidance_scale=1.0,
                generator=generators,
                output_type="pt",
                callback_on_step_end=callback,
                **embeds,
            ).images

    return source, cache, run


def test_the_callback_and_the_guidance_each_cut_the_flicker_of_a_real_diffusion_edit(edit):
    source, cache, run = edit
    plain = run()
    outputs = {
        "callback": run(WalkRegCallback(cache=cache, weight=0.5)),
        "guidance": run(WalkBackGuidance(cache=cache)),
        "both": run(WalkRegCallback(cache=cache, weight=0.5), WalkBackGuidance(cache=cache)),
    }
    before = flicker(source, plain)
    edit_size = (plain - source).abs().mean().item()  # how far the plain edit moved from the source
    cuts = {name: 1 - flicker(source, out) / before for name, out in outputs.items()}
    moved = {name: (out - plain).abs().mean().item() for name, out in outputs.items()}
    print(f"flicker plain {before:.4f} (source {flicker(source, source):.4f}); |plain - source| {edit_size:.4f}")
    print({name: f"cut {100 * cuts[name]:.1f}%, moved {moved[name]:.4f}" for name in outputs})
    assert flicker(source, plain) > 2 * flicker(source, source)  # the model's edit does flicker
    assert cuts["callback"] > 0.6 and cuts["guidance"] > 0.25 and cuts["both"] > 0.5
    for name, out in outputs.items():  # closer to the plain edit than that is to the source, and not the source
        assert moved[name] < 0.8 * edit_size and (out - source).abs().mean() > 0.7 * edit_size
