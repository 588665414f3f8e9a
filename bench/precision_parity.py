"""Does bf16 train the same as fp32? Two ``walkreg train`` runs from the same seed on the shared clips, one in fp32
and one with bf16 autocast, compared by their loss curves and by the DAVIS J&F of the encoders they end with.

The runs use a small CPU-sized recipe (the quarter-width ResNet-18, 64-pixel frames cut into 3x3 patches of 32
pixels, batch 2, frames preloaded) so that both fit on a laptop CPU even where bf16 is emulated (7x slower than
fp32 there); the question is numerical, not speed. J&F is ``walkreg eval-davis`` on the repository's 240p DAVIS
fixtures (3 sequences). Usage:

    python bench/precision_parity.py --steps 300 --out runs/precision-parity
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe


ROOT = Path(__file__).resolve().parents[1]
RECIPE = {
    "arch": "resnet18-small",
    "frame_size": 64,
    "patch_size": 32,
    "patch_stride": 16,
    "batch_size": 2,
    "clips_per_video": 40,
    "learning_rate": 3e-4,
    "lr_milestones": [1000],
    "num_workers": 1,
    "preload_frames": True,
    "logging_steps": 1,
    "checkpointing_steps": 100000,
    "report_to": "none",
    "seed": 0,
}


def train(out: Path, data: str, steps: int, precision: str) -> float:
    """One run; returns its wall-clock seconds."""
    config = out.with_suffix(".json")
    config.write_text(json.dumps({**RECIPE, "data": [data], "output_dir": str(out), "max_train_steps": steps}))
    command = [sys.executable, "-m", "walkreg", "train", "--config", str(config), "--mixed-precision", precision]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "WALKREG_NO_PROGRESS": "1"}, capture_output=True)
    return time.perf_counter() - start


def losses(out: Path) -> list[float]:
    lines = (out / "logs" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train/loss"] for line in lines if "train/loss" in line]


def davis_jf(encoder: Path, out: Path) -> float:
    davis = ROOT / "tests" / "fixtures" / "davis"
    command = [sys.executable, "-m", "walkreg", "eval-davis", "--davis-root", str(davis), "--resolution", "240p",
               "--encoder", str(encoder), "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "WALKREG_NO_PROGRESS": "1"}, capture_output=True)
    return json.loads((out / "results.json").read_text())["methods"]["encoder"]["JF_mean"]


def main():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--steps", type=int, default=300, help="optimizer updates per run")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "videos"), help="training videos")
    parser.add_argument("--out", required=True, type=Path, help="new folder for both runs")
    args = parser.parse_args()
    print(describe())
    args.out = args.out.resolve()  # the configs written into it must not hold relative paths (they resolve there)
    args.out.mkdir(parents=True)
    runs = {}
    for precision in ("no", "bf16"):
        run = args.out / f"train-{precision}"
        seconds = train(run, args.data, args.steps, precision)
        curve = losses(run)
        runs[precision] = {
            "seconds": seconds,
            "losses": curve,
            "jf": davis_jf(run / "encoder", args.out / f"eval-{precision}"),
        }
    window = max(1, args.steps // 10)
    print(f"{args.steps} updates each; loss = mean over the last {window} updates; J&F on the 240p DAVIS fixtures")
    print("| precision | s/update | loss at 25% | 50% | 75% | end | J&F |")
    print("|---|---|---|---|---|---|---|")
    for precision, run in runs.items():
        curve = run["losses"]
        at = [
            statistics.mean(curve[max(0, int(len(curve) * q) - window) : int(len(curve) * q)])
            for q in (0.25, 0.5, 0.75, 1.0)
        ]
        run["loss_end"] = at[-1]
        print(f"| {'fp32' if precision == 'no' else precision} | {run['seconds'] / args.steps:.2f} | "
              + " | ".join(f"{v:.4f}" for v in at) + f" | {100 * run['jf']:.1f} |")  # fmt: skip
    fp32, bf16 = runs["no"], runs["bf16"]
    print(f"end loss: bf16 / fp32 - 1 = {100 * (bf16['loss_end'] / fp32['loss_end'] - 1):+.2f}%; "
          f"J&F difference {100 * (bf16['jf'] - fp32['jf']):+.1f} points")  # fmt: skip
    (args.out / "parity.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
