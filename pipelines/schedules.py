"""Scheduler adapters: denoised estimates from a Diffusers scheduler step, edits written where the scheduler keeps
its history, and a tap that sees every step before and after it runs.

Every scheduler steps a noisy sample ``x`` that holds the clean latents ``x0`` as
``scale * x = alpha * x0 + sigma * noise`` (:class:`NoiseLevel`; ``scale = 1`` except for Karras-style samples, which
are ``x0 + s * noise`` and so have ``scale = alpha = 1 / sqrt(1 + s^2)``). The model output turns into ``x0`` and back:

- ``epsilon``: ``x0 = (scale * x - sigma * eps) / alpha``;  ``v_prediction``: ``x0 = alpha * scale * x - sigma * v``;
- ``sample``: ``x0 = output``;  ``flow_prediction``: ``x0 = x - sigma * v`` (with ``alpha = 1 - sigma``).

An edit of ``x0`` by ``delta`` after a step is an edit of the returned sample by ``alpha / scale * delta`` (what
:class:`~walkreg.pipelines.WalkRegCallback` adds to the latents), but several schedulers rebuild their next sample
from state they kept, which would throw that edit away. Each adapter knows its scheduler's ``step`` signature, how to
read ``(alpha, sigma)``, and which history to edit so the scheduler carries the edit on:

=================================================  ==================================================================
scheduler                                          history the edit is written into
=================================================  ==================================================================
DDIM, DDPM, CogVideoX DDIM, Euler, Euler           none (the next step starts from the edited latents)
ancestral, FlowMatch Euler, LCM
PNDM (PLMS and PRK)                                the saved sample that the next (sub-)step restarts from; the
                                                   epsilon history needs nothing (an edit along ``x0`` leaves
                                                   ``eps`` unchanged)
DPM-Solver multistep (``++``: x0 history)          the last stored ``x0``
UniPC multistep                                    the last stored ``x0`` and the sample its corrector restarts from
CogVideoX DPM                                      the previous ``x0`` that the pipeline passes to the next step
=================================================  ==================================================================

Anything else is refused with an error that lists these.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseLevel:
    """``scale * sample = alpha * x0 + sigma * noise`` for the sample a step starts from."""

    alpha: float
    sigma: float
    scale: float = 1.0

    @property
    def signal(self) -> float:
        """The factor of ``x0`` in the sample itself: adding ``signal * delta`` to the sample moves ``x0`` by
        ``delta``."""
        return self.alpha / self.scale


def to_denoised(output: torch.Tensor, sample: torch.Tensor, level: NoiseLevel, kind: str) -> torch.Tensor:
    """Model output -> denoised estimate ``x0`` (same shape)."""
    x = level.scale * sample
    if kind == "epsilon":
        return (x - level.sigma * output) / level.alpha
    if kind == "v_prediction":
        return level.alpha * x - level.sigma * output
    if kind == "flow_prediction":
        return x - level.sigma * output
    return output


def from_denoised(x0: torch.Tensor, sample: torch.Tensor, level: NoiseLevel, kind: str) -> torch.Tensor:
    """Inverse of :func:`to_denoised`: the model output whose denoised estimate is ``x0``."""
    x = level.scale * sample
    if kind == "epsilon":
        return (x - level.alpha * x0) / level.sigma
    if kind == "v_prediction":
        return (level.alpha * x - x0) / level.sigma
    if kind == "flow_prediction":
        return (x - x0) / level.sigma
    return x0


class SchedulerAdapter:
    """The ``alphas_cumprod`` schedulers without history: DDIM, DDPM, CogVideoX DDIM.

    Subclasses override the noise level (:meth:`level`), the output <-> ``x0`` maps and the history hooks
    (:meth:`before_step`, :meth:`after_step`, :meth:`edit_history`).
    """

    names: tuple[str, ...] = ("DDIMScheduler", "DDPMScheduler", "CogVideoXDDIMScheduler")
    kinds: tuple[str, ...] = ("epsilon", "v_prediction", "sample")

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.signature = inspect.signature(type(scheduler).step)
        self.kind = self.prediction_type()
        self.reset()

    def prediction_type(self) -> str:
        kind = self.scheduler.config.get("prediction_type", "epsilon")
        if kind not in self.kinds:
            raise ValueError(
                f"walkreg does not support `prediction_type` {kind!r} of {type(self.scheduler).__name__}; "
                f"it supports {', '.join(self.kinds)}."
            )
        return kind

    # -- noise levels --------------------------------------------------------------------------------------------
    def num_levels(self) -> int:
        """Entries of the schedule the step index runs over (a sample past the last one is clean)."""
        return len(self.scheduler.timesteps)

    def level(self, index: int, timestep=None) -> NoiseLevel:
        """Noise level of the sample the step at ``index`` (with ``timestep``) starts from."""
        t = self.scheduler.timesteps[index] if timestep is None else timestep
        a = float(self.scheduler.alphas_cumprod[int(t)])
        return NoiseLevel(a**0.5, (1 - a) ** 0.5)

    def next_signal(self, index: int) -> float:
        """``x0``'s factor in the sample that step ``index`` returns, as the next step reads it (1 after the
        last)."""
        return self.level(index + 1).signal if index + 1 < self.num_levels() else 1.0

    # -- output <-> x0 -------------------------------------------------------------------------------------------
    def denoised(self, output: torch.Tensor, sample: torch.Tensor, level: NoiseLevel, timestep) -> torch.Tensor:
        return to_denoised(output, sample, level, self.kind)

    def output(self, x0: torch.Tensor, sample: torch.Tensor, level: NoiseLevel, timestep) -> torch.Tensor:
        return from_denoised(x0, sample, level, self.kind)

    # -- history ---------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget any state kept for a run (at construction, and when a new schedule begins)."""

    def before_step(self, arguments: dict) -> None:
        """Change the step's bound ``arguments`` in place before the real step runs."""

    def after_step(self, arguments: dict, level: NoiseLevel) -> None:
        """Note what the scheduler kept from the step just run (whose sample had noise ``level``)."""

    def edit_history(self, delta: torch.Tensor) -> None:
        """``x0`` of the last step moved by ``delta`` (the latents were moved to match): edit the kept history
        too."""


