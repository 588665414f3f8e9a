"""``WalkRegVideoEditPipeline``: per-frame Stable Diffusion img2img with walkreg's propagation and guidance
built in; ``WalkRegPipelineMixin``: the walkreg part it shares with the InstructPix2Pix sibling."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from diffusers.callbacks import MultiPipelineCallbacks
from diffusers.utils import BaseOutput, replace_example_docstring

from walkreg.encoder import CRWEncoder
from walkreg.scoring import score_clip

from .callback import WalkRegCallback, check_step_range
from .correspondence import CorrespondenceCache, CorrespondenceConfig, as_frames
from .guidance import WalkBackGuidance


ENCODER_FOLDER = "crw_encoder"
EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from walkreg import CRWEncoder
        >>> from walkreg.pipelines import WalkRegVideoEditPipeline
        >>> from walkreg.video import read_video, write_video

        >>> encoder = CRWEncoder.from_pretrained("path/to/walkreg-crw-r18")
        >>> pipe = WalkRegVideoEditPipeline.from_pretrained("path/to/stable-diffusion-v1-5", crw_encoder=encoder)
        >>> frames = read_video("clip.mp4", max_frames=16, size=(512, 512))  # (T, 3, H, W) in [0, 1]
        >>> out = pipe(video=frames, prompt="a watercolor painting", strength=0.6, walkreg_weight=0.5,
        ...            generator=torch.Generator().manual_seed(0))
        >>> write_video("edited.mp4", out.frames)
        >>> out.consistency["consistency"]
        ```
"""


@dataclass
class WalkRegPipelineOutput(BaseOutput):
    """Output of :class:`WalkRegVideoEditPipeline` and :class:`WalkRegInstructPix2PixPipeline`.

    Attributes:
        frames: the edited video, ``(T, 3, H, W)`` float in [0, 1] for ``output_type="pt"``, ``(T, H, W, 3)`` for
            ``"np"``, a list of PIL images for ``"pil"``.
        consistency: the :func:`walkreg.scoring.score_clip` scores against the source (``None`` with
            ``score=False``); ``consistency["consistency"]`` is the headline number, higher is more consistent.
    """

    frames: torch.Tensor | np.ndarray | list
    consistency: dict[str, float] | None


