"""``WalkRegCallback``: latent propagation along source CRW transitions, as a Diffusers step-end callback."""

from __future__ import annotations

from contextlib import contextmanager

from diffusers.callbacks import PipelineCallback

from .correspondence import CorrespondenceCache, CorrespondenceConfig
from .latent_propagation import propagate_denoised
from .layouts import infer_layout
from .schedules import SchedulerTap, tapped


def check_step_range(start: float, end: float) -> None:
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"`start` and `end` must satisfy 0 <= start <= end <= 1, but are {start} and {end}.")


def is_active(pipeline, step_index: int, start: float, end: float) -> bool:
    """Whether ``step_index`` falls in the ``[start, end)`` fraction of this call's denoising steps."""
    total = getattr(pipeline, "num_timesteps", None) or len(pipeline.scheduler.timesteps)
    return start * total <= step_index < end * total


class WalkRegCallback(PipelineCallback):
    """Carry each frame's denoised estimate along the source video's CRW transitions after a scheduler step.

    After step ``i`` the latents are ``x = alpha * x0 + noise part``. The callback blends each frame's ``x0`` with the
    previous frame's and the anchor frame's, pulled along the source transitions and weighted by per-node cycle
    confidence (:func:`~walkreg.pipelines.propagate_denoised`), and adds ``alpha * (x0' - x0)`` to the latents, so
    every frame keeps its own noise. Schedulers that rebuild their next sample from kept state (PNDM's saved sample,
    the ``x0`` history of DPM-Solver++ and UniPC, CogVideoX DPM's previous ``x0``) get the edit written into that
    state too (:mod:`walkreg.pipelines.schedules`), so the scheduler carries it on instead of undoing it.

    ``x0`` comes from a tap on ``pipeline.scheduler.step`` (:class:`~walkreg.pipelines.schedules.SchedulerTap`).
    ``with callback.attach(pipe): pipe(...)`` covers every step and restores ``scheduler.step`` however the block
    ends, an exception included. Passed plainly as ``callback_on_step_end=callback``, the tap is attached at the first
    callback (so the first step is only observed) and removed after the last one; if the run ends early (an
    exception, ``pipe._interrupt``) it passes the next run's first step through untouched and removes itself there.
    Either way the callback can be used again for the next call.

    Layouts: per-frame SD img2img / ControlNet img2img (frames are the batch), AnimateDiff ``(B, C, F, h, w)``,
    Wan ``(B, C, F, h, w)`` and CogVideoX ``(B, F, C, h, w)`` with x4 time compression. AnimateDiff does not read
    ``tensor_inputs`` itself: pass ``callback_on_step_end_tensor_inputs=callback.tensor_inputs``.

    Args:
        encoder: the CRW encoder; ``source_video``: the frames given to the pipeline, ``(T, 3, H, W)`` float in
            [0, 1] or a list of PIL images. Both are kept out of the saved config.
        weight: blend strength in [0, 1]; ``0`` leaves the pipeline's result bit for bit unchanged.
        start, end: the fraction ``[start, end)`` of the denoising steps where it acts.
        anchor_mix: share of the anchor frame (frame 0) against the previous frame.
        temperature, top_k, radius: source transitions (:class:`CorrespondenceConfig`; ``radius`` in latent cells).
        latent_layout, temporal_compression: override the layout detection for unknown pipelines.
        cache: a :class:`CorrespondenceCache` to share with :class:`WalkBackGuidance` (then ``encoder`` and
            ``source_video`` may be omitted).
    """

    tensor_inputs = ["latents"]
    ignore_for_config = ["encoder", "source_video", "cache"]

    def __init__(
        self,
        encoder=None,
        source_video=None,
        weight: float = 0.5,
        start: float = 0.0,
        end: float = 0.8,
        anchor_mix: float = 0.3,
        temperature: float = 0.05,
        top_k: int = 10,
        radius: float = 12.0,
        latent_layout: str | None = None,
        temporal_compression: int | None = None,
        cache: CorrespondenceCache | None = None,
    ):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"`weight` must be in [0, 1], but is {weight}.")
        if not 0.0 <= anchor_mix <= 1.0:
            raise ValueError(f"`anchor_mix` must be in [0, 1], but is {anchor_mix}.")
        check_step_range(start, end)
        # registered by hand: diffusers' @register_to_config mis-aligns positional arguments when some are ignored
        self.register_to_config(
            weight=weight,
            start=start,
            end=end,
            anchor_mix=anchor_mix,
            temperature=temperature,
            top_k=top_k,
            radius=radius,
            latent_layout=latent_layout,
            temporal_compression=temporal_compression,
        )
        if cache is None:
            cache = CorrespondenceCache(encoder, source_video, CorrespondenceConfig(temperature, top_k, radius))
        self.cache = cache
        self._tap: SchedulerTap | None = None
        self._lazy = self._owned = False

    @contextmanager
    def attach(self, pipeline):
        """Tap ``pipeline.scheduler`` for the block, so propagation can act from the very first step."""
        with tapped(pipeline.scheduler) as tap:
            self._tap, self._lazy = tap, False
            try:
                yield self
            finally:
                self._tap = None

    def _reading_tap(self, pipeline) -> SchedulerTap:
        """The tap whose records this step reads: the attached one, another walkreg tap already on the scheduler
        (e.g. :class:`WalkBackGuidance`'s), or a run-scoped one added now (it misses this first step)."""
        if self._tap is None or not self._tap.attached:
            existing = getattr(pipeline.scheduler, "_walkreg_tap", None)
            owned = existing is None or not existing.attached
            tap = SchedulerTap(pipeline.scheduler, once_per_run=True).attach() if owned else existing
            self._tap, self._lazy, self._owned = tap, True, owned
        return self._tap

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        weight = self.config.weight
        if weight == 0:
            return callback_kwargs
        tap = self._reading_tap(pipeline)
        record, tap.record = tap.record, None
        total = getattr(pipeline, "num_timesteps", None) or len(pipeline.scheduler.timesteps)
        if self._lazy and step_index >= total - 1:
            if self._owned:
                tap.detach()
            self._tap = None
        latents = callback_kwargs["latents"]
        if (
            record is None
            or record.denoised.shape != latents.shape
            or not is_active(pipeline, step_index, self.config.start, self.config.end)
        ):
            return callback_kwargs
        layout = infer_layout(pipeline, self.config.latent_layout, self.config.temporal_compression)
        denoised = layout.to_frames(record.denoised)
        correspondences = self.cache.for_latents(denoised, layout)
        blended = propagate_denoised(denoised, correspondences, weight, self.config.anchor_mix)
        delta = layout.from_frames(blended - denoised)
        callback_kwargs["latents"] = (latents.float() + record.signal_scale * delta).to(latents.dtype)
        if callback_kwargs.get("denoised") is not None:  # LCM pipelines decode the last step's estimate
            callback_kwargs["denoised"] = (callback_kwargs["denoised"].float() + delta).to(latents.dtype)
        tap.edit_history(delta)
        return callback_kwargs
