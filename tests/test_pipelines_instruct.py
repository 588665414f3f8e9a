"""walkreg with InstructPix2Pix frame by frame and AnimateDiff ControlNet video-to-video (tiny offline components),
the InstructPix2Pix pipeline class, and ``walkreg edit --pipeline``."""

from __future__ import annotations

import json

import pytest
import torch


pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    AnimateDiffVideoToVideoControlNetPipeline,
    ControlNetModel,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from test_pipelines import EMBED, embeds, tiny_motion_adapter, tiny_sd_components, to_pil, video  # noqa: E402
from test_pipelines_cli import byte_tokenizer, tiny_text_config  # noqa: E402
from testing_utils import CLIPS, tiny_encoder  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402

from walkreg.cli import main  # noqa: E402
from walkreg.pipelines import LatentLayout, WalkRegCallback, WalkRegInstructPix2PixPipeline, infer_layout  # noqa: E402
from walkreg.pipelines.cli import resolve_pipeline  # noqa: E402
from walkreg.video import probe_video  # noqa: E402


def ip2p_components(seed: int = 0) -> dict:
    """The tiny SD components with an InstructPix2Pix UNet: 8 input channels (noisy latents + image latents)."""
    components = tiny_sd_components(seed)
    torch.manual_seed(seed)
    components["unet"] = UNet2DConditionModel.from_config({**components["unet"].config, "in_channels": 8})
    return components