class WalkRegPipelineMixin:
    """walkreg's part of a Diffusers pipeline whose batch is the frames of one video.

    Mixed in before the Diffusers class (``class P(WalkRegPipelineMixin, StableDiffusionImg2ImgPipeline)``), it gives
    the CRW encoder attribute and its ``crw_encoder/`` folder, the input checks, the per-frame text arguments, the
    :class:`~walkreg.pipelines.WalkRegCallback` and :class:`~walkreg.pipelines.WalkBackGuidance` hooks around the
    parent's denoising loop, and the scored :class:`WalkRegPipelineOutput`.

    The CRW encoder is an attribute, not a registered Diffusers component (Diffusers' device, offload and
    serialisation machinery only knows its own model classes): :meth:`save_pretrained` writes it to a
    ``crw_encoder/`` folder and :meth:`from_pretrained` reads that folder back when ``crw_encoder`` is not given.
    """

    crw_encoder: CRWEncoder | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, crw_encoder: CRWEncoder | None = None, **kwargs):
        """Load a local SD-1.x-style directory (without safety checker and image encoder) and attach the encoder."""
        for name in ("safety_checker", "feature_extractor", "image_encoder"):
            kwargs.setdefault(name, None)
        kwargs.setdefault("requires_safety_checker", False)
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        folder = Path(pretrained_model_name_or_path) / ENCODER_FOLDER
        if crw_encoder is None and folder.is_dir():
            crw_encoder = CRWEncoder.from_pretrained(folder)
        pipe.crw_encoder = crw_encoder
        return pipe

    def save_pretrained(self, save_directory, **kwargs):
        """Diffusers' ``save_pretrained`` plus the CRW encoder in ``crw_encoder/``."""
        super().save_pretrained(save_directory, **kwargs)
        if self.crw_encoder is not None:
            self.crw_encoder.save_pretrained(Path(save_directory) / ENCODER_FOLDER)

    def check_walkreg_inputs(
        self,
        frames: torch.Tensor,
        walkreg_weight: float,
        walkreg_range: tuple[float, float],
        guidance_weight: float,
        guidance_range: tuple[float, float],
        output_type: str,
    ) -> None:
        """Refuse what walkreg cannot use; ``frames`` is ``(T, 3, H, W)``."""
        if frames.shape[0] < 2:
            raise ValueError(f"`video` must have at least 2 frames, but has {frames.shape[0]}.")
        multiple = self.vae_scale_factor
        if frames.shape[-2] % multiple or frames.shape[-1] % multiple:
            raise ValueError(
                f"`video` frames must have height and width divisible by {multiple}, "
                f"but are {tuple(frames.shape[-2:])}."
            )
        if not 0.0 <= walkreg_weight <= 1.0:
            raise ValueError(f"`walkreg_weight` must be in [0, 1], but is {walkreg_weight}.")
        if guidance_weight < 0:
            raise ValueError(f"`guidance_weight` must be >= 0, but is {guidance_weight}.")
        if self.crw_encoder is None:
            raise ValueError(
                "`crw_encoder` is not set: pass `crw_encoder=CRWEncoder.from_pretrained(...)` to `from_pretrained` "
                "or assign `pipe.crw_encoder`."
            )
        check_step_range(*walkreg_range)
        check_step_range(*guidance_range)
        if output_type not in ("pt", "np", "pil"):
            raise ValueError(f"`output_type` must be 'pt', 'np' or 'pil', but is {output_type!r}.")

    @staticmethod
    def per_frame_text(
        num_frames: int,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
    ) -> dict:
        """The parent call's text arguments with the frames as the batch: one text repeated ``num_frames`` times,
        ``(1, L, D)`` embeddings expanded to ``(num_frames, L, D)``."""
        if prompt_embeds is not None and prompt_embeds.shape[0] == 1:
            prompt_embeds = prompt_embeds.expand(num_frames, -1, -1)
        if negative_prompt_embeds is not None and negative_prompt_embeds.shape[0] == 1:
            negative_prompt_embeds = negative_prompt_embeds.expand(num_frames, -1, -1)
        return {
            "prompt": [prompt] * num_frames if isinstance(prompt, str) else prompt,
            "negative_prompt": [negative_prompt] * num_frames if isinstance(negative_prompt, str) else negative_prompt,
            "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": negative_prompt_embeds,
        }

    @contextmanager
    def walkreg_hooks(
        self,
        frames: torch.Tensor,
        walkreg_weight: float,
        walkreg_range: tuple[float, float],
        anchor_mix: float,
        guidance_weight: float,
        guidance_range: tuple[float, float],
        correspondence_config: CorrespondenceConfig | None,
        callback_on_step_end=None,
    ):
        """Tap the scheduler for propagation and guidance over ``frames`` (``(T, 3, H, W)``, the source) for the block;
        yields the :class:`MultiPipelineCallbacks` to pass to the parent call (walkreg's, then
        ``callback_on_step_end``). The source correspondences are built on the first step that needs them, once."""
        cache = CorrespondenceCache(
            self.crw_encoder, frames, correspondence_config, show_progress=not self._progress_disabled()
        )
        callback = WalkRegCallback(
            weight=walkreg_weight, start=walkreg_range[0], end=walkreg_range[1], anchor_mix=anchor_mix, cache=cache
        )
        guidance = WalkBackGuidance(
            weight=guidance_weight, start=guidance_range[0], end=guidance_range[1], cache=cache
        )
        callbacks = MultiPipelineCallbacks(
            [callback, callback_on_step_end] if callback_on_step_end is not None else [callback]
        )
        with callback.attach(self), guidance.attach(self):
            yield callbacks

    def walkreg_output(
        self, edited: torch.Tensor, frames: torch.Tensor, score: bool, output_type: str, return_dict: bool
    ):
        """Score ``edited`` (``(T, 3, H, W)`` float in [0, 1] on the CPU) against the source ``frames`` and convert
        it to ``output_type``."""
        scores = None
        if score:
            source = (
                torch.nn.functional.interpolate(frames, size=edited.shape[-2:], mode="area")
                if frames.shape[-2:] != edited.shape[-2:]
                else frames
            )
            scores = score_clip(edited, self.crw_encoder, source=source).overall
        if output_type == "np":
            edited = edited.permute(0, 2, 3, 1).numpy()
        elif output_type == "pil":
            edited = self.image_processor.numpy_to_pil(edited.permute(0, 2, 3, 1).numpy())
        self.maybe_free_model_hooks()
        if not return_dict:
            return edited, scores
        return WalkRegPipelineOutput(frames=edited, consistency=scores)

    def walkreg_call(
        self,
        video,
        prompt,
        negative_prompt,
        prompt_embeds,
        negative_prompt_embeds,
        walkreg_weight: float,
        walkreg_range: tuple[float, float],
        anchor_mix: float,
        guidance_weight: float,
        guidance_range: tuple[float, float],
        correspondence_config: CorrespondenceConfig | None,
        score: bool,
        output_type: str,
        return_dict: bool,
        callback_on_step_end,
        **parent_arguments,
    ):
        """The body of a walkreg pipeline's ``__call__``: check the inputs, run the parent pipeline's ``__call__``
        on the frames of ``video`` as its batch, with walkreg's hooks and ``parent_arguments`` (its own settings,
        such as ``strength``), and return the scored :class:`WalkRegPipelineOutput`."""
        frames = as_frames(video)
        self.check_walkreg_inputs(frames, walkreg_weight, walkreg_range, guidance_weight, guidance_range, output_type)
        text = self.per_frame_text(frames.shape[0], prompt, negative_prompt, prompt_embeds, negative_prompt_embeds)
        hooks = self.walkreg_hooks(
            frames,
            walkreg_weight,
            walkreg_range,
            anchor_mix,
            guidance_weight,
            guidance_range,
            correspondence_config,
            callback_on_step_end,
        )
        with hooks as callbacks:
            edited = (
                super()
                .__call__(
                    image=frames.to(self._execution_device),
                    output_type="pt",
                    callback_on_step_end=callbacks,
                    callback_on_step_end_tensor_inputs=callbacks.tensor_inputs,
                    **text,
                    **parent_arguments,
                )
                .images
            )
        return self.walkreg_output(edited.float().cpu(), frames, score, output_type, return_dict)

    def _progress_disabled(self) -> bool:
        return bool(getattr(self, "_progress_bar_config", {}).get("disable", False))


