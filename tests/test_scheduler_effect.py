"""Every scheduler walkreg supports must carry the edit, measured on a real clip with tiny offline pipelines.

For each scheduler, on the same clip, seeds and pipeline as DDIM:

- ``weight=0`` with the tap attached is bit-exact with the plain pipeline;
- ``weight=1`` on every step cuts the output's flicker (DIS-flow warp error along the *source's* flow, independent of
  CRW) by at least as much as with DDIM (1 point of slack);
- an edit made at the *first* step only survives to the final latents: ``survival = 1 - r(edited) / r(plain)``, where
  ``r(z) = |P(z) - z| / |z|`` is how far the final latents are from their own propagation ``P`` along the source
  transitions. A scheduler that rebuilds its next sample from state walkreg did not edit scores ~0 here (PNDM did
  before its adapter wrote the saved sample). Schedulers that draw fresh noise at every step (DDPM, LCM, Euler
  ancestral, CogVideoX DPM) dilute an early edit by design, so they are held to a lower share of DDIM's survival.

Time-compressed pipelines (Wan, CogVideoX) are measured on the output frames that stand for their latent frames.

``bench/scheduler_effect.py`` prints the same measures as a table, with the history writes switched off as an
ablation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch


diffusers = pytest.importorskip("diffusers")
pytest.importorskip("cv2")

from test_pipelines import embeds, run_wan, tiny_cogvideox, tiny_sd_img2img, tiny_wan  # noqa: E402
from testing_utils import CLIPS, tiny_encoder  # noqa: E402

from walkreg.flow import flow_warp_error  # noqa: E402
from walkreg.pipelines import CorrespondenceCache, WalkRegCallback, infer_layout, propagate_denoised  # noqa: E402
from walkreg.pipelines.schedules import SUPPORTED_SCHEDULERS  # noqa: E402
from walkreg.video import read_video  # noqa: E402


STEPS = 10


@dataclass(frozen=True)
class Case:
    """One scheduler in one pipeline.

    Attributes:
        pipeline: ``"sd"`` (per-frame SD img2img, 6 frames of ``cups.mp4`` at 32x48), ``"wan"`` or ``"cogvideox"``
            (x4 time compression, 9 frames at 32x48).
        scheduler: builds the scheduler from the pipeline's own default scheduler config.
        strength: img2img strength (PNDM's PRK mode counts its Runge-Kutta steps from the start of the schedule, so
            it runs the whole schedule).
        reference: the case it is compared with: the pipeline's default scheduler (DDIM for SD and CogVideoX, UniPC
            with flow sigmas for Wan) at the same strength.
        survival_share: the least share of the reference's first-step survival it must keep. 0.5 by default (an
            edit a scheduler throws away keeps ~0: PNDM kept 0.5 % of DDIM's before its adapter, UniPC 32 %); 0.2
            for schedulers that draw fresh noise at every step (DDPM, LCM, Euler ancestral, CogVideoX DPM), which
            dilutes an early edit by design; 0.15 for FlowMatch Euler, whose first-order velocity steps keep no
            ``x0`` history, so the edit lasts only as far as the model re-infers it (the random tiny transformer
            hardly does).
        decoded_flicker: whether the decoded output's flicker is compared. Not for the tiny Wan pipeline, whose
            random video VAE decodes nearly flat frames: its output moves by < 0.01 (of 1) whatever the latents do,
            so its flicker changes by about 1 % for every scheduler and only the latent measures can fail.
    """

    pipeline: str
    scheduler: Callable
    strength: float = 0.7
    reference: str = "DDIM"
    survival_share: float = 0.5
    decoded_flicker: bool = True


D = diffusers
CASES = {
    "DDIM": Case("sd", lambda c: D.DDIMScheduler.from_config(c)),
    "DDIM strength 1": Case("sd", lambda c: D.DDIMScheduler.from_config(c), strength=1.0),
    "DDPM": Case("sd", lambda c: D.DDPMScheduler.from_config(c), survival_share=0.2),
    "PNDM (PLMS)": Case("sd", lambda c: D.PNDMScheduler.from_config(c, skip_prk_steps=True)),
    "PNDM (PRK)": Case(
        "sd", lambda c: D.PNDMScheduler.from_config(c, skip_prk_steps=False), 1.0, reference="DDIM strength 1"
    ),
    "LCM": Case("sd", lambda c: D.LCMScheduler.from_config(c), survival_share=0.2),
    "Euler": Case("sd", lambda c: D.EulerDiscreteScheduler.from_config(c)),
    "Euler ancestral": Case("sd", lambda c: D.EulerAncestralDiscreteScheduler.from_config(c), survival_share=0.2),
    "DPM-Solver++ multistep": Case("sd", lambda c: D.DPMSolverMultistepScheduler.from_config(c)),
    "DPM-Solver multistep": Case(
        "sd",
        lambda c: D.DPMSolverMultistepScheduler.from_config(
            c, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"
        ),
    ),
    "UniPC": Case("sd", lambda c: D.UniPCMultistepScheduler.from_config(c)),
    "CogVideoX DDIM": Case("cogvideox", lambda c: D.CogVideoXDDIMScheduler.from_config(c)),
    "CogVideoX DPM": Case(
        "cogvideox",
        lambda c: D.CogVideoXDPMScheduler.from_config(c),
        reference="CogVideoX DDIM",
        survival_share=0.2,
    ),
    "Wan UniPC (flow)": Case("wan", lambda c: D.UniPCMultistepScheduler.from_config(c), decoded_flicker=False),
    "FlowMatch Euler": Case(
        "wan",
        lambda c: D.FlowMatchEulerDiscreteScheduler(shift=c["flow_shift"]),
        reference="Wan UniPC (flow)",
        survival_share=0.15,
        decoded_flicker=False,
    ),
}
REFERENCES = {case.reference for case in CASES.values()} | {"DDIM strength 1"}


def flicker(source: torch.Tensor, output: torch.Tensor) -> float:
    """Mean DIS-flow warp error of consecutive ``(T, 3, H, W)`` output frames along the source's flow."""
    pairs = range(len(output) - 1)
    return float(np.mean([flow_warp_error((source[t], source[t + 1]), (output[t], output[t + 1])) for t in pairs]))