class PNDMAdapter(SchedulerAdapter):
    """PNDM in PLMS and PRK mode. Its second PLMS step, and every PRK sub-step, restart from a sample saved at an
    earlier step; the edit is added to that saved sample at its own noise level."""

    names = ("PNDMScheduler",)
    kinds = ("epsilon", "v_prediction")

    def reset(self) -> None:
        self._saved_signal = None

    def after_step(self, arguments: dict, level: NoiseLevel) -> None:
        if self.scheduler.cur_sample is arguments["sample"]:  # saved at this step
            self._saved_signal = level.signal

    def edit_history(self, delta: torch.Tensor) -> None:
        saved = self.scheduler.cur_sample
        if saved is not None and self._saved_signal is not None and saved.shape == delta.shape:
            self.scheduler.cur_sample = saved + (self._saved_signal * delta).to(saved.dtype)


class LCMAdapter(SchedulerAdapter):
    """LCM: its denoised estimate is ``c_out * x0_pred + c_skip * sample`` (the consistency boundary condition)."""

    names = ("LCMScheduler",)

    def denoised(self, output, sample, level, timestep):
        c_skip, c_out = self.scheduler.get_scalings_for_boundary_condition_discrete(timestep)
        return c_out * to_denoised(output, sample, level, self.kind) + c_skip * sample

    def output(self, x0, sample, level, timestep):
        c_skip, c_out = self.scheduler.get_scalings_for_boundary_condition_discrete(timestep)
        return from_denoised((x0 - c_skip * sample) / c_out, sample, level, self.kind)


class CogVideoXDPMAdapter(SchedulerAdapter):
    """CogVideoX DPM: ``step(model_output, old_pred_original_sample, timestep, timestep_back, sample, ...)``; the
    pipeline keeps the previous ``x0`` and passes it back, so the edit is added to it at the next step."""

    names = ("CogVideoXDPMScheduler",)

    def reset(self) -> None:
        self._pending = None

    def before_step(self, arguments: dict) -> None:
        pending, self._pending = self._pending, None
        old = arguments.get("old_pred_original_sample")
        if pending is not None and old is not None and old.shape == pending.shape:
            arguments["old_pred_original_sample"] = old + pending.to(old.dtype)

    def edit_history(self, delta: torch.Tensor) -> None:
        self._pending = delta if self._pending is None else self._pending + delta


