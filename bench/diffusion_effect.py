"""Benchmark: what walkreg's two Diffusers mechanisms do to a real diffusion edit, per latent layout, in one run.

The model is the small img2img model trained here (``pipelines/assets/tiny-diffusion``, see its README): SDEdit at
strength 0.6 re-synthesises texture that differs frame to frame, as real models do. Layouts:

- ``per-frame``: ``StableDiffusionImg2ImgPipeline``, the frames are the batch;
- ``animatediff``: ``AnimateDiffVideoToVideoPipeline`` with the same trained UNet and a motion adapter whose
  temporal layers are zeroed (so it denoises as the per-frame model does, in the ``(B, C, F, h, w)`` layout);
- ``cogvideox``: CogVideoX video-to-video with ×4 time compression, tiny random components (no trained video model
  exists here), measured on the frames standing for its latent frames.

Mechanisms: the plain pipeline; ``WalkRegCallback`` over its weight range; ``WalkBackGuidance`` over its weight and
step range (latent features, and CRW features of the decoded estimate for comparison); both together. Measures, per
clip and averaged: the output's flicker (DIS-flow warp error along the *source's* flow, independent of CRW), its cut
against the plain pipeline, the distance to the plain output (mean absolute difference, 0-255) and the time per call.
The last table compares callback + guidance with the callback alone *at equal distance* (the callback's cut
interpolated at the combined run's distance).

    python bench/diffusion_effect.py [--clips A.mp4 B.mp4 ...] [--frames 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from machine import describe


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny random video pipelines live with the tests

from test_pipelines import run_wan, tiny_cogvideox, to_pil  # noqa: E402

from walkreg.features import create_features  # noqa: E402
from walkreg.flow import flow_warp_error  # noqa: E402
from walkreg.pipelines import CorrespondenceCache, WalkBackGuidance, WalkRegCallback, infer_layout  # noqa: E402
from walkreg.pipelines.tiny_diffusion import load_tiny_diffusion  # noqa: E402
from walkreg.video import read_video  # noqa: E402


CLIPS = [ROOT / "tests" / "fixtures" / "clips" / name for name in ("cups.mp4", "carphone.mp4")]
SIZE = (64, 112)  # the trained model's frames: multiples of 16, about 64 px on the short side


@dataclass
class Mechanism:
    """One setting of walkreg: callback and/or guidance keyword arguments (``None``: not used)."""

    name: str
    callback: dict | None = None
    guidance: dict | None = None
    layouts: tuple[str, ...] = ("per-frame", "animatediff", "cogvideox")


def mechanisms() -> list[Mechanism]:
    found = [Mechanism("plain")]
    found += [Mechanism(f"callback w={w}", callback={"weight": w}) for w in (0.25, 0.5, 1.0)]
    for end in (0.3, 0.8):  # weight 0.2, end 0.8 is WalkBackGuidance's default
        found += [
            Mechanism(f"guidance latent w={w} end={end}", guidance={"weight": w, "end": end, "features": "latent"})
            for w in (0.05, 0.2, 0.5)
        ]
    found.append(
        Mechanism(
            "guidance crw w=0.2 end=0.8",
            guidance={"weight": 0.2, "end": 0.8, "features": "crw"},
            layouts=("per-frame",),
        )
    )
    found.append(Mechanism("callback w=0.5 + guidance (defaults)", callback={"weight": 0.5}, guidance={}))
    found.append(Mechanism("callback w=0.25 + guidance (defaults)", callback={"weight": 0.25}, guidance={}))
    return found


def animatediff_pipeline(pipe):
    """AnimateDiff video-to-video around ``pipe``'s trained UNet, with a motion adapter whose temporal layers add
    nothing (their output projections are zero)."""
    from diffusers import AnimateDiffVideoToVideoPipeline, MotionAdapter, UNetMotionModel

    config = pipe.unet.config
    torch.manual_seed(0)
    adapter = MotionAdapter(
        block_out_channels=tuple(config.block_out_channels),
        motion_layers_per_block=config.layers_per_block,
        motion_norm_num_groups=config.norm_num_groups,
        motion_num_attention_heads=4,
    )
    for name, parameter in adapter.named_parameters():
        if "proj_out" in name:
            torch.nn.init.zeros_(parameter)
    unet = UNetMotionModel.from_unet2d(pipe.unet, adapter)
    video = AnimateDiffVideoToVideoPipeline(
        vae=pipe.vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        motion_adapter=adapter,
        scheduler=pipe.scheduler,
        feature_extractor=None,
        image_encoder=None,
    )
    video.set_progress_bar_config(disable=True)
    return video


class Layout:
    """A pipeline and how to call it on a source clip: ``run(source, callback)`` -> ``(T', 3, H, W)`` frames."""

    def __init__(self, name: str, steps: int, strength: float):
        self.name, self.steps, self.strength = name, steps, strength
        if name == "cogvideox":
            self.pipe = tiny_cogvideox()
        else:
            pipe, self.embeds = load_tiny_diffusion()
            self.pipe = pipe if name == "per-frame" else animatediff_pipeline(pipe)

    def run(self, source: torch.Tensor, callback=None) -> torch.Tensor:
        if self.name == "cogvideox":
            return run_wan(self.pipe, source, callback, steps=self.steps, strength=self.strength)[0]
        common = {
            "strength": self.strength,
            "num_inference_steps": self.steps,
            "guidance_scale": 1.0,
            "output_type": "pt",
            "callback_on_step_end": callback,
        }
        if self.name == "per-frame":
            embeds = {k: v.expand(len(source), -1, -1) for k, v in self.embeds.items()}
            generators = [torch.Generator().manual_seed(i) for i in range(len(source))]
            return self.pipe(image=source, generator=generators, **common, **embeds).images
        return self.pipe(
            video=to_pil(source),
            height=source.shape[-2],
            width=source.shape[-1],
            generator=torch.Generator().manual_seed(0),
            callback_on_step_end_tensor_inputs=["latents"],
            **common,
            **self.embeds,
        ).frames[0]

    def kept(self, num_frames: int) -> list[int]:
        """Frames standing for the latent frames (all of them without time compression)."""
        layout = infer_layout(self.pipe)
        return [layout.source_frame(j) for j in range(layout.num_latent_frames(num_frames))]


def flicker(source: torch.Tensor, output: torch.Tensor) -> float:
    pairs = range(len(output) - 1)
    return float(np.mean([flow_warp_error((source[t], source[t + 1]), (output[t], output[t + 1])) for t in pairs]))


def measure(layout: Layout, mechanism: Mechanism, source: torch.Tensor, cache: CorrespondenceCache) -> dict:
    callback = None if mechanism.callback is None else WalkRegCallback(cache=cache, **mechanism.callback)
    guidance = None if mechanism.guidance is None else WalkBackGuidance(cache=cache, **mechanism.guidance)
    with ExitStack() as stack:
        if callback is not None:
            stack.enter_context(callback.attach(layout.pipe))
        if guidance is not None:
            stack.enter_context(guidance.attach(layout.pipe))
        start = time.perf_counter()
        output = layout.run(source, callback)
        seconds = time.perf_counter() - start
    kept = layout.kept(len(source))
    return {"output": output.float()[kept], "seconds": seconds, "flicker": flicker(source[kept], output[kept])}


def interpolate_cut(curve: list[tuple[float, float]], distance: float) -> float:
    """The cut of a (distance, cut) curve at ``distance`` (linear between points, held beyond its ends)."""
    points = sorted(curve)
    return float(np.interp(distance, [d for d, _ in points], [c for _, c in points]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=[str(c) for c in CLIPS], help="source clips (default: 2)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default: 8)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of the full schedule (default: 20)")
    parser.add_argument("--strength", type=float, default=0.6, help="img2img strength (default: 0.6)")
    parser.add_argument("--layouts", nargs="+", default=["per-frame", "animatediff", "cogvideox"])
    parser.add_argument("--encoder", default="default", help="CRW encoder for the source walks (default: bundled)")
    parser.add_argument("--json", default=None, help="also write the table to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe())
    encoder = create_features(args.encoder)
    rows = []
    for layout_name in args.layouts:
        layout = Layout(layout_name, args.steps, args.strength)
        frames = 9 if layout_name == "cogvideox" else args.frames
        size = (32, 48) if layout_name == "cogvideox" else SIZE
        sources = [read_video(clip, max_frames=frames, size=size) for clip in args.clips]
        caches = [CorrespondenceCache(encoder, source, show_progress=False) for source in sources]
        plain = [measure(layout, Mechanism("plain"), s, c) for s, c in zip(sources, caches, strict=True)]
        print(f"\n## {layout_name}: plain flicker " + ", ".join(f"{p['flicker']:.4f}" for p in plain))
        print("| mechanism | flicker cut (per clip) | mean cut | distance to plain (0-255) | s per call (plain) |")
        print("|---|---|---|---|---|")
        for mechanism in mechanisms()[1:]:
            if layout_name not in mechanism.layouts:
                continue
            got = [measure(layout, mechanism, s, c) for s, c in zip(sources, caches, strict=True)]
            cuts = [1 - g["flicker"] / p["flicker"] for g, p in zip(got, plain, strict=True)]
            distance = float(
                np.mean([255 * (g["output"] - p["output"]).abs().mean() for g, p in zip(got, plain, strict=True)])
            )
            seconds = float(np.mean([g["seconds"] for g in got]))
            plain_seconds = float(np.mean([p["seconds"] for p in plain]))
            row = {"layout": layout_name, "mechanism": mechanism.name, "cut": float(np.mean(cuts)), "cuts": cuts}
            row.update(distance=distance, seconds=seconds, plain_seconds=plain_seconds)
            rows.append(row)
            print(
                f"| {mechanism.name} | {', '.join(f'{100 * c:.1f}%' for c in cuts)} | {100 * row['cut']:.1f}% | "
                f"{distance:.1f} | {seconds:.2f} ({plain_seconds:.2f}) |",
                flush=True,
            )
        here = [r for r in rows if r["layout"] == layout_name]
        alone = [
            (r["distance"], r["cut"])
            for r in here
            if r["mechanism"].startswith("callback w=") and "+" not in r["mechanism"]
        ]
        for r in here:
            if "+" in r["mechanism"]:
                r["callback_alone_at_equal_distance"] = cut = interpolate_cut(alone, r["distance"])
                print(
                    f"{r['mechanism']}: cut {100 * r['cut']:.1f}% at distance {r['distance']:.1f}; the callback alone "
                    f"at that distance {100 * cut:.1f}% ({100 * (r['cut'] - cut):+.1f} points)"
                )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