@functools.cache
def setting(pipeline: str):
    """``(pipe, source frames, correspondence cache, default scheduler config)`` for one pipeline kind, built
    once."""
    if pipeline == "sd":
        pipe, source = tiny_sd_img2img(), read_video(CLIPS / "cups.mp4", max_frames=6, size=(32, 48))
    else:
        pipe = tiny_wan() if pipeline == "wan" else tiny_cogvideox()
        source = read_video(CLIPS / "cups.mp4", max_frames=9, size=(32, 48))
    return pipe, source, CorrespondenceCache(tiny_encoder(), source, show_progress=False), pipe.scheduler.config


def run(case: Case, callback: WalkRegCallback | None = None) -> torch.Tensor:
    """Final latents of the pipeline with ``case``'s scheduler (fresh), seeded, with ``callback`` attached."""
    pipe, source, _, config = setting(case.pipeline)
    pipe.scheduler = case.scheduler(config)
    if case.pipeline == "sd":

        def call(callback=None):
            generators = [torch.Generator().manual_seed(i) for i in range(len(source))]
            return pipe(
                image=source,
                strength=case.strength,
                num_inference_steps=STEPS,
                guidance_scale=2.0,
                generator=generators,
                output_type="latent",
                callback_on_step_end=callback,
                **embeds(len(source)),
            ).images

    else:
        call = functools.partial(run_wan, pipe, source, steps=STEPS, strength=case.strength, output_type="latent")
    if callback is None:
        return call()
    with callback.attach(pipe):
        return call(callback=callback)


