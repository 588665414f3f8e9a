"""Train a tiny Stable-Diffusion-shaped img2img model on the shared footage, on one CPU thread.

Two stages, plain torch with Diffusers' model classes:

1. a small ``AutoencoderKL`` (4 latent channels, spatial factor 4) trained for reconstruction (L1 + L1 on image
   gradients + a small KL term) on random crops, then frozen;
2. a small ``UNet2DConditionModel`` trained with the DDPM epsilon objective (SD's scaled-linear betas
   0.00085-0.012, 1000 steps) on the frozen VAE's latents. It is unconditional in practice: its cross-attention
   always reads a constant all-zero "null" prompt embedding, saved beside the model since there is no text encoder.

The output directory loads with ``StableDiffusionImg2ImgPipeline.from_pretrained(out, text_encoder=None,
tokenizer=None, safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)``;
pass ``prompt_embeds`` and ``negative_prompt_embeds`` from ``null_prompt_embeds.safetensors``. Weights are saved
in float16. Training clips: every ``videos/*.mp4`` of the shared data except the ones the test fixtures hold
(cups, carphone); the labeled DAVIS JPEG sequences (blackswan, car-roundabout, dance-twirl, the fixtures' DAVIS
frames) are the held-out validation set. Usage:

    OMP_NUM_THREADS=1 python examples/train_tiny_diffusion.py --out pipelines/assets/tiny-diffusion --minutes 50
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from tqdm.auto import tqdm

from walkreg.pipelines.tiny_diffusion import NULL_EMBEDS_FILE
from walkreg.video import probe_video, read_image, read_video


REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
HELD_OUT_CLIPS = ("cups", "carphone")  # tests/fixtures/clips holds trims of these
HELD_OUT_DAVIS = ("blackswan", "car-roundabout", "dance-twirl")  # tests/fixtures/davis holds trims of these
CARD_BEGIN, CARD_END = "<!-- learned-check -->", "<!-- /learned-check -->"
EVAL_TIMESTEPS = (100, 250, 400, 550, 700, 900)


# ----------------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every size and step count has a default that fits 50 minutes on one CPU thread."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (with videos/, davis/)")
    p.add_argument("--out", type=Path, required=True, help="output Diffusers directory (created or overwritten)")
    p.add_argument("--minutes", type=float, default=48.0, help="wall-clock budget; stages stop early to meet it")
    p.add_argument("--seed", type=int, default=0, help="seeds model init, crops, noise and timesteps")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--resolution", type=int, default=64, help="UNet training crop side in pixels (multiple of 16)")
    p.add_argument(
        "--max-short-side",
        type=int,
        default=112,
        help="frames are scaled to a random short side in "
        "[resolution, max-short-side] before cropping, so a crop sees 57-100%% of the short side",
    )
    p.add_argument("--frame-stride", type=int, default=1, help="keep every n-th frame of each training clip")
    p.add_argument("--vae-steps", type=int, default=1600, help="VAE optimiser steps")
    p.add_argument("--vae-batch", type=int, default=16, help="VAE batch size")
    p.add_argument("--vae-crop", type=int, default=32, help="VAE training crop side (multiple of 4; small is fast)")
    p.add_argument("--vae-lr", type=float, default=1e-3, help="VAE AdamW learning rate")
    p.add_argument("--kl-weight", type=float, default=1e-5, help="weight of the per-element KL term")
    p.add_argument("--grad-weight", type=float, default=0.5, help="weight of the L1 loss on image gradients")
    p.add_argument("--vae-minutes", type=float, default=9.0, help="time cap of the VAE stage")
    p.add_argument("--bank", type=int, default=16000, help="crops encoded once into the latent bank for the UNet")
    p.add_argument("--steps", type=int, default=3300, help="UNet optimiser steps")
    p.add_argument("--batch", type=int, default=32, help="UNet batch size")
    p.add_argument("--lr", type=float, default=5e-4, help="UNet AdamW peak learning rate (warm-up, then cosine)")
    p.add_argument("--warmup", type=int, default=200, help="UNet learning-rate warm-up steps")
    p.add_argument("--ema-decay", type=float, default=0.998, help="decay of the saved EMA copy of the UNet")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="min-SNR loss weighting gamma (0: plain MSE)")
    p.add_argument("--log-every", type=int, default=100, help="log a smoothed loss every n steps")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Refuse values the models or the budget cannot use, naming the argument, the rule and the value."""
    rules = [
        (
            "--resolution",
            args.resolution,
            args.resolution >= 32 and args.resolution % 16 == 0,
            "a multiple of 16, >= 32",
        ),
        ("--max-short-side", args.max_short_side, args.max_short_side >= args.resolution, ">= --resolution"),
        ("--vae-crop", args.vae_crop, args.vae_crop >= 16 and args.vae_crop % 4 == 0, "a multiple of 4, >= 16"),
        ("--frame-stride", args.frame_stride, args.frame_stride >= 1, ">= 1"),
        ("--minutes", args.minutes, args.minutes > 0, "> 0"),
        ("--threads", args.threads, args.threads >= 1, ">= 1"),
        ("--ema-decay", args.ema_decay, 0 <= args.ema_decay < 1, "in [0, 1)"),
        ("--snr-gamma", args.snr_gamma, args.snr_gamma >= 0, ">= 0"),
    ]
    rules += [
        (f"--{n}", getattr(args, n.replace("-", "_")), getattr(args, n.replace("-", "_")) >= 1, ">= 1")
        for n in ("vae-steps", "vae-batch", "bank", "steps", "batch", "log-every")
    ]
    for name, value, ok, rule in rules:
        if not ok:
            raise SystemExit(f"error: `{name}` must be {rule}, but is {value}.")
    if not (args.data / "videos").is_dir():
        raise SystemExit(f"error: `--data` must hold a videos/ folder, but {str(args.data)!r} does not.")


