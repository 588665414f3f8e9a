"""Diffusers integration for walkreg (installed as ``walkreg.pipelines``; needs
``pip install 'walkreg[diffusers]'``)."""

from importlib import import_module


# Exports load on first use, so ``walkreg.pipelines.cli`` (imported for ``walkreg edit``) parses its arguments
# before Diffusers is imported.
_EXPORTS = {
    "CorrespondenceCache": "correspondence",
    "CorrespondenceConfig": "correspondence",
    "SourceCorrespondences": "correspondence",
    "LatentLayout": "layouts",
    "infer_layout": "layouts",
    "propagate_denoised": "latent_propagation",
    "WalkRegCallback": "callback",
    "WalkBackGuidance": "guidance",
    "WalkRegPipelineOutput": "pipeline_walkreg_video_edit",
    "WalkRegVideoEditPipeline": "pipeline_walkreg_video_edit",
    "WalkRegPipelineMixin": "pipeline_walkreg_video_edit",
    "WalkRegInstructPix2PixPipeline": "pipeline_walkreg_instruct_pix2pix",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = import_module(f".{_EXPORTS[name]}", __name__)
    except ImportError as err:
        if str(err.name or "").split(".")[0] not in ("diffusers", "transformers"):
            raise
        raise ImportError(
            f"`walkreg.pipelines.{name}` requires diffusers: `pip install 'walkreg[diffusers]'` ({err})."
        ) from err
    return getattr(module, name)


def __dir__():
    return __all__
