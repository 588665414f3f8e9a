"""walkreg.pipelines with tiny random-weight Diffusers components built offline (no hub, prompt embeddings only)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch


diffusers = pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    AnimateDiffVideoToVideoPipeline,
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLWan,
    CogVideoXTransformer3DModel,
    CogVideoXVideoToVideoPipeline,
    ControlNetModel,
    DDIMScheduler,
    MotionAdapter,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
    WanTransformer3DModel,
    WanVideoToVideoPipeline,
)
from testing_utils import synthetic_video, tiny_encoder  # noqa: E402

from walkreg.pipelines import (  # noqa: E402
    CorrespondenceCache,
    LatentLayout,
    SourceCorrespondences,
    WalkRegCallback,
    infer_layout,
)
from walkreg.walks import compose, local_transitions  # noqa: E402


warnings.filterwarnings("ignore", message=".*should be kept in float32.*")
EMBED = 8  # cross-attention width of the tiny SD components


def tiny_sd_components(seed: int = 0) -> dict:
    """The diffusers test recipe for SD-shaped components, without a text stack (prompt embeddings are passed)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 8),
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=EMBED,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False, steps_offset=1
    )
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "text_encoder": None, "tokenizer": None}


def tiny_sd_img2img(seed: int = 0) -> StableDiffusionImg2ImgPipeline:
    pipe = StableDiffusionImg2ImgPipeline(
        **tiny_sd_components(seed),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeds(batch: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    cond, uncond = torch.randn(1, 7, EMBED, generator=g), torch.randn(1, 7, EMBED, generator=g)
    return {"prompt_embeds": cond.expand(batch, -1, -1), "negative_prompt_embeds": uncond.expand(batch, -1, -1)}


def video(num_frames: int = 4, size: int = 32) -> torch.Tensor:
    return synthetic_video(num_frames, size, size, shift=(0, 2), seed=3)


def run_sd(pipe, frames, callback=None, steps=2, **kwargs) -> torch.Tensor:
    f = frames.shape[0]
    generators = [torch.Generator().manual_seed(i) for i in range(f)]
    return pipe(
        image=frames,
        strength=0.8,
        num_inference_steps=steps,
        guidance_scale=2.0,
        generator=generators,
        output_type="pt",
        callback_on_step_end=callback,
        **embeds(f),
        **kwargs,
    ).images


def tiny_motion_adapter() -> MotionAdapter:
    """A random motion adapter that fits :func:`tiny_sd_components` (seed the global RNG first)."""
    return MotionAdapter(
        block_out_channels=(8, 8), motion_layers_per_block=2, motion_norm_num_groups=2, motion_num_attention_heads=4
    )


def tiny_animatediff(seed: int = 0) -> AnimateDiffVideoToVideoPipeline:
    components = tiny_sd_components(seed)
    torch.manual_seed(seed)
    pipe = AnimateDiffVideoToVideoPipeline(
        **components, motion_adapter=tiny_motion_adapter(), feature_extractor=None, image_encoder=None
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_controlnet_img2img(seed: int = 0) -> StableDiffusionControlNetImg2ImgPipeline:
    components = tiny_sd_components(seed)
    torch.manual_seed(seed)
    controlnet = ControlNetModel(
        block_out_channels=(8, 8),
        layers_per_block=2,
        in_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=EMBED,
        conditioning_embedding_out_channels=(8, 8),
        norm_num_groups=1,
    )
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        **components,
        controlnet=controlnet,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_wan(seed: int = 0) -> WanVideoToVideoPipeline:
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    pipe = WanVideoToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        transformer=transformer,
        scheduler=UniPCMultistepScheduler(flow_shift=3.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_cogvideox(seed: int = 0) -> CogVideoXVideoToVideoPipeline:
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=2,
        sample_height=2,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8,) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    pipe = CogVideoXVideoToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=DDIMScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def to_pil(frames: torch.Tensor) -> list:
    from PIL import Image

    return [Image.fromarray((f.permute(1, 2, 0) * 255).round().byte().numpy()) for f in frames]


def run_animatediff(pipe, frames, callback=None, steps=2):
    e = embeds(1)
    return pipe(
        video=[to_pil(frames)],
        height=frames.shape[-2],
        width=frames.shape[-1],
        strength=0.8,
        num_inference_steps=steps,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
        **e,
    ).frames


def run_wan(pipe, frames, callback=None, steps=2, strength=0.8, output_type="pt"):
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 16, 32, generator=g)
    return pipe(
        video=to_pil(frames),
        height=frames.shape[-2],
        width=frames.shape[-1],
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=2.0,
        generator=g,
        output_type=output_type,
        callback_on_step_end=callback,
        prompt_embeds=cond,
        negative_prompt_embeds=0.5 * cond,
    ).frames


# -- layouts ---------------------------------------------------------------------------------------------------------


def test_layout_inference_and_refusals():
    assert infer_layout(tiny_sd_img2img()) == LatentLayout("FCHW")
    assert infer_layout(tiny_wan()) == LatentLayout("BCFHW", 4, causal=True)
    assert infer_layout(object(), latent_layout="BFCHW", temporal_compression=4) == LatentLayout("BFCHW", 4, True)

    class LTXConditionPipeline:
        pass

    with pytest.raises(ValueError, match="LTXConditionPipeline.*tokens"):
        infer_layout(LTXConditionPipeline())
    with pytest.raises(ValueError, match="pass `latent_layout`"):
        infer_layout(object())
    with pytest.raises(ValueError, match="`latent_layout` must be one of"):
        LatentLayout("BHWC")
    layout = LatentLayout("BCFHW", 4, causal=True)
    assert [layout.num_latent_frames(t) for t in (1, 5, 9, 10)] == [1, 2, 3, 3]
    assert [layout.source_frame(j) for j in range(3)] == [0, 4, 8]
    latents = torch.randn(2, 4, 3, 5, 6)
    assert torch.equal(layout.from_frames(layout.to_frames(latents)), latents)
    assert layout.to_frames(latents).shape == (2, 3, 4, 5, 6)


# -- correspondences -------------------------------------------------------------------------------------------------


def test_time_compressed_correspondences_compose_the_covered_frames():
    frames = video(9, 32)
    encoder = tiny_encoder()
    layout = LatentLayout("BCFHW", 4, causal=True)
    corr = SourceCorrespondences.compute(encoder, frames, (4, 4), layout, show_progress=False)
    assert corr.num_latent_frames == 3 and corr.previous[0] is None
    feats = list(
        encoder.iter_features(torch.nn.functional.interpolate(frames, size=(32, 32), mode="bilinear", antialias=True))
    )
    step = lambda q, k: local_transitions(feats[q], feats[k], 0.05, 12.0, 10)  # noqa: E731
    chain = step(5, 4)  # frame 8 back to frame 4, composed as the frames stream in
    for s in (6, 7, 8):
        chain = compose(step(s, s - 1), chain, 10)
    torch.testing.assert_close(corr.previous[2].to_dense(), chain.to_dense(), atol=1e-5, rtol=1e-4)
    assert ((corr.previous_confidence[1:] >= 0) & (corr.previous_confidence[1:] <= 1 + 1e-6)).all()


def test_cached_transition_memory_is_linear_in_frames():
    encoder = tiny_encoder()
    sizes = {
        t: SourceCorrespondences.compute(encoder, video(t, 16), (6, 6), show_progress=False).nbytes for t in (3, 5, 9)
    }
    per_frame = (sizes[9] - sizes[5]) / 4
    assert per_frame > 0 and sizes[5] - sizes[3] == pytest.approx(2 * per_frame)


# -- the callback on each latent layout ------------------------------------------------------------------------------


def test_sd_img2img_weight_zero_is_bit_exact_and_weight_changes_the_result():
    pipe, frames = tiny_sd_img2img(), video(3, 32)
    plain = run_sd(pipe, frames, steps=3)
    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.0, end=1.0)
    assert torch.equal(run_sd(pipe, frames, callback, steps=3), plain)
    with callback.attach(pipe):
        assert torch.equal(run_sd(pipe, frames, callback, steps=3), plain)
    edited = run_sd(pipe, frames, WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0), steps=3)
    assert (edited - plain).abs().max() > 1e-3
    assert "step" not in vars(pipe.scheduler)  # the lazily attached tap removed itself after the last step


