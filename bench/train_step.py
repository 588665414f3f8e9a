"""Forward + backward time and peak memory of one CRW training batch, faithful baseline vs speed settings.

The batch is the official recipe: 2 clips x 4 frames x 49 patches of 64x64 (a 7x7 grid at stride 32 of 256x256
crops), made from real footage (tests/fixtures/clips/cups.mp4) by walkreg's training augmentation; temperature
0.05, edge dropout 0.1 (same masks for every variant). Every variant runs in its own subprocess, so each peak RSS
(``VmHWM``) is that variant's own; all of them load the same weights and input, and the loss is printed so
equal loss can be checked.

    python bench/train_step.py                       # ResNet-18 and the small variant
    python bench/train_step.py --arch resnet18 --repeats 3 --compile
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import describe

from walkreg.evaluation import peak_rss_mb


ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "baseline (fp32, as official)": {},
    "channels_last": {"channels_last": True},
    "bf16 autocast": {"bf16": True},
    "channels_last + bf16": {"channels_last": True, "bf16": True},
}
COMPILED = {
    "compile (fp32)": {"compile": True},
    "channels_last + compile (fp32)": {"channels_last": True, "compile": True},
}


def make_inputs(arch: str, path: Path, batch_size: int) -> None:
    from walkreg import CRWEncoder
    from walkreg.train.augment import augment_clip
    from walkreg.train.config import TrainConfig
    from walkreg.video import read_video

    torch.manual_seed(0)
    encoder = CRWEncoder(arch=arch)
    frames = read_video(ROOT / "tests" / "fixtures" / "clips" / "cups.mp4", max_frames=4 * batch_size, size=(256, 455))
    config = TrainConfig()
    clips = torch.stack(
        [augment_clip(frames[4 * i : 4 * i + 4], config, random.Random(i))["clip"] for i in range(batch_size)]
    )
    torch.save({"arch": arch, "state": encoder.state_dict(), "clips": clips}, path)


def run_variant(path: Path, options: dict, repeats: int) -> dict:
    from walkreg import CRWEncoder, walk_back_loss

    saved = torch.load(path)
    encoder = CRWEncoder(arch=saved["arch"])
    encoder.load_state_dict(saved["state"])
    encoder.train()
    clips = saved["clips"]
    if options.get("channels_last"):
        encoder = encoder.to(memory_format=torch.channels_last)
    embed = torch.compile(encoder.node_embeddings) if options.get("compile") else encoder.node_embeddings

    def step() -> tuple[float, float]:
        encoder.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(options.get("bf16"))):
            nodes = embed(clips)
        out = walk_back_loss(nodes.float(), 0.05, 0.1, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        return time.perf_counter() - start, out.loss.item()

    first_time, loss = step()  # warm-up (and compilation)
    times = [step()[0] for _ in range(repeats)]  # every pass: same input, same dropout masks, fresh gradients
    grad = torch.cat([p.grad.flatten() for p in encoder.parameters() if p.grad is not None])
    return {
        "times": times,
        "first_seconds": first_time,
        "peak_rss_gb": peak_rss_mb() / 1024,
        "loss": loss,
        "grad_norm": grad.float().norm().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["resnet18", "resnet18-small", "both"], default="both")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed batches per variant and round, after one warm-up"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="runs of every variant, in alternating order (evens out drifting machine load)",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_variant(Path(args.inputs), json.loads(args.child), args.repeats)))
        return
    print(describe())
    variants = {**VARIANTS, **(COMPILED if args.compile else {})}
    archs = ["resnet18", "resnet18-small"] if args.arch == "both" else [args.arch]
    print(
        f"torch {torch.__version__}, {args.threads} threads; batch {args.batch_size} x T=4 x 49 patches 64x64; "
        f"median over {args.rounds} rounds x {args.repeats} forward+backward passes, each process after one warm-up"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            inputs = Path(tmp) / f"{arch}.pt"
            make_inputs(arch, inputs, args.batch_size)
            runs: dict[str, list[dict]] = {name: [] for name in variants}
            order = list(variants)
            for round_index in range(args.rounds):
                for name in order if round_index % 2 == 0 else order[::-1]:
                    command = [
                        sys.executable,
                        __file__,
                        "--child",
                        json.dumps(variants[name]),
                        "--inputs",
                        str(inputs),
                        "--repeats",
                        str(args.repeats),
                        "--threads",
                        str(args.threads),
                    ]
                    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                    runs[name].append(json.loads(out.splitlines()[-1]))
            print(f"\n{arch}")
            print(
                f"{'variant':32s} {'s/batch':>8s} {'speed-up':>9s} {'peak RSS GB':>12s} {'loss':>10s} {'|dloss|':>9s} "
                f"{'grad norm':>10s} {'1st pass s':>10s}"
            )
            base = None
            for name, results in runs.items():
                seconds = statistics.median(t for r in results for t in r["times"])
                row = {
                    "seconds": seconds,
                    **{k: max(r[k] for r in results) for k in ("peak_rss_gb", "first_seconds")},
                    "loss": results[0]["loss"],
                    "grad_norm": results[0]["grad_norm"],
                }
                base = base or row
                print(
                    f"{name:32s} {row['seconds']:8.2f} {base['seconds'] / row['seconds']:8.2f}x "
                    f"{row['peak_rss_gb']:12.2f} {row['loss']:10.6f} {abs(row['loss'] - base['loss']):9.2e} "
                    f"{row['grad_norm']:10.4f} {row['first_seconds']:10.1f}"
                )


if __name__ == "__main__":
    main()
