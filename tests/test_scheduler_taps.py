"""The scheduler tap: refusals, step's signature, and what is left behind when a pipeline call fails."""

from __future__ import annotations

import inspect

import pytest
import torch


diffusers = pytest.importorskip("diffusers")

from test_pipelines import run_sd, tiny_sd_img2img, video  # noqa: E402
from testing_utils import tiny_encoder  # noqa: E402

from walkreg.pipelines import WalkBackGuidance, WalkRegCallback  # noqa: E402
from walkreg.pipelines.schedules import SUPPORTED_SCHEDULERS, SchedulerTap, tapped  # noqa: E402


class Boom(RuntimeError):
    pass


def failing_at(step: int):
    """A user's step-end callback that raises at ``step``."""

    def callback(pipeline, step_index, timestep, kwargs):
        if step_index == step:
            raise Boom(f"step {step}")
        return kwargs

    return callback


def chain(*callbacks):
    """Step-end callbacks run one after the other, as a user chains walkreg with their own."""

    def chained(pipeline, step_index, timestep, kwargs):
        for callback in callbacks:
            kwargs = callback(pipeline, step_index, timestep, kwargs)
        return kwargs

    return chained


def is_clean(scheduler) -> bool:
    return "step" not in vars(scheduler) and "_walkreg_tap" not in vars(scheduler)


def test_unsupported_schedulers_are_refused_with_the_supported_list():
    with pytest.raises(ValueError, match="does not support the scheduler HeunDiscreteScheduler; it supports .*DDIM"):
        SchedulerTap(diffusers.HeunDiscreteScheduler())
    assert len(SUPPORTED_SCHEDULERS) == 11 and "CogVideoXDPMScheduler" in SUPPORTED_SCHEDULERS
    with pytest.raises(ValueError, match="`prediction_type` 'flow_prediction' of DDIMScheduler"):
        SchedulerTap(diffusers.DDIMScheduler(prediction_type="flow_prediction"))


def test_the_tap_keeps_the_signature_pipelines_read():
    scheduler = diffusers.DDPMScheduler()
    before = inspect.signature(scheduler.step)
    with tapped(scheduler):
        assert inspect.signature(scheduler.step) == before  # so pipelines still pass `generator` (and `eta`)
    assert is_clean(scheduler)


@pytest.mark.parametrize("attached", [True, False], ids=["attached", "plain"])
def test_a_failing_call_leaves_the_scheduler_clean_and_the_callback_reusable(attached):
    pipe, frames = tiny_sd_img2img(), video(3, 32)
    fresh = lambda: WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)  # noqa: E731

    def call(callback, user=None):
        chained = callback if user is None else chain(callback, user)
        if not attached:
            return run_sd(pipe, frames, chained, steps=4)
        with callback.attach(pipe):
            return run_sd(pipe, frames, chained, steps=4)

    expected = call(fresh())
    callback = fresh()
    with pytest.raises(Boom):
        call(callback, failing_at(1))
    if attached:
        assert is_clean(pipe.scheduler)
    plain = run_sd(pipe, frames, steps=4)
    assert is_clean(pipe.scheduler)  # a tap left by the plain form passes the next run through and removes itself
    assert torch.equal(plain, run_sd(tiny_sd_img2img(), frames, steps=4))
    assert torch.equal(call(callback), expected)
    assert is_clean(pipe.scheduler)


def test_an_exception_inside_the_denoiser_restores_step_and_guidance():
    pipe, frames = tiny_sd_img2img(), video(3, 32)
    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)
    guidance = WalkBackGuidance(weight=0.05, end=1.0, cache=callback.cache)
    calls = []

    def interrupt(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    handle = pipe.unet.register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        with callback.attach(pipe), guidance.attach(pipe):
            run_sd(pipe, frames, callback, steps=4)
    handle.remove()
    assert is_clean(pipe.scheduler) and callback._tap is None
    assert torch.equal(run_sd(pipe, frames, steps=4), run_sd(tiny_sd_img2img(), frames, steps=4))


def test_an_interrupted_run_is_not_reused():
    """``pipe._interrupt`` skips the remaining steps and their callbacks; the next run starts afresh."""
    pipe, frames = tiny_sd_img2img(), video(3, 32)

    def stop(pipeline, step_index, timestep, kwargs):
        if step_index == 1:
            pipeline._interrupt = True
        return kwargs

    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)
    run_sd(pipe, frames, chain(callback, stop), steps=4)
    assert torch.equal(run_sd(pipe, frames, steps=4), run_sd(tiny_sd_img2img(), frames, steps=4))
    assert is_clean(pipe.scheduler)
    again = run_sd(pipe, frames, callback, steps=4)
    assert torch.equal(
        again, run_sd(pipe, frames, WalkRegCallback(cache=callback.cache, weight=0.8, end=1.0), steps=4)
    )
