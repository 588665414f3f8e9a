"""Diffusers integration for walkreg (installed as ``walkreg.pipelines``; needs ``pip install 'walkreg[diffusers]'``)."""

from .callback import WalkRegCallback
from .correspondence import CorrespondenceCache, CorrespondenceConfig, SourceCorrespondences
from .guidance import WalkBackGuidance
from .latent_propagation import propagate_denoised
from .layouts import LatentLayout, infer_layout
from .pipeline_walkreg_video_edit import WalkRegPipelineOutput, WalkRegVideoEditPipeline


__all__ = [
    "CorrespondenceCache",
    "CorrespondenceConfig",
    "LatentLayout",
    "SourceCorrespondences",
    "WalkBackGuidance",
    "WalkRegCallback",
    "WalkRegPipelineOutput",
    "WalkRegVideoEditPipeline",
    "infer_layout",
    "propagate_denoised",
]