def test_controlnet_img2img_frames_as_batch():
    pipe, frames = tiny_controlnet_img2img(), video(3, 32)
    control = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    plain = run_sd(pipe, frames, steps=3, control_image=control)
    assert torch.equal(
        run_sd(pipe, frames, WalkRegCallback(tiny_encoder(), frames, weight=0.0), steps=3, control_image=control),
        plain,
    )
    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)
    with callback.attach(pipe):
        edited = run_sd(pipe, frames, callback, steps=3, control_image=control)
    assert (edited - plain).abs().max() > 1e-3
    assert edited.shape == plain.shape


def test_animatediff_bcfhw_layout():
    pipe, frames = tiny_animatediff(), video(3, 32)
    plain = run_animatediff(pipe, frames)
    assert torch.equal(run_animatediff(pipe, frames, WalkRegCallback(tiny_encoder(), frames, weight=0.0)), plain)
    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)
    with callback.attach(pipe):
        edited = run_animatediff(pipe, frames, callback)
    assert edited.shape == plain.shape == (1, 3, 3, 32, 32)
    assert (edited - plain).abs().max() > 1e-3
    entry = next(iter(callback.cache._entries.values()))
    assert entry.layout == LatentLayout("BCFHW") and entry.num_latent_frames == 3


def test_wan_time_compressed_layout_with_unipc():
    pipe, frames = tiny_wan(), video(9, 32)
    plain = run_wan(pipe, frames, steps=3)
    assert torch.equal(run_wan(pipe, frames, WalkRegCallback(tiny_encoder(), frames, weight=0.0), steps=3), plain)
    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)
    seen = []

    def spy(pipeline, step_index, timestep, kwargs):
        # UniPC rebuilds the next sample from its stored x0: walkreg must have written the edited x0 there
        record = callback._tap.record if callback._tap is not None else None
        out = callback(pipeline, step_index, timestep, kwargs)
        if record is not None:
            seen.append(torch.equal(pipeline.scheduler.model_outputs[-1], record.denoised))
        return out

    with callback.attach(pipe):
        edited = run_wan(pipe, frames, spy, steps=3)
    assert seen and not any(seen)
    assert (edited - plain).abs().max() > 1e-4
    entry = next(iter(callback.cache._entries.values()))
    assert entry.num_latent_frames == 3 and entry.layout.temporal_compression == 4