def tiny_instruct_pix2pix(seed: int = 0) -> StableDiffusionInstructPix2PixPipeline:
    pipe = StableDiffusionInstructPix2PixPipeline(
        **ip2p_components(seed),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_ip2p(pipe, frames, callback=None, steps=3) -> torch.Tensor:
    """Video InstructPix2Pix: the ``(F, 3, H, W)`` frames are the batch, each its own image condition."""
    f = frames.shape[0]
    return pipe(
        image=frames,
        num_inference_steps=steps,
        guidance_scale=2.0,
        image_guidance_scale=1.5,
        generator=[torch.Generator().manual_seed(i) for i in range(f)],
        output_type="pt",
        callback_on_step_end=callback,
        **embeds(f),
    ).images


def tiny_animatediff_controlnet(seed: int = 0) -> AnimateDiffVideoToVideoControlNetPipeline:
    components = tiny_sd_components(seed)
    torch.manual_seed(seed)
    adapter = tiny_motion_adapter()
    controlnet = ControlNetModel(
        block_out_channels=(8, 8),
        layers_per_block=2,
        in_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=EMBED,
        conditioning_embedding_out_channels=(8, 8),
        norm_num_groups=1,
    )
    pipe = AnimateDiffVideoToVideoControlNetPipeline(
        **components, motion_adapter=adapter, controlnet=controlnet, feature_extractor=None, image_encoder=None
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_animatediff_controlnet(pipe, frames, control, callback=None, steps=2) -> torch.Tensor:
    """One video; unlike AnimateDiff video-to-video, the ControlNet variant counts frames as ``len(video)``, so the
    video is a flat list of frames, as are the ``conditioning_frames``."""
    return pipe(
        video=to_pil(frames),
        conditioning_frames=to_pil(control),
        height=frames.shape[-2],
        width=frames.shape[-1],
        strength=0.8,
        num_inference_steps=steps,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
        **embeds(1),
    ).frames


def only_entry(callback: WalkRegCallback):
    """The one ``(grid, layout) -> SourceCorrespondences`` entry of the callback's cache."""
    (key, entry), *rest = callback.cache._entries.items()
    assert not rest
    return key, entry


def check_walkreg_on(run, pipe, frames) -> tuple[torch.Tensor, torch.Tensor, WalkRegCallback]:
    """Weight 0 (plain and attached) is bit-exact to the plain call; weight 0.8 over every step changes it.
    Returns the plain and edited outputs and the acting callback."""
    plain = run(pipe, frames)
    assert torch.equal(run(pipe, frames, WalkRegCallback(tiny_encoder(), frames, weight=0.0)), plain)
    idle = WalkRegCallback(tiny_encoder(), frames, weight=0.0, end=1.0)
    with idle.attach(pipe):
        assert torch.equal(run(pipe, frames, idle), plain)
    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)
    with callback.attach(pipe):
        edited = run(pipe, frames, callback)
    assert edited.shape == plain.shape
    assert (edited - plain).abs().max() > 1e-3
    assert "step" not in vars(pipe.scheduler)  # the tap is gone after the block
    return plain, edited, callback


# -- the callback on InstructPix2Pix and AnimateDiff ControlNet ------------------------------------------------------


def test_instruct_pix2pix_frames_as_batch():
    pipe, frames = tiny_instruct_pix2pix(), video(3, 32)
    assert pipe.unet.config.in_channels == 8 and infer_layout(pipe) == LatentLayout("FCHW")
    plain, _, callback = check_walkreg_on(run_ip2p, pipe, frames)
    assert plain.shape == (3, 3, 32, 32)
    (grid, layout), entry = only_entry(callback)
    assert layout == LatentLayout("FCHW") and grid == (16, 16) and entry.num_latent_frames == 3


def test_instruct_pix2pix_with_its_euler_ancestral_scheduler():
    # fails with "walkreg cannot read the noise level" until pipelines/schedules.py supports Euler (ancestral)
    pipe, frames = tiny_instruct_pix2pix(), video(3, 32)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    plain, _, callback = check_walkreg_on(run_ip2p, pipe, frames)
    assert plain.shape == (3, 3, 32, 32)
    assert only_entry(callback)[0][1] == LatentLayout("FCHW")


def test_animatediff_controlnet_v2v_bcfhw_layout():
    pipe, frames = tiny_animatediff_controlnet(), video(3, 32)
    control = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert infer_layout(pipe) == LatentLayout("BCFHW")
    plain, _, callback = check_walkreg_on(
        lambda p, f, cb=None: run_animatediff_controlnet(p, f, control, cb), pipe, frames
    )
    assert plain.shape == (1, 3, 3, 32, 32)
    (grid, layout), entry = only_entry(callback)
    assert layout == LatentLayout("BCFHW") and grid == (16, 16) and entry.num_latent_frames == 3


# -- WalkRegInstructPix2PixPipeline and `walkreg edit --pipeline` ----------------------------------------------------


@pytest.fixture(scope="module")
def ip2p_dir(tmp_path_factory):
    """A tiny InstructPix2Pix directory saved by the plain Diffusers class (as a downloaded model is), with the CRW
    encoder in ``crw_encoder/``."""
    root = tmp_path_factory.mktemp("tiny-ip2p")
    components = ip2p_components()
    torch.manual_seed(0)
    components["text_encoder"] = CLIPTextModel(tiny_text_config())
    components["tokenizer"] = byte_tokenizer(root / "tok")
    pipe = StableDiffusionInstructPix2PixPipeline(
        **components, safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False
    )
    pipe.save_pretrained(root / "model")
    tiny_encoder().save_pretrained(root / "model" / "crw_encoder")
    return root / "model"


def test_instruct_pix2pix_pipeline_class_weight_zero_is_plain_ip2p(ip2p_dir, tmp_path):
    pipe = WalkRegInstructPix2PixPipeline.from_pretrained(ip2p_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.crw_encoder is not None
    frames = video(3, 32)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    common = {"num_inference_steps": 3, "guidance_scale": 2.0, "image_guidance_scale": 1.5, **embeds(1)}
    out = pipe(video=frames, walkreg_weight=0.0, generator=gens(), score=False, **common)
    plain = StableDiffusionInstructPix2PixPipeline(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    assert torch.equal(out.frames, run_ip2p(plain, frames).float())
    edited, scores = pipe(
        video=frames,
        walkreg_range=(0.0, 1.0),
        walkreg_weight=0.8,
        generator=gens(),
        output_type="np",
        return_dict=False,
        **common,
    )
    assert edited.shape == (3, 32, 32, 3)
    assert abs(edited - out.frames.permute(0, 2, 3, 1).numpy()).max() > 1e-3
    assert 0.0 <= scores["consistency"] <= 1.0
    with pytest.raises(ValueError, match="`walkreg_weight` must be in"):
        pipe(video=frames, walkreg_weight=2.0, **common)
    pipe.save_pretrained(tmp_path / "saved")  # the walkreg class name and the encoder folder round-trip
    assert (tmp_path / "saved" / "crw_encoder").is_dir()
    assert resolve_pipeline("auto", tmp_path / "saved") == "instruct-pix2pix"


def test_walkreg_edit_auto_picks_instruct_pix2pix(ip2p_dir, tmp_path, capsys):
    out, report = tmp_path / "edited.mp4", tmp_path / "scores.json"
    code = main(
        [
            "edit",
            str(CLIPS / "carphone.mp4"),
            "--model",
            str(ip2p_dir),
            "--prompt",
            "make it a cartoon",
            "--out",
            str(out),
            "--size",
            "32x40",
            "--max-frames",
            "3",
            "--steps",
            "3",
            "--image-guidance-scale",
            "1.2",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    assert probe_video(out).num_frames == 3 and (probe_video(out).height, probe_video(out).width) == (32, 40)
    scores = json.loads(report.read_text())
    assert scores["pipeline"] == "instruct-pix2pix" and scores["image_guidance_scale"] == 1.2
    assert "strength" not in scores and 0.0 <= scores["consistency"] <= 1.0
    assert "consistency" in capsys.readouterr().out


def test_walkreg_edit_pipeline_choice_and_its_refusals(ip2p_dir, tmp_path, capsys):
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert resolve_pipeline("auto", ip2p_dir) == "instruct-pix2pix"
    assert resolve_pipeline("auto", other) == "img2img"
    assert resolve_pipeline("img2img", ip2p_dir) == "img2img"
    out = tmp_path / "edited.mp4"
    base = ["edit", str(CLIPS / "carphone.mp4"), "--model", str(ip2p_dir), "--prompt", "x", "--out", str(out)]
    assert main([*base, "--strength", "0.7"]) == 1
    err = capsys.readouterr().err
    assert "`--strength` does not apply to --pipeline instruct-pix2pix" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--pipeline", "img2img", "--image-guidance-scale", "2"]) == 1
    assert "`--image-guidance-scale` applies to --pipeline instruct-pix2pix only" in capsys.readouterr().err
    (other / "model_index.json").write_text("{ not json")
    assert main([*base[:3], str(other), *base[4:]]) == 1
    assert "model_index.json is not JSON" in capsys.readouterr().err
    assert not out.exists()