def decode(case: Case, latents: torch.Tensor) -> torch.Tensor:
    """Final latents -> ``(T, 3, H, W)`` frames in [0, 1], as the pipeline decodes them."""
    pipe = setting(case.pipeline)[0]
    with torch.no_grad():
        if case.pipeline == "sd":
            pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        elif case.pipeline == "cogvideox":
            pixels = pipe.decode_latents(latents)[0].transpose(0, 1)
        else:
            vae = pipe.vae
            mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
            std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
            pixels = vae.decode(latents * std + mean).sample[0].transpose(0, 1)
    return ((pixels.float() + 1) / 2).clamp(0, 1)


def latent_frames(case: Case) -> list[int]:
    """The output frames that stand for the latent frames: all of them without time compression; with it, one per
    latent frame (walkreg aligns latent frames; the frames a video VAE decodes from one latent frame are its own)."""
    pipe, source, _, _ = setting(case.pipeline)
    layout = infer_layout(pipe)
    return [layout.source_frame(j) for j in range(layout.num_latent_frames(len(source)))]


def propagation_residual(case: Case, latents: torch.Tensor) -> float:
    """``|P(z) - z| / |z|``: how far the latents are from their own propagation along the source transitions."""
    pipe, _, cache, _ = setting(case.pipeline)
    layout = infer_layout(pipe)
    frames = layout.to_frames(latents).float()
    blended = propagate_denoised(frames, cache.for_latents(frames, layout), weight=1.0)
    return float((blended - frames).norm() / frames.norm())


@functools.cache
def measure(name: str) -> dict:
    """The effect of walkreg with scheduler ``name`` (a key of ``CASES``)."""
    case = CASES[name]
    _, source, cache, _ = setting(case.pipeline)
    callback = functools.partial(WalkRegCallback, cache=cache, weight=1.0)
    plain = run(case)
    zero = run(case, WalkRegCallback(cache=cache, weight=0.0))
    full = run(case, callback(end=1.0))
    first_step = run(case, callback(end=0.5 / STEPS))  # acts at the first step only
    kept = latent_frames(case)
    plain_frames, full_frames = decode(case, plain)[kept], decode(case, full)[kept]
    before, after = flicker(source[kept], plain_frames), flicker(source[kept], full_frames)
    residual = propagation_residual(case, plain)
    return {
        "bit_exact": torch.equal(zero, plain),
        "flicker_plain": before,
        "flicker_walkreg": after,
        "flicker_cut": 1 - after / before,
        "distance": float((full_frames - plain_frames).abs().mean()),
        "residual_plain": residual,
        "residual_walkreg": propagation_residual(case, full),
        "survival": 1 - propagation_residual(case, first_step) / residual,
    }


def test_every_supported_scheduler_has_an_effect_case():
    covered = {type(case.scheduler(setting(case.pipeline)[3])).__name__ for case in CASES.values()}
    assert covered == set(SUPPORTED_SCHEDULERS)


@pytest.mark.parametrize("name", [name for name in CASES if name not in REFERENCES])
def test_the_scheduler_carries_the_edit_as_well_as_ddim(name):
    case, got = CASES[name], measure(name)
    reference = measure(case.reference)
    print(f"{name}: {got}\n{case.reference}: {reference}")
    assert got["bit_exact"]
    if case.decoded_flicker:
        assert got["flicker_cut"] >= reference["flicker_cut"] - 0.01
    assert got["residual_walkreg"] < 0.1 * got["residual_plain"]
    assert got["survival"] >= case.survival_share * reference["survival"]


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_the_reference_schedulers_work(name):
    case, got = CASES[name], measure(name)
    assert got["bit_exact"] and got["residual_walkreg"] < 0.1 * got["residual_plain"] and got["survival"] > 0.3
    assert got["flicker_cut"] > 0.2 or not case.decoded_flicker