class SigmaAdapter(SchedulerAdapter):
    """Schedulers indexed by ``sigmas``: variance-preserving (DPM-Solver, UniPC), flow matching (FlowMatch Euler,
    ``use_flow_sigmas``) and Karras-scaled samples ``x0 + s * noise`` (Euler, Euler ancestral)."""

    names = ("FlowMatchEulerDiscreteScheduler",)
    kinds = ("epsilon", "v_prediction", "sample", "flow_prediction")
    karras = False

    def prediction_type(self) -> str:
        if type(self.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler":
            return "flow_prediction"
        return super().prediction_type()

    def num_levels(self) -> int:
        return len(self.scheduler.sigmas)

    def level(self, index: int, timestep=None) -> NoiseLevel:
        s = float(self.scheduler.sigmas[index])
        if self.kind == "flow_prediction" or self.scheduler.config.get("use_flow_sigmas", False):
            return NoiseLevel(1 - s, s)
        alpha = 1 / (s * s + 1) ** 0.5
        return NoiseLevel(alpha, s * alpha, alpha if self.karras else 1.0)


class EulerAdapter(SigmaAdapter):
    names = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler")
    karras = True


class DPMSolverAdapter(SigmaAdapter):
    """DPM-Solver multistep: ``dpmsolver++`` keeps ``x0`` history (edited); ``dpmsolver`` keeps ``eps``
    (unchanged by an edit along ``x0``)."""

    names = ("DPMSolverMultistepScheduler",)

    def keeps_x0(self) -> bool:
        return "++" in str(self.scheduler.config.get("algorithm_type", ""))

    def edit_history(self, delta: torch.Tensor) -> None:
        outputs = self.scheduler.model_outputs
        if self.keeps_x0() and outputs and outputs[-1] is not None and outputs[-1].shape == delta.shape:
            outputs[-1] = outputs[-1] + delta.to(outputs[-1].dtype)


class UniPCAdapter(DPMSolverAdapter):
    """UniPC multistep: its corrector rebuilds the current sample from the previous sample and the stored model
    outputs, so both get the edit."""

    names = ("UniPCMultistepScheduler",)

    def keeps_x0(self) -> bool:
        return bool(self.scheduler.predict_x0)

    def reset(self) -> None:
        self._last_signal = None

    def after_step(self, arguments: dict, level: NoiseLevel) -> None:
        self._last_signal = level.signal  # UniPC keeps this step's (corrected) sample as `last_sample`

    def edit_history(self, delta: torch.Tensor) -> None:
        super().edit_history(delta)
        last = self.scheduler.last_sample
        if last is not None and self._last_signal is not None and last.shape == delta.shape:
            self.scheduler.last_sample = last + (self._last_signal * delta).to(last.dtype)


ADAPTERS: tuple[type[SchedulerAdapter], ...] = (
    SchedulerAdapter,
    PNDMAdapter,
    LCMAdapter,
    CogVideoXDPMAdapter,
    SigmaAdapter,
    EulerAdapter,
    DPMSolverAdapter,
    UniPCAdapter,
)
SUPPORTED_SCHEDULERS = tuple(sorted(name for adapter in ADAPTERS for name in adapter.names))


def adapter_for(scheduler) -> SchedulerAdapter:
    """The :class:`SchedulerAdapter` for ``scheduler`` (by class name); other schedulers are refused."""
    name = type(scheduler).__name__
    for adapter in ADAPTERS:
        if name in adapter.names:
            return adapter(scheduler)
    raise ValueError(f"walkreg does not support the scheduler {name}; it supports {', '.join(SUPPORTED_SCHEDULERS)}.")


@dataclass
class StepRecord:
    """What the tap saw at one scheduler step: ``denoised`` (after any pre-step transform), the factor of ``x0`` in
    the returned sample (``signal_scale``) and the step's index in the schedule."""

    denoised: torch.Tensor
    signal_scale: float
    step_index: int


# a pre-step transform: (denoised x0, noisy sample, step_index) -> new x0 (or the same tensor to leave it)
PreStep = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


class SchedulerTap:
    """Wraps ``scheduler.step`` of one scheduler instance (an instance attribute, removed by :meth:`detach`).

    Before the real step it turns the model output into ``x0``, lets each registered pre-step transform change
    ``x0`` (the walk-back guidance) and hands the matching model output to the scheduler; after it, it keeps the
    :class:`StepRecord` that :class:`~walkreg.pipelines.WalkRegCallback` reads, and :meth:`edit_history` writes a
    post-step edit where the scheduler keeps its history. With no transforms and no edits the scheduler receives
    exactly the tensors it was given, so the pipeline's result is unchanged bit for bit.

    A new schedule (``set_timesteps``) starts a new run: the record and any kept state of an earlier, perhaps
    interrupted, run are dropped. A tap attached with ``once_per_run=True`` also removes itself there.
    """

    def __init__(self, scheduler, once_per_run: bool = False):
        self.adapter = adapter_for(scheduler)
        self.scheduler = scheduler
        self.transforms: list[PreStep] = []
        self.record: StepRecord | None = None
        self.once_per_run = once_per_run
        self._step = type(scheduler).step
        self._run = scheduler.timesteps
        self._last_index: int | None = None

    def attach(self) -> SchedulerTap:
        if "step" in vars(self.scheduler):
            raise RuntimeError(
                f"{type(self.scheduler).__name__}.step is already wrapped (by walkreg or another tool)."
            )
        # keep step's signature visible: pipelines decide from it whether to pass `generator` and `eta`
        self.scheduler.step = functools.update_wrapper(
            functools.partial(self._wrapped), self._step.__get__(self.scheduler)
        )
        self.scheduler._walkreg_tap = self
        return self

    def detach(self) -> None:
        if vars(self.scheduler).get("_walkreg_tap") is self:
            del self.scheduler.step
            del self.scheduler._walkreg_tap

    @property
    def attached(self) -> bool:
        return vars(self.scheduler).get("_walkreg_tap") is self

    def _new_run(self) -> bool:
        """Whether the scheduler's schedule changed since the last step (and if so, forget the last run)."""
        if self.scheduler.timesteps is self._run:
            return False
        self._run, self._last_index, self.record = self.scheduler.timesteps, None, None
        self.adapter.reset()
        return True

    def step_index(self, timestep) -> int:
        """Index of ``timestep``'s step in the schedule: the scheduler's own counter where it keeps one, otherwise
        the first matching entry after the previous step (schedules may repeat a timestep)."""
        index = getattr(self.scheduler, "step_index", None)
        if index is None and getattr(self.scheduler, "begin_index", None) is not None:
            index = self.scheduler.begin_index
        if index is None and hasattr(self.scheduler, "index_for_timestep"):
            index = self.scheduler.index_for_timestep(timestep)
        if index is not None:
            return int(index)
        timesteps = self.scheduler.timesteps
        start = 0 if self._last_index is None else self._last_index + 1
        t = torch.as_tensor(timestep, device=timesteps.device)
        hits = torch.nonzero(timesteps[start:] == t)
        if len(hits):
            return start + int(hits[0, 0])
        return int(torch.nonzero(timesteps == t)[0, 0])

    def _wrapped(self, *args, **kwargs):
        if self._new_run() and self.once_per_run:
            self.detach()
            return self._step(self.scheduler, *args, **kwargs)
        bound = self.adapter.signature.bind(self.scheduler, *args, **kwargs)
        arguments = bound.arguments
        output, timestep, sample = arguments["model_output"], arguments["timestep"], arguments["sample"]
        index = self.step_index(timestep)
        level = self.adapter.level(index, timestep)
        self.adapter.before_step(arguments)
        denoised = self.adapter.denoised(output.float(), sample.float(), level, timestep)
        original = denoised
        for transform in self.transforms:
            denoised = transform(denoised, sample, index)
        if denoised is not original:
            arguments["model_output"] = self.adapter.output(denoised, sample.float(), level, timestep).to(output.dtype)
        out = self._step(*bound.args, **bound.kwargs)
        self.adapter.after_step(arguments, level)
        self.record = StepRecord(denoised, self.adapter.next_signal(index), index)
        self._last_index = index
        return out

    def edit_history(self, delta: torch.Tensor) -> None:
        """``x0`` of the last step moved by ``delta`` after the step (and the returned latents with it): write the
        edit into the scheduler's history so its next step does not undo it."""
        self.adapter.edit_history(delta)


@contextmanager
def tapped(scheduler):
    """``with tapped(pipe.scheduler) as tap: ...`` -- attach a :class:`SchedulerTap` for the block (or reuse the one
    already attached); the block's end or an exception in it removes it."""
    tap = getattr(scheduler, "_walkreg_tap", None)
    if tap is not None and tap.attached and not tap.once_per_run:
        yield tap
        return
    if tap is not None:
        tap.detach()  # a run-scoped tap left behind by an interrupted run
    tap = SchedulerTap(scheduler).attach()
    try:
        yield tap
    finally:
        tap.detach()
