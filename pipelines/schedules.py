"""Denoised estimates from a Diffusers scheduler step, and a tap that sees every step before and after it runs.

Every scheduler step receives the pipeline's final (guidance-combined) model output, the timestep and the noisy
sample ``x = alpha * x0 + sigma * noise``. :func:`noise_level` reads ``(alpha, sigma)`` from the scheduler so that
the model output can be turned into the denoised estimate ``x0`` and back:

- ``epsilon``: ``x0 = (x - sigma * eps) / alpha``;  ``v_prediction``: ``x0 = alpha * x - sigma * v``;
- ``sample``: ``x0 = output``;  ``flow_prediction``: ``x0 = x - sigma * v`` (with ``alpha = 1 - sigma``).

Supported schedulers: the ``alphas_cumprod`` family (DDIM, DDPM, PNDM, LCM, CogVideoX DDIM / DPM) and the ``sigmas``
family (UniPC and DPM-Solver multistep, flow or not; FlowMatch Euler). Karras-style schedulers whose samples are
scaled by ``sqrt(1 + sigma^2)`` (Euler, Heun, LMS...) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch


_ALPHAS_CUMPROD = (
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LCMScheduler",
    "CogVideoXDDIMScheduler",
    "CogVideoXDPMScheduler",
)
_SIGMAS = ("UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "FlowMatchEulerDiscreteScheduler")


def _family(scheduler) -> str:
    name = type(scheduler).__name__
    if name in _ALPHAS_CUMPROD:
        return "alphas_cumprod"
    if name in _SIGMAS:
        return "sigmas"
    raise ValueError(
        f"walkreg cannot read the noise level of {name}; "
        f"supported schedulers are {', '.join(_ALPHAS_CUMPROD + _SIGMAS)}."
    )


def prediction_type(scheduler) -> str:
    if type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler":
        return "flow_prediction"
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction", "sample", "flow_prediction"):
        raise ValueError(f"walkreg does not support `prediction_type` {kind!r} of {type(scheduler).__name__}.")
    return kind


def _step_index(scheduler, timestep) -> int:
    index = getattr(scheduler, "step_index", None)
    if index is not None:
        return int(index)
    begin = getattr(scheduler, "begin_index", None)
    if begin is not None:
        return int(begin)
    return int(
        torch.nonzero(scheduler.timesteps == torch.as_tensor(timestep, device=scheduler.timesteps.device))[0, 0]
    )


def noise_level(scheduler, timestep, step_index: int | None = None) -> tuple[float, float]:
    """``(alpha, sigma)`` of the sample the scheduler is about to step from (``step_index`` for sigma schedulers)."""
    if _family(scheduler) == "alphas_cumprod":
        a = float(scheduler.alphas_cumprod[int(timestep)])
        return a**0.5, (1 - a) ** 0.5
    index = _step_index(scheduler, timestep) if step_index is None else step_index
    sigma = scheduler.sigmas[index].float()
    if type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler" or scheduler.config.get("use_flow_sigmas", False):
        return float(1 - sigma), float(sigma)
    alpha = 1 / (sigma**2 + 1) ** 0.5
    return float(alpha), float(sigma * alpha)


def next_signal_scale(scheduler, step_index: int) -> float:
    """``alpha`` of the sample that step ``step_index`` returns (1 after the final step): how much ``x0`` it
    carries."""
    index = step_index + 1
    if _family(scheduler) == "sigmas":
        return noise_level(scheduler, None, index)[0] if index < len(scheduler.sigmas) else 1.0
    return noise_level(scheduler, scheduler.timesteps[index])[0] if index < len(scheduler.timesteps) else 1.0


def to_denoised(output: torch.Tensor, sample: torch.Tensor, alpha: float, sigma: float, kind: str) -> torch.Tensor:
    """Model output -> denoised estimate ``x0`` (same shape)."""
    if kind == "epsilon":
        return (sample - sigma * output) / alpha
    if kind == "v_prediction":
        return alpha * sample - sigma * output
    if kind == "flow_prediction":
        return sample - sigma * output
    return output


def from_denoised(x0: torch.Tensor, sample: torch.Tensor, alpha: float, sigma: float, kind: str) -> torch.Tensor:
    """Inverse of :func:`to_denoised`: the model output whose denoised estimate is ``x0``."""
    if kind == "epsilon":
        return (sample - alpha * x0) / sigma
    if kind == "v_prediction":
        return (alpha * sample - x0) / sigma
    if kind == "flow_prediction":
        return (sample - x0) / sigma
    return x0


@dataclass
class StepRecord:
    """What the tap saw at one scheduler step: ``denoised`` (after any pre-step transform), the ``alpha`` of the
    returned sample and the scheduler's step index."""

    denoised: torch.Tensor
    signal_scale: float
    step_index: int


