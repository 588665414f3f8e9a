"""Benchmark: windowed vs dense label propagation on a DAVIS-sized clip (the paper's protocol).

480x854 frames -> a 60x107 grid of stride-8 ResNet-18 layer3 features (random init, seeded: the cost does not depend
on the weights), first frame + 20 previous frames as context, top-k 10, radius 12, temperature 0.05. Each
implementation runs in its own process so that its peak RSS is its own; both see the same features and labels and
their outputs are compared.

    python bench/propagation.py [--frames 8] [--davis-root ../shared/data/davis] [--sequence blackswan]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe

from walkreg import CRWEncoder, PropagationConfig, propagate
from walkreg.evaluation import peak_rss_mb
from walkreg.video import read_annotation, read_video


ROOT = Path(__file__).resolve().parents[1]
SIZE = (480, 854)


def load_inputs(args) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (T, 3, 480, 854) and the first mask (480, 854) from DAVIS, or the repo fixture upscaled."""
    root, resolution = Path(args.davis_root), "480p"
    if not (root / "JPEGImages" / resolution / args.sequence).is_dir():
        root, resolution = ROOT / "tests" / "fixtures" / "davis", "240p"
    frames = read_video(root / "JPEGImages" / resolution / args.sequence, max_frames=args.frames + 1)
    mask = torch.from_numpy(
        read_annotation(sorted((root / "Annotations" / resolution / args.sequence).glob("*.png"))[0])
    )
    frames = F.interpolate(frames, size=SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    mask = F.interpolate(mask[None, None].float(), size=SIZE, mode="nearest")[0, 0].long()
    return frames, mask


def worker(args) -> None:
    torch.manual_seed(0)
    encoder = CRWEncoder().eval()
    frames, mask = load_inputs(args)
    with torch.no_grad():
        feats = list(encoder.iter_features(frames))
    h, w = feats[0].shape[-2:]
    labels = F.one_hot(mask, int(mask.max()) + 1).permute(2, 0, 1)[None].float()
    labels = F.interpolate(labels, size=(h, w), mode="bilinear", align_corners=False)
    before = peak_rss_mb()
    config = PropagationConfig(num_context=20, top_k=10, radius=12, temperature=0.05, implementation=args.worker)
    outputs, times = [], []
    with torch.no_grad():
        stream = propagate(iter(feats), labels, config)
        next(stream)  # frame 0: the given labels
        start = time.perf_counter()
        for out in stream:
            now = time.perf_counter()
            times.append(now - start)
            outputs.append(out)
            start = time.perf_counter()
    torch.save(torch.cat(outputs), args.out)
    result = {
        "sec_per_frame": sum(times) / len(times),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": before,
        "grid": [h, w],
    }
    Path(args.out).with_suffix(".json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="target frames to propagate to")
    parser.add_argument("--davis-root", default=str(ROOT.parent / "shared" / "data" / "davis"))
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--worker", choices=["windowed", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(describe())

    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("windowed", "dense"):
            out = Path(tmp) / f"{impl}.pt"
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                impl,
                "--out",
                str(out),
                "--frames",
                str(args.frames),
                "--davis-root",
                args.davis_root,
                "--sequence",
                args.sequence,
            ]
            subprocess.run(cmd, check=True)
            results[impl] = json.loads(out.with_suffix(".json").read_text())
            outputs[impl] = torch.load(out)
    win, den = results["windowed"], results["dense"]
    diff = (outputs["windowed"] - outputs["dense"]).abs().max().item()
    same_argmax = (outputs["windowed"].argmax(1) == outputs["dense"].argmax(1)).float().mean().item()
    print(
        f"clip: {args.sequence}, {args.frames} target frames at {SIZE[0]}x{SIZE[1]}, grid {win['grid']}, "
        f"ResNet-18 layer3 (256 ch), context 1+20, top-k 10, radius 12, torch threads {torch.get_num_threads()}"
    )
    print(f"{'implementation':<15}{'s/frame':>10}{'peak RSS MB':>14}{'RSS before MB':>15}{'added MB':>10}")
    for name, r in results.items():
        print(
            f"{name:<15}{r['sec_per_frame']:>10.3f}{r['peak_rss_mb']:>14.0f}{r['rss_before_mb']:>15.0f}"
            f"{r['peak_rss_mb'] - r['rss_before_mb']:>10.0f}"
        )
    print(
        f"speed-up windowed vs dense: {den['sec_per_frame'] / win['sec_per_frame']:.2f}x; "
        f"max |difference| {diff:.2e}; same argmax label on {same_argmax:.4%} of cells"
    )


if __name__ == "__main__":
    main()