def test_cogvideox_bfchw_time_compressed_layout():
    pipe, frames = tiny_cogvideox(), video(9, 16)
    plain = run_wan(pipe, frames, steps=3)  # same call signature as Wan's video-to-video
    assert torch.equal(run_wan(pipe, frames, WalkRegCallback(tiny_encoder(), frames, weight=0.0), steps=3), plain)
    callback = WalkRegCallback(tiny_encoder(), frames, weight=0.8, end=1.0)
    with callback.attach(pipe):
        edited = run_wan(pipe, frames, callback, steps=3)
    assert (edited - plain).abs().max() > 1e-4
    entry = next(iter(callback.cache._entries.values()))
    assert entry.layout == LatentLayout("BFCHW", 4, causal=True) and entry.num_latent_frames == 3


def test_frame_count_mismatch_is_refused():
    cache = CorrespondenceCache(tiny_encoder(), video(5, 16), show_progress=False)
    with pytest.raises(ValueError, match="`latents` hold 4 frames.*5 frames"):
        cache.for_latents(torch.zeros(1, 4, 4, 8, 8), LatentLayout("FCHW"))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="`weight` must be in \\[0, 1\\]"):
        WalkRegCallback(weight=1.5)
    with pytest.raises(ValueError, match="`start` and `end`"):
        WalkRegCallback(start=0.9, end=0.1)
    with pytest.raises(ValueError, match="`source_video` must be"):
        WalkRegCallback(tiny_encoder(), torch.rand(4, 32, 32))
    config = json.loads(WalkRegCallback(tiny_encoder(), video(2, 16), weight=0.25).to_json_string())
    assert config["weight"] == 0.25 and "encoder" not in config and "source_video" not in config


def test_propagation_reduces_frame_to_frame_differences_on_a_static_source():
    frames = video(1, 32).expand(4, -1, -1, -1)
    cache = CorrespondenceCache(tiny_encoder(), frames)
    layout = LatentLayout("FCHW")
    corr = cache.get((8, 8), layout, torch.device("cpu"))
    from walkreg.pipelines import propagate_denoised

    noisy = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    blended = propagate_denoised(noisy, corr, weight=1.0)
    before = (noisy[:, 1:] - noisy[:, :-1]).abs().mean()
    after = (blended[:, 1:] - blended[:, :-1]).abs().mean()
    print(f"static source: frame-to-frame difference {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before
    assert torch.equal(blended[:, 0], noisy[:, 0])
    assert propagate_denoised(noisy, corr, weight=0.0) is noisy