# a pre-step transform: (denoised x0, noisy sample, step_index) -> new x0 (or the same tensor to leave it)
PreStep = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


class SchedulerTap:
    """Wraps ``scheduler.step`` of one scheduler instance (an instance attribute, removed by :meth:`detach`).

    Before the real step it turns the model output into ``x0``, lets each registered pre-step transform change
    ``x0`` (the walk-back guidance) and hands the matching model output to the scheduler; after it, it keeps the
    :class:`StepRecord` that :class:`~walkreg.pipelines.WalkRegCallback` reads. With no transforms the scheduler
    receives exactly the tensors it was given, so the pipeline's result is unchanged bit for bit.
    """

    def __init__(self, scheduler):
        _family(scheduler)
        self.kind = prediction_type(scheduler)
        self.scheduler = scheduler
        self.transforms: list[PreStep] = []
        self.record: StepRecord | None = None
        self._step = type(scheduler).step.__get__(scheduler)

    def attach(self) -> SchedulerTap:
        if "step" in vars(self.scheduler):
            raise RuntimeError(
                f"{type(self.scheduler).__name__}.step is already wrapped (by walkreg or another tool)."
            )
        self.scheduler.step = self._wrapped
        self.scheduler._walkreg_tap = self
        return self

    def detach(self) -> None:
        if vars(self.scheduler).get("_walkreg_tap") is self:
            del self.scheduler.step
            del self.scheduler._walkreg_tap

    def _wrapped(self, model_output, timestep, sample, *args, **kwargs):
        index = _step_index(self.scheduler, timestep)
        alpha, sigma = noise_level(self.scheduler, timestep, index)
        denoised = to_denoised(model_output.float(), sample.float(), alpha, sigma, self.kind)
        original = denoised
        for transform in self.transforms:
            denoised = transform(denoised, sample, index)
        if denoised is not original:
            model_output = from_denoised(denoised, sample.float(), alpha, sigma, self.kind).to(model_output.dtype)
        out = self._step(model_output, timestep, sample, *args, **kwargs)
        self.record = StepRecord(denoised, next_signal_scale(self.scheduler, index), index)
        return out

    def replace_history(self, denoised: torch.Tensor) -> None:
        """Multistep schedulers that keep ``x0`` history (UniPC, DPM-Solver++) rebuild the next sample from it, which
        would undo a post-step edit; this writes the edited ``x0`` into that history."""
        outputs = getattr(self.scheduler, "model_outputs", None)
        keeps_x0 = getattr(self.scheduler, "predict_x0", False) or "++" in str(
            self.scheduler.config.get("algorithm_type", "")
        )
        if outputs and keeps_x0 and outputs[-1] is not None and outputs[-1].shape == denoised.shape:
            outputs[-1] = denoised.to(outputs[-1].dtype)


@contextmanager
def tapped(scheduler):
    """``with tapped(pipe.scheduler) as tap: ...`` -- attach a :class:`SchedulerTap` for the block."""
    tap = getattr(scheduler, "_walkreg_tap", None)
    if tap is not None:
        yield tap
        return
    tap = SchedulerTap(scheduler).attach()
    try:
        yield tap
    finally:
        tap.detach()