class WalkRegVideoEditPipeline(WalkRegPipelineMixin, StableDiffusionImg2ImgPipeline):
    """Edit a video frame by frame with Stable Diffusion img2img, held together by CRW source correspondences.

    The frames are the batch. :class:`~walkreg.pipelines.WalkRegCallback` propagates the denoised latents along the
    source video's transitions from the first step, :class:`~walkreg.pipelines.WalkBackGuidance` optionally adds the
    walk-back gradient step, and the result is scored with :func:`walkreg.scoring.score_clip`. Components are those
    of :class:`~diffusers.StableDiffusionImg2ImgPipeline` plus ``crw_encoder`` (a :class:`~walkreg.CRWEncoder`), so
    ``from_pretrained(sd_directory, crw_encoder=encoder)`` loads any local SD-1.x-style directory; the encoder is
    kept as :class:`WalkRegPipelineMixin` describes.
    """

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        video,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        strength: float = 0.6,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        walkreg_weight: float = 0.5,
        walkreg_range: tuple[float, float] = (0.0, 0.8),
        anchor_mix: float = 0.3,
        guidance_weight: float = 0.0,
        guidance_range: tuple[float, float] = (0.0, 0.8),
        correspondence_config: CorrespondenceConfig | None = None,
        score: bool = True,
        output_type: str = "pt",
        return_dict: bool = True,
        callback_on_step_end=None,
    ):
        """Edit ``video``.

        Args:
            video: ``(T, 3, H, W)`` float in [0, 1] or a list of PIL images; ``H`` and ``W``
                divisible by the VAE scale.
            prompt, negative_prompt: one text for every frame (or ``prompt_embeds`` / ``negative_prompt_embeds`` of
                shape ``(1, L, D)`` or ``(T, L, D)``).
            strength, num_inference_steps, guidance_scale, generator: as for img2img (``generator`` may be one
                per frame).
            walkreg_weight, walkreg_range, anchor_mix: :class:`WalkRegCallback` settings;
                weight 0 is the plain pipeline.
            guidance_weight, guidance_range: :class:`WalkBackGuidance` settings (latent features; 0 disables it).
            score: compute the consistency scores of the result against the source.
            output_type: ``"pt"``, ``"np"`` or ``"pil"``.
            callback_on_step_end: an extra callback, chained after walkreg's.

        Examples:

        Returns:
            :class:`WalkRegPipelineOutput`, or ``(frames, consistency)`` when ``return_dict=False``.
        """
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"`strength` must be in (0, 1], but is {strength}.")
        return self.walkreg_call(
            video,
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            walkreg_weight,
            walkreg_range,
            anchor_mix,
            guidance_weight,
            guidance_range,
            correspondence_config,
            score,
            output_type,
            return_dict,
            callback_on_step_end,
            strength=strength,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
        )
