"""``WalkRegInstructPix2PixPipeline``: InstructPix2Pix frame by frame (the frames are the batch, each frame its own
image condition, one instruction for all) with walkreg's propagation and guidance built in."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from diffusers.utils import replace_example_docstring

from .correspondence import CorrespondenceConfig
from .pipeline_walkreg_video_edit import WalkRegPipelineMixin


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import EulerAncestralDiscreteScheduler
        >>> from walkreg import CRWEncoder
        >>> from walkreg.pipelines import WalkRegInstructPix2PixPipeline
        >>> from walkreg.video import read_video, write_video

        >>> encoder = CRWEncoder.from_pretrained("path/to/walkreg-crw-r18")
        >>> pipe = WalkRegInstructPix2PixPipeline.from_pretrained("path/to/instruct-pix2pix", crw_encoder=encoder)
        >>> frames = read_video("clip.mp4", max_frames=16, size=(512, 512))  # (T, 3, H, W) in [0, 1]
        >>> out = pipe(video=frames, prompt="make it winter", image_guidance_scale=1.5, walkreg_weight=0.5,
        ...            generator=[torch.Generator().manual_seed(0) for _ in frames])
        >>> write_video("edited.mp4", out.frames)
        >>> out.consistency["consistency"]
        ```
"""


class WalkRegInstructPix2PixPipeline(WalkRegPipelineMixin, StableDiffusionInstructPix2PixPipeline):
    """Edit a video by instruction, frame by frame with InstructPix2Pix, held together by CRW source correspondences.

    The frames are the batch and each frame conditions its own edit (IP2P's UNet sees the noisy ``(T, 4, h, w)``
    latents concatenated with the frame's image latents). Unlike img2img there is no ``strength``: every frame
    starts from noise and the source enters as the image condition, weighted by ``image_guidance_scale``.
    Propagation, guidance, scoring and the ``crw_encoder`` attribute are those of :class:`WalkRegPipelineMixin`, so
    ``from_pretrained(ip2p_directory, crw_encoder=encoder)`` loads a local InstructPix2Pix directory.
    """

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        video,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
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
        """Edit ``video`` by the instruction ``prompt``.

        Args:
            video: ``(T, 3, H, W)`` float in [0, 1] or a list of PIL images; ``H`` and ``W``
                divisible by the VAE scale.
            prompt, negative_prompt: the instruction for every frame (or ``prompt_embeds`` /
                ``negative_prompt_embeds`` of shape ``(1, L, D)`` or ``(T, L, D)``).
            num_inference_steps, guidance_scale, image_guidance_scale, generator: as for InstructPix2Pix
                (``generator`` may be one per frame); classifier-free guidance (text and image) is on only when
                ``guidance_scale > 1`` and ``image_guidance_scale >= 1``.
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
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale,
            generator=generator,
        )
