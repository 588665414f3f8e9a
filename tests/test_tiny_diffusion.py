"""The trained tiny img2img fixture has learned something. On held-out real frames its VAE reconstructs and its
UNet denoises far better than random-weight copies of the same architecture, and img2img invents texture that
changes from frame to frame while staying closer to the source than a random-weight UNet's output."""

from __future__ import annotations

import pytest
import torch


pytest.importorskip("diffusers")

from testing_utils import CLIPS  # noqa: E402

from walkreg.pipelines.tiny_diffusion import TINY_DIFFUSION, load_tiny_diffusion  # noqa: E402
from walkreg.video import read_video  # noqa: E402


TIMESTEPS = (150, 350, 550, 750)


def held_out_frames() -> list[torch.Tensor]:
    """Two frames of each fixture clip (never trained on): ``(2, 3, H, W)`` in [-1, 1], sides multiples of 16."""
    cups = read_video(CLIPS / "cups.mp4", stride=4, max_frames=2, size=(64, 112))
    carphone = read_video(CLIPS / "carphone.mp4", stride=8, max_frames=2, size=(64, 80))
    return [cups * 2 - 1, carphone * 2 - 1]


def random_copy(model: torch.nn.Module) -> torch.nn.Module:
    """Same config as ``model``, seeded random weights."""
    torch.manual_seed(0)
    return type(model).from_config(model.config).eval()


@torch.no_grad()
def epsilon_mse(unet, scheduler, latents: torch.Tensor, embeds: torch.Tensor) -> float:
    """Mean epsilon MSE over ``latents`` ``(B, 4, h, w)`` at each of ``TIMESTEPS`` with seeded noise."""
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    errors = []
    for t in TIMESTEPS:
        steps = torch.full((len(latents),), t)
        noisy = scheduler.add_noise(latents, noise, steps)
        pred = unet(noisy, steps, encoder_hidden_states=embeds[:1].expand(len(latents), -1, -1)).sample
        errors.append((pred - noise).pow(2).mean())
    return torch.stack(errors).mean().item()


@torch.no_grad()
def reconstruction_l1(vae, images: torch.Tensor) -> float:
    """Mean L1 (of [-1, 1] pixels) between ``images`` and their posterior-mean reconstruction."""
    return (vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1) - images).abs().mean().item()


@pytest.fixture(scope="module")
def tiny():
    if not (TINY_DIFFUSION / "model_index.json").is_file():
        pytest.fail(f"the fixture {TINY_DIFFUSION} is missing: run examples/train_tiny_diffusion.py")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_tiny_diffusion()
    torch.set_num_threads(threads)


def test_denoising_and_reconstruction_beat_random_weights(tiny):
    pipe, kwargs = tiny
    embeds = kwargs["prompt_embeds"]
    trained_l1, random_l1, trained_mse, random_mse = [], [], [], []
    random_vae, random_unet = random_copy(pipe.vae), random_copy(pipe.unet)
    for images in held_out_frames():
        trained_l1.append(reconstruction_l1(pipe.vae, images))
        random_l1.append(reconstruction_l1(random_vae, images))
        latents = pipe.vae.encode(images).latent_dist.mean * pipe.vae.config.scaling_factor
        trained_mse.append(epsilon_mse(pipe.unet, pipe.scheduler, latents, embeds))
        random_mse.append(epsilon_mse(random_unet, pipe.scheduler, latents, embeds))
    for name, trained, rand in (("VAE L1", trained_l1, random_l1), ("UNet eps MSE", trained_mse, random_mse)):
        for clip, a, b in zip(("cups", "carphone"), trained, rand, strict=True):
            assert a < 0.5 * b, f"{name} on {clip}: trained {a:.4f} is not below half of random weights' {b:.4f}"


def img2img(pipe, frames: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """SDEdit at strength 0.55 (DDIM, 20 steps), frame i with seed i: ``(F, 3, H, W)`` in [0, 1]."""
    return pipe(
        image=frames,
        strength=0.55,
        num_inference_steps=20,
        guidance_scale=1.0,
        generator=[torch.Generator().manual_seed(i) for i in range(len(frames))],
        output_type="pt",
        **kwargs,
    ).images


def test_img2img_invents_flickering_texture_but_keeps_the_source(tiny):
    pipe, _ = tiny
    _, kwargs = load_tiny_diffusion(batch=2)
    frames = read_video(CLIPS / "cups.mp4", stride=4, max_frames=2, size=(64, 112))  # a near-static shot
    out = img2img(pipe, frames, kwargs)
    assert out.shape == frames.shape and torch.isfinite(out).all()
    source_change, output_change = (frames[1] - frames[0]).abs().mean(), (out[1] - out[0]).abs().mean()
    assert output_change > 5 * source_change, (
        f"outputs change {output_change:.4f} frame to frame, source {source_change:.4f}"
    )
    trained_unet = pipe.unet
    try:
        pipe.unet = random_copy(trained_unet)
        random_out = img2img(pipe, frames, kwargs)
    finally:
        pipe.unet = trained_unet
    error, random_error = (out - frames).abs().mean(), (random_out - frames).abs().mean()
    assert error < 0.75 * random_error, f"L1 to the source {error:.4f}; with random UNet weights {random_error:.4f}"
    unrelated = (frames - frames.flip(-2)).abs().mean()
    assert error < 0.6 * unrelated, f"L1 to the source {error:.4f}; source vs its upside-down copy {unrelated:.4f}"