# ---------------------------------------------------------------------------------------------------------- data


def training_clips(data: Path) -> list[Path]:
    """The shared ``videos/*.mp4`` clips minus the held-out ones, sorted by name."""
    clips = sorted(p for p in (data / "videos").glob("*.mp4") if p.stem not in HELD_OUT_CLIPS)
    if not clips:
        raise SystemExit(f"error: `--data` must hold training clips in videos/, but {data / 'videos'} has none.")
    return clips


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """``(H, W)`` with the shorter side scaled to ``short`` and the aspect ratio kept."""
    scale = short / min(height, width)
    return max(short, round(height * scale)), max(short, round(width * scale))


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` float in [0, 1] -> uint8, to keep a thousand frames in little memory."""
    return frames.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def load_clip_frames(clips: list[Path], short: int, stride: int) -> list[torch.Tensor]:
    """Every ``stride``-th frame of each clip, scaled to short side ``short``: a list of ``(3, H, W)`` uint8."""
    frames = []
    for clip in tqdm(clips, desc="decoding clips", unit="clip"):
        info = probe_video(clip)
        frames.extend(to_uint8(read_video(clip, stride=stride, size=short_side_size(info.height, info.width, short))))
    return frames


def load_davis_frames(data: Path, short: int, stride: int = 1) -> list[torch.Tensor]:
    """Held-out DAVIS JPEG frames (every ``stride``-th) at short side ``short``: a list of ``(3, H, W)`` uint8."""
    frames = []
    for name in HELD_OUT_DAVIS:
        folder = data / "davis" / "JPEGImages" / "480p" / name
        for path in sorted(folder.glob("*.jpg"))[::stride]:
            first = read_image(path)
            frames.append(to_uint8(read_image(path, size=short_side_size(*first.shape[1:], short))))
    return frames


def random_crops(
    frames: list[torch.Tensor], count: int, size: int, zoom: tuple[float, float], generator: random.Random
) -> torch.Tensor:
    """``count`` random square crops, resized to ``size`` and randomly flipped: ``(count, 3, size, size)`` in [-1, 1].

    ``frames`` are ``(3, H, W)`` uint8. A crop covers ``size * z`` stored pixels with ``z`` drawn uniformly from
    ``zoom`` (``z = 1``: stored scale; ``z = short side / size``: the crop spans the whole short side).
    """
    out = torch.empty(count, 3, size, size)
    for i in range(count):
        frame = frames[generator.randrange(len(frames))]
        h, w = frame.shape[1:]
        side = min(h, w, round(size * generator.uniform(*zoom)))
        y, x = generator.randint(0, h - side), generator.randint(0, w - side)
        crop = frame[:, y : y + side, x : x + side].float().div(127.5).sub(1).unsqueeze(0)
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        out[i] = crop.flip(-1) if generator.random() < 0.5 else crop
    return out.clamp_(-1, 1)


def center_crops(frames: list[torch.Tensor], size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` square of each frame: ``(N, 3, size, size)`` in [-1, 1]."""
    crops = []
    for frame in frames:
        h, w = frame.shape[1:]
        y, x = (h - size) // 2, (w - size) // 2
        crops.append(frame[:, y : y + size, x : x + size].float().div(127.5).sub(1))
    return torch.stack(crops)


# -------------------------------------------------------------------------------------------------------- models


def build_vae() -> AutoencoderKL:
    """AutoencoderKL: 3 levels (16, 32, 64 channels, factor 4), 4 latent channels, ~0.68 M parameters."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def build_unet(resolution: int) -> UNet2DConditionModel:
    """UNet2DConditionModel: 3 levels (32, 64, 96 channels), self- and cross-attention (to a 32-wide embedding) at
    the coarsest level and in the middle block, ~2.4 M parameters, for ``(B, 4, resolution/4, resolution/4)`` latents.
    """
    return UNet2DConditionModel(
        sample_size=resolution // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(32, 64, 96),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def build_scheduler() -> DDIMScheduler:
    """Stable Diffusion's schedule: scaled-linear betas 0.00085-0.012 over 1000 steps, epsilon prediction."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def null_prompt_embeds(unet: UNet2DConditionModel) -> torch.Tensor:
    """The constant condition: zeros of shape ``(1, 1, cross_attention_dim)``."""
    return torch.zeros(1, 1, unet.config.cross_attention_dim)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------- VAE


def vae_loss(vae: AutoencoderKL, images: torch.Tensor, kl_weight: float, grad_weight: float) -> dict:
    """Reconstruction losses of ``images`` ``(B, 3, H, W)`` in [-1, 1] through a sampled posterior.

    Returns a dict of scalars: ``l1`` (per pixel), ``grad`` (L1 of horizontal and vertical differences), ``kl`` (per
    latent element) and their weighted ``total``.
    """
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample()).sample
    l1 = (recon - images).abs().mean()
    grad = sum((recon.diff(dim=d) - images.diff(dim=d)).abs().mean() for d in (-1, -2))
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    return {"total": l1 + grad_weight * grad + kl_weight * kl, "l1": l1, "grad": grad, "kl": kl}


def train_vae(vae: AutoencoderKL, frames: list[torch.Tensor], args: argparse.Namespace, log: TrainLog) -> None:
    """Train ``vae`` in place on random ``--vae-crop`` crops until ``--vae-steps`` or ``--vae-minutes``."""
    rng = random.Random(args.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(100, args.vae_steps))
    zoom = (1.0, args.max_short_side / args.resolution)
    start, smooth = time.monotonic(), None
    vae.train()
    bar = tqdm(range(args.vae_steps), desc="VAE", unit="step")
    for step in bar:
        losses = vae_loss(
            vae, random_crops(frames, args.vae_batch, args.vae_crop, zoom, rng), args.kl_weight, args.grad_weight
        )
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        values = {k: v.item() for k, v in losses.items()}
        smooth = values if smooth is None else {k: 0.98 * smooth[k] + 0.02 * v for k, v in values.items()}
        bar.set_postfix(l1=f"{smooth['l1']:.4f}", kl=f"{smooth['kl']:.2f}")
        if (step + 1) % args.log_every == 0:
            log.vae_curve.append({"step": step + 1, **{k: round(v, 5) for k, v in smooth.items()}})
            tqdm.write(f"VAE step {step + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in smooth.items()))
        if time.monotonic() - start > 60 * args.vae_minutes:
            tqdm.write(f"VAE: --vae-minutes {args.vae_minutes} reached after {step + 1} steps")
            break
    bar.close()
    log.vae_steps, log.vae_seconds = step + 1, time.monotonic() - start
    log.vae_final = {k: round(v, 5) for k, v in smooth.items()}
    vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_bank(vae: AutoencoderKL, crops: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior ``(mean, std)`` of ``crops`` ``(N, 3, H, W)`` in [-1, 1]: two ``(N, 4, H/4, W/4)`` tensors."""
    means, stds = [], []
    for i in tqdm(range(0, len(crops), batch), desc="encoding latents", unit="batch"):
        dist = vae.encode(crops[i : i + batch]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


# ---------------------------------------------------------------------------------------------------------- UNet


def warmup_cosine(warmup: int, total: int):
    """LambdaLR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


def snr_weights(scheduler: DDIMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights ``min(SNR, gamma) / SNR`` for epsilon prediction, ``(B,)`` (ones when gamma is 0)."""
    if gamma == 0:
        return torch.ones(len(timesteps))
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


def denoising_error(
    unet: UNet2DConditionModel,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    embeds: torch.Tensor,
) -> torch.Tensor:
    """Per-sample epsilon MSE ``(B,)`` of ``unet`` on scaled ``latents`` ``(B, 4, h, w)`` noised with ``noise`` at
    ``timesteps`` ``(B,)``; ``embeds`` is the ``(1, L, D)`` condition, broadcast over the batch."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states=embeds.expand(len(latents), -1, -1)).sample
    return (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))


def train_unet(
    unet: UNet2DConditionModel,
    bank: tuple[torch.Tensor, torch.Tensor],
    scaling: float,
    scheduler: DDIMScheduler,
    args: argparse.Namespace,
    deadline: float,
    log: TrainLog,
) -> UNet2DConditionModel:
    """DDPM epsilon training on latents sampled from the bank's posteriors (times ``scaling``); returns the EMA
    copy. Stops at ``--steps`` or at the ``deadline`` (``time.monotonic()`` seconds)."""
    g = torch.Generator().manual_seed(args.seed + 2)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(args.warmup, args.steps))
    embeds = null_prompt_embeds(unet)
    means, stds = bank
    start, smooth = time.monotonic(), None
    unet.train()
    bar = tqdm(range(args.steps), desc="UNet", unit="step")
    for step in bar:
        idx = torch.randint(0, len(means), (args.batch,), generator=g)
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scaling
        noise = torch.randn(latents.shape, generator=g)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=g)
        mse = denoising_error(unet, scheduler, latents, noise, timesteps, embeds)
        loss = (mse * snr_weights(scheduler, timesteps, args.snr_gamma)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        values = {"loss": loss.item(), "mse": mse.mean().item()}
        smooth = values if smooth is None else {k: 0.99 * smooth[k] + 0.01 * v for k, v in values.items()}
        bar.set_postfix(loss=f"{smooth['loss']:.4f}", mse=f"{smooth['mse']:.4f}")
        if (step + 1) % args.log_every == 0:
            log.unet_curve.append({"step": step + 1, **{k: round(v, 5) for k, v in smooth.items()}})
            tqdm.write(f"UNet step {step + 1}: weighted loss {smooth['loss']:.4f}, eps MSE {smooth['mse']:.4f}")
        if time.monotonic() > deadline:
            tqdm.write(f"UNet: --minutes budget reached after {step + 1} steps")
            break
    bar.close()
    log.unet_steps, log.unet_seconds = step + 1, time.monotonic() - start
    log.unet_final = {k: round(v, 5) for k, v in smooth.items()}
    return ema.eval()


# ---------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def reconstruction_error(vae: AutoencoderKL, images: torch.Tensor) -> dict:
    """Mean L1 and PSNR (dB) of ``images`` ``(N, 3, H, W)`` in [-1, 1] against their posterior-mean reconstruction."""
    recon = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
    mse = ((recon - images) / 2).pow(2).mean(dim=(1, 2, 3))
    return {"l1": (recon - images).abs().mean().item() / 2, "psnr": (-10 * mse.log10()).mean().item()}


@torch.no_grad()
def denoising_losses(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler: DDIMScheduler,
    images: torch.Tensor,
    timesteps: tuple[int, ...] = EVAL_TIMESTEPS,
    seed: int = 0,
) -> dict[int, float]:
    """Epsilon MSE of ``unet`` on ``images`` ``(N, 3, H, W)`` in [-1, 1] (posterior means, scaled) at each timestep,
    with seeded noise: ``{timestep: mse}``."""
    latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=g)
    embeds = null_prompt_embeds(unet).to(unet.dtype)
    out = {}
    for t in timesteps:
        steps = torch.full((len(latents),), t, dtype=torch.long)
        out[t] = denoising_error(unet, scheduler, latents, noise, steps, embeds).mean().item()
    return out


def random_copy(model: torch.nn.Module, seed: int = 1234) -> torch.nn.Module:
    """The same architecture as ``model`` (a Diffusers model) with freshly seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return type(model).from_config(model.config).eval()


def learned_check(vae: AutoencoderKL, unet: UNet2DConditionModel, scheduler: DDIMScheduler, images: torch.Tensor):
    """Trained vs random-weight losses on held-out ``images`` ``(N, 3, H, W)`` in [-1, 1]: a dict for the card.

    Both UNets are scored on the trained VAE's latents; the random VAE is scored on reconstruction."""
    random_vae = random_copy(vae)
    return {
        "images": len(images),
        "size": list(images.shape[-2:]),
        "vae": reconstruction_error(vae, images),
        "vae_random": reconstruction_error(random_vae, images),
        "unet": denoising_losses(unet, vae, scheduler, images),
        "unet_random": denoising_losses(random_copy(unet), vae, scheduler, images),
    }


def format_learned_check(check: dict) -> str:
    """Markdown table of :func:`learned_check`'s numbers."""
    lines = [
        f"Held-out frames: {check['images']} at {check['size'][0]}x{check['size'][1]}.",
        "",
        "| | trained | random weights |",
        "|---|---|---|",
        f"| VAE reconstruction L1 (of [0, 1] pixels) | {check['vae']['l1']:.4f} | {check['vae_random']['l1']:.4f} |",
        f"| VAE reconstruction PSNR | {check['vae']['psnr']:.2f} dB | {check['vae_random']['psnr']:.2f} dB |",
    ]
    for t in check["unet"]:
        lines.append(f"| UNet epsilon MSE at t={t} | {check['unet'][t]:.4f} | {check['unet_random'][t]:.4f} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- saving


@dataclass
class TrainLog:
    """What the run did, for the model card and ``training_log.json``."""

    args: dict = field(default_factory=dict)
    clips: list = field(default_factory=list)
    frames: int = 0
    vae_steps: int = 0
    vae_seconds: float = 0.0
    vae_final: dict = field(default_factory=dict)
    vae_curve: list = field(default_factory=list)
    scaling_factor: float = 1.0
    bank_seconds: float = 0.0
    unet_steps: int = 0
    unet_seconds: float = 0.0
    unet_final: dict = field(default_factory=dict)
    unet_curve: list = field(default_factory=list)
    total_seconds: float = 0.0
    check: dict = field(default_factory=dict)


def save_model(out: Path, vae: AutoencoderKL, unet: UNet2DConditionModel, scheduler: DDIMScheduler) -> None:
    """Save a float16 StableDiffusionImg2ImgPipeline directory (no text encoder, tokenizer or safety checker) and
    the null prompt embedding ``(1, 1, D)`` as ``null_prompt_embeds.safetensors``."""
    pipe = StableDiffusionImg2ImgPipeline(
        vae=copy.deepcopy(vae).half(),
        text_encoder=None,
        tokenizer=None,
        unet=copy.deepcopy(unet).half(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    embeds = null_prompt_embeds(unet)
    save_file({"prompt_embeds": embeds, "negative_prompt_embeds": embeds.clone()}, str(out / NULL_EMBEDS_FILE))


def directory_bytes(out: Path) -> int:
    """Total size of the files under ``out``."""
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def write_card(out: Path, log: TrainLog, vae: AutoencoderKL, unet: UNet2DConditionModel) -> None:
    """Write the model card ``README.md`` (data, sizes, time, losses, learned check, licences)."""
    a = log.args
    weights = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    clips = ", ".join(log.clips)
    card = f"""# tiny-diffusion: a 3 M-parameter Stable-Diffusion-shaped img2img model for walkreg's tests

Trained from scratch on one CPU thread by `examples/train_tiny_diffusion.py` (seed {a["seed"]}) so that
SDEdit-style img2img (strength 0.4-0.7) re-synthesises plausible, frame-to-frame different texture on real video.
It is not a text-to-image model: there is no text encoder. The UNet's cross-attention always reads the constant
all-zero embedding in `{NULL_EMBEDS_FILE}` (keys `prompt_embeds`, `negative_prompt_embeds`, shape
(1, 1, {unet.config.cross_attention_dim})); pass it as `prompt_embeds`/`negative_prompt_embeds`
(`walkreg.pipelines.tiny_diffusion.load_tiny_diffusion()` does). Classifier-free guidance has no effect (condition and
negative are equal), so `guidance_scale=1` halves the cost.

```python
pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
    path, text_encoder=None, tokenizer=None, safety_checker=None, feature_extractor=None,
    image_encoder=None, requires_safety_checker=False)  # float16 files; diffusers 0.42 loads float32
null = safetensors.torch.load_file(f"{{path}}/{NULL_EMBEDS_FILE}")["prompt_embeds"].expand(len(frames), -1, -1)
edited = pipe(image=frames, strength=0.55, guidance_scale=1.0, prompt_embeds=null, negative_prompt_embeds=null,
              generator=[torch.Generator().manual_seed(i) for i in range(len(frames))]).images
```

It is tiny and briefly trained: expect blurry reconstructions, and img2img outputs that keep the source's coarse
layout and colours but not its fine structure (small objects dissolve into invented texture from strength ~0.4 on).
It exists to make walkreg's tests and benches see real-model behaviour, not to make good edits.

## Architecture and sizes
- VAE: `AutoencoderKL`, blocks (16, 32, 64), 1 layer per block, 4 latent channels, spatial factor 4,
  {count_parameters(vae) / 1e6:.2f} M parameters,
  `scaling_factor` {vae.config.scaling_factor:.4f} (1 / std of the training latents).
- UNet: `UNet2DConditionModel`, blocks (32, 64, 96) = DownBlock2D, DownBlock2D, CrossAttnDownBlock2D (mirrored
  up), `UNetMidBlock2DCrossAttn`, 1 layer per block, cross-attention width {unet.config.cross_attention_dim},
  {count_parameters(unet) / 1e6:.2f} M parameters, epsilon prediction; EMA weights (decay {a["ema_decay"]}).
- Scheduler: `DDIMScheduler`, scaled-linear betas 0.00085-0.012, 1000 training steps (Stable Diffusion's).
- Weights: float16 safetensors, {weights / 1e6:.2f} MB ({directory_bytes(out) / 1e6:.2f} MB with configs and card).
- Resolution: trained on {a["resolution"]}x{a["resolution"]} crops (latents {a["resolution"] // 4} px square);
  being convolutional it runs on other sizes with sides a multiple of 16, best near 64 px short side.

## Data
Frames of the shared footage (`shared/data`, see its SOURCES.md), frame stride {a["frame_stride"]},
{log.frames} frames in all, scaled to short side {a["max_short_side"]} px; random square crops spanning
{100 * a["resolution"] / a["max_short_side"]:.0f}-100% of the short side, resized to the training size,
random horizontal flips. Clips: {clips}.

Held out (never trained on): `cups.mp4` and `carphone.mp4` (trimmed copies are `tests/fixtures/clips/`) and the
labeled DAVIS 2016 JPEG sequences blackswan, car-roundabout and dance-twirl (trimmed copies are
`tests/fixtures/davis/`); the learned check below uses the DAVIS ones.

Sources and licences of the training frames:
- `davis-*.mp4`: DAVIS 2016 frames (Perazzi et al., CVPR 2016), CC BY-NC 4.0 (https://davischallenge.org).
- `bedroom.mp4`, `coffee.mp4`: from facebookresearch/sam2 (Apache-2.0 repository).
- `cat.mp4`: facebookresearch/co-tracker `gradio_demo/videos/cat.mp4` (repository CC BY-NC 4.0).
Because of the CC BY-NC 4.0 footage, these weights are for non-commercial research and testing only.

## Training
- VAE: {log.vae_steps} AdamW steps, batch {a["vae_batch"]}, {a["vae_crop"]} px crops, lr {a["vae_lr"]} (cosine),
  loss L1 + {a["grad_weight"]} x L1 of image gradients + {a["kl_weight"]} x KL; {log.vae_seconds / 60:.1f} min.
  Final (smoothed) L1 {log.vae_final.get("l1", float("nan")):.4f} (pixels in [-1, 1]), KL
  {log.vae_final.get("kl", float("nan")):.3f} per latent element.
- Latent bank: {a["bank"]} crops encoded once (posterior mean and std; a latent is sampled per use),
  {log.bank_seconds / 60:.1f} min.
- UNet: {log.unet_steps} AdamW steps, batch {a["batch"]}, lr {a["lr"]} ({a["warmup"]} warm-up steps, cosine),
  uniform timesteps, min-SNR-{a["snr_gamma"]} weighting; {log.unet_seconds / 60:.1f} min. Final (smoothed)
  weighted loss {log.unet_final.get("loss", float("nan")):.4f}, plain epsilon MSE
  {log.unet_final.get("mse", float("nan")):.4f}.
- Whole run: {log.total_seconds / 60:.1f} min on {a["threads"]} CPU thread(s). Loss curves: `training_log.json`.

## Learned check
{CARD_BEGIN}
{format_learned_check(log.check)}
{CARD_END}
"""
    (out / "README.md").write_text(card)


def save_log(out: Path, log: TrainLog) -> None:
    """Write ``training_log.json`` (arguments, step counts, times, loss curves, learned check)."""
    (out / "training_log.json").write_text(json.dumps(log.__dict__, indent=1, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    """Train both stages within ``--minutes``, evaluate on held-out frames, save model, card and log."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    deadline = start + 60 * args.minutes - 90  # leave time for the check and saving
    log = TrainLog(args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    clips = training_clips(args.data)
    log.clips = [c.name for c in clips]
    frames = load_clip_frames(clips, args.max_short_side, args.frame_stride)
    log.frames = len(frames)
    held_out = center_crops(load_davis_frames(args.data, args.resolution, stride=8), args.resolution)
    tqdm.write(f"{len(frames)} training frames from {len(clips)} clips; {len(held_out)} held-out DAVIS frames")

    torch.manual_seed(args.seed)
    vae, unet, scheduler = build_vae(), build_unet(args.resolution), build_scheduler()
    tqdm.write(f"VAE {count_parameters(vae) / 1e6:.2f} M parameters, UNet {count_parameters(unet) / 1e6:.2f} M")
    train_vae(vae, frames, args, log)

    t0 = time.monotonic()
    zoom = (1.0, args.max_short_side / args.resolution)
    crops = random_crops(frames, args.bank, args.resolution, zoom, random.Random(args.seed + 3))
    means, stds = encode_bank(vae, crops)
    del crops
    log.scaling_factor = 1.0 / torch.cat([means, means + stds * torch.randn_like(stds)]).std().item()
    vae.register_to_config(scaling_factor=log.scaling_factor)
    log.bank_seconds = time.monotonic() - t0
    tqdm.write(f"latent bank {tuple(means.shape)}; scaling factor {log.scaling_factor:.4f}")

    torch.manual_seed(args.seed + 4)
    ema = train_unet(unet, (means, stds), log.scaling_factor, scheduler, args, deadline, log)
    log.check = learned_check(vae, ema, scheduler, held_out)
    tqdm.write(format_learned_check(log.check))
    log.total_seconds = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(args.out, vae, ema, scheduler)
    write_card(args.out, log, vae, ema)
    save_log(args.out, log)
    tqdm.write(f"saved {args.out} ({directory_bytes(args.out) / 1e6:.2f} MB) in {log.total_seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
