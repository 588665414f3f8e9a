"""Benchmark: walkreg's added time per denoising step against the UNet step, and the memory of cached transitions.

Setting (CPU, random weights -- cost does not depend on the weights): a UNet2DConditionModel with Stable Diffusion
1.5's config (860M parameters), 8 frames at 256x256 edited frame by frame (latents (8, 4, 32, 32), batch 16 with
classifier-free guidance), DDIM. Source correspondences come from the paper's ResNet-18 CRW encoder (random init) on
the repo's ``cups.mp4`` fixture. Measured side by side in one run:

- the UNet forward of one step (the unit);
- walkreg's per-step work: the scheduler tap (denoised estimate) plus ``WalkRegCallback`` (propagation of the 8
  frames along the cached transitions), i.e. (tapped step + callback) - plain step;
- the one-time cost of the source correspondences;
- with ``--guidance``: one ``WalkBackGuidance`` step, on latent features and on CRW features of the VAE-decoded
  estimate (SD-shaped VAE decode + encoder, forward and backward);
- the bytes of cached transitions for 8, 16, 32 and 64 frames (the clip is played back and forth to get 64).

With ``--loss`` it measures only the walk-back loss of 2 and 8 frames on a 64x64 latent grid (512x512 SD; ResNet-18
``layer3`` features, 256 channels; top-10 source transitions), forward and backward: the sparse loss
(``walk_back_against_source``) against the dense ``N x N`` softmax it replaced: time, and the peak of the tensor
memory allocated during the call (counted by a dispatch mode, so it is exact on CPU too).

    python bench/pipeline_overhead.py [--repeats 2] [--guidance]
    python bench/pipeline_overhead.py --loss
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from machine import describe
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from walkreg import CRWEncoder
from walkreg.pipelines import (
    CorrespondenceCache,
    LatentLayout,
    SourceCorrespondences,
    WalkBackGuidance,
    WalkRegCallback,
)
from walkreg.pipelines.guidance import walk_back_against_source
from walkreg.pipelines.schedules import SchedulerTap
from walkreg.video import read_video


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the dense reference lives with its test
from test_guidance import dense_walk_back  # noqa: E402


SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 256,
}


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def source_clip(num_frames: int) -> torch.Tensor:
    """``num_frames`` frames of cups.mp4 at 256x256, played forward and backward as often as needed."""
    clip = read_video(ROOT / "tests" / "fixtures" / "clips" / "cups.mp4", size=(256, 256))
    order = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))
    return clip[[order[i % len(order)] for i in range(num_frames)]]


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the block that are alive at the same time (the forward and
    the backward pass, any device): ``with PeakTensorMemory() as memory: ...; memory.peak``."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = WeakIdKeyDictionary()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage() not in self._seen:
                storage = tensor.untyped_storage()
                self._seen[storage] = storage.nbytes()
                self.live += storage.nbytes()
                weakref.finalize(storage, self._free, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def forward_backward(loss_fn, features: torch.Tensor, correspondences: SourceCorrespondences) -> float:
    """The loss of ``(B, C, F, h, w)`` features and its gradient; returns the loss."""
    with torch.enable_grad():
        loss = loss_fn(features, correspondences, 0.05)
        torch.autograd.grad(loss, features)
    return float(loss)


def loss_cost(encoder: CRWEncoder, repeats: int) -> None:
    """Time and peak memory of the dense and the sparse walk-back loss, forward and backward, on a 64x64 grid."""
    print("walk-back loss on a 64x64 latent grid (ResNet-18 layer3 features), forward + backward:")
    print(f"{'frames':>7} {'loss':>7} {'value':>9} {'ms':>9} {'peak MiB':>9}")
    for num_frames in (2, 8):
        frames = source_clip(num_frames)
        corr = SourceCorrespondences.compute(encoder, frames, (64, 64), show_progress=False)
        with torch.no_grad():
            resized = torch.nn.functional.interpolate(frames, size=(512, 512), mode="bilinear", antialias=True)
            features = encoder(resized[None]).requires_grad_(True)  # (1, 256, T, 64, 64)

        for name, loss_fn in (("dense", dense_walk_back), ("sparse", walk_back_against_source)):
            run = functools.partial(forward_backward, loss_fn, features, corr)
            value = run()  # warm up
            seconds, _ = timed(run, repeats)
            with PeakTensorMemory() as memory:
                run()
            print(f"{num_frames:>7} {name:>7} {value:>9.5f} {seconds * 1000:>9.1f} {memory.peak / 2**20:>9.1f}")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="UNet steps timed (the best is kept)")
    parser.add_argument("--guidance", action="store_true", help="also time one walk-back guidance step (slow on CPU)")
    parser.add_argument("--loss", action="store_true", help="only compare the dense and the sparse walk-back loss")
    args = parser.parse_args()
    print(describe())
    torch.manual_seed(0)
    encoder = CRWEncoder("resnet18").eval()
    if args.loss:
        loss_cost(encoder, args.repeats)
        return
    frames = source_clip(8)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    scheduler.set_timesteps(30)
    pipeline = SimpleNamespace(scheduler=scheduler, num_timesteps=30)  # the callback reads only these
    latents = torch.randn(8, 4, 32, 32)
    embeds = torch.randn(16, 77, 768)
    t = scheduler.timesteps[10]
    print(
        f"torch threads {torch.get_num_threads()}; "
        f"UNet parameters {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M"
    )

    unet_s, noise = timed(lambda: unet(torch.cat([latents] * 2), t, encoder_hidden_states=embeds).sample, args.repeats)
    uncond, cond = noise.chunk(2)
    noise_pred = uncond + 7.5 * (cond - uncond)

    corr_start = time.perf_counter()
    cache = CorrespondenceCache(encoder, frames, show_progress=False)
    cache.get((32, 32), LatentLayout("FCHW"), torch.device("cpu"))
    corr_s = time.perf_counter() - corr_start

    callback = WalkRegCallback(weight=0.5, end=1.0, latent_layout="FCHW", cache=cache)
    repeats = 20

    def plain_step():
        return scheduler.step(noise_pred, t, latents, return_dict=False)[0]

    tap = SchedulerTap(scheduler)

    def walkreg_step():
        callback._tap = tap
        prev = tap._wrapped(noise_pred, t, latents, return_dict=False)[0]
        return callback(pipeline, 10, t, {"latents": prev})["latents"]

    plain_s, _ = timed(plain_step, repeats)
    walkreg_s, _ = timed(walkreg_step, repeats)
    added = walkreg_s - plain_s
    print(f"UNet step (batch 16, 32x32 latents):        {unet_s * 1000:9.1f} ms")
    print(f"scheduler step, plain:                      {plain_s * 1000:9.2f} ms")
    print(f"scheduler step + tap + WalkRegCallback:     {walkreg_s * 1000:9.2f} ms")
    print(
        f"walkreg added per step:                     {added * 1000:9.2f} ms = "
        f"{100 * added / unet_s:.2f} % of the UNet step (target <= 10 %)"
    )
    print(f"source correspondences (once per video):    {corr_s * 1000:9.1f} ms = {corr_s / unet_s:.2f} UNet steps")

    if args.guidance:
        vae = AutoencoderKL(**SD15_VAE).eval()
        what = {"latent": "latent features, fwd + bwd", "crw": "VAE decode + CRW, fwd + bwd"}
        for features in ("latent", "crw"):
            guidance = WalkBackGuidance(weight=0.05, latent_layout="FCHW", cache=cache, features=features)
            step = functools.partial(guidance.step, SimpleNamespace(vae=vae, scheduler=scheduler), latents)
            guide_s, _ = timed(step, 3 if features == "latent" else 1)
            print(
                f"WalkBackGuidance step ({what[features]}): {guide_s * 1000:9.1f} ms = "
                f"{guide_s / unet_s:.2f} UNet steps"
            )

    print("\ncached transitions (32x32 latent grid, top-k 10):")
    print(f"{'frames':>7} {'MiB':>9} {'KiB/frame':>10} {'build s':>8}")
    for num_frames in (8, 16, 32, 64):
        start = time.perf_counter()
        entry = SourceCorrespondences.compute(encoder, source_clip(num_frames), (32, 32), show_progress=False)
        build = time.perf_counter() - start
        print(f"{num_frames:>7} {entry.nbytes / 2**20:>9.2f} {entry.nbytes / num_frames / 1024:>10.1f} {build:>8.1f}")


if __name__ == "__main__":
    main()
