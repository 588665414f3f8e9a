"""Benchmark: DAVIS label propagation at native 480p, windowed vs dense implementation of the same protocol.

Each implementation runs :func:`walkreg.evaluation.evaluate_sequence` (features, propagation with the paper's
settings, upsampling, PNG writing, J/F scoring) in its own subprocess, so each peak RSS is clean. The first
``--frames`` frames of one sequence are linked into a temporary DAVIS root. Printed side by side: seconds per frame
(total and feature extraction), peak RSS, J and F, and how many predicted pixels the two implementations agree on.

    python bench/davis_eval.py --davis-root ../shared/data/davis --sequence blackswan --frames 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import describe

from walkreg.video import read_annotation


IMPLEMENTATIONS = ("windowed", "dense")


def worker(args: argparse.Namespace) -> None:
    """Run one implementation and print a JSON line of measurements."""
    import torch

    from walkreg.evaluation import evaluate_sequence, peak_rss_mb
    from walkreg.features import create_features
    from walkreg.propagation import PropagationConfig

    extractor = create_features(args.features).iter_features
    config = PropagationConfig(implementation=args.worker)
    result = evaluate_sequence(args.davis_root, args.sequence, extractor, args.out, "480p", config)
    print(
        json.dumps(
            {
                "implementation": args.worker,
                "frames": result.num_frames,
                "seconds": result.seconds,
                "feature_seconds": result.feature_seconds,
                "peak_rss_mb": peak_rss_mb(),
                "threads": torch.get_num_threads(),
                "J": result.j_mean,
                "F": result.f_mean,
            }
        )
    )


def link_first_frames(source: Path, sequence: str, frames: int, target: Path) -> None:
    """A DAVIS root holding symlinks to the first ``frames`` frames and masks of ``sequence`` at 480p."""
    for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
        files = sorted((source / kind / "480p" / sequence).glob(f"*{suffix}"))[:frames]
        if len(files) < frames:
            raise SystemExit(
                f"{source / kind / '480p' / sequence} has {len(files)} files, fewer than --frames {frames}"
            )
        folder = target / kind / "480p" / sequence
        folder.mkdir(parents=True)
        for file in files:
            (folder / file.name).symlink_to(file.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--davis-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "davis"
    )
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--frames", type=int, default=8, help="first frames of the sequence to use (>= 3)")
    parser.add_argument(
        "--features", default="random-resnet18", choices=("lab", "random-resnet18", "random-resnet18-small")
    )
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(describe())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        link_first_frames(args.davis_root, args.sequence, args.frames, tmp / "davis")
        rows = []
        for impl in IMPLEMENTATIONS:
            command = [
                sys.executable,
                __file__,
                "--worker",
                impl,
                "--davis-root",
                str(tmp / "davis"),
                "--sequence",
                args.sequence,
                "--features",
                args.features,
                "--out",
                str(tmp / impl),
            ]
            env = {**os.environ, "WALKREG_NO_PROGRESS": "1"}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode:
                raise SystemExit(f"{impl} worker failed:\n{done.stderr}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        names = sorted(p.name for p in (tmp / "windowed").iterdir())[1:]
        same = np.mean(
            [np.mean(read_annotation(tmp / "windowed" / n) == read_annotation(tmp / "dense" / n)) for n in names]
        )

    print(
        f"DAVIS {args.sequence}, first {args.frames} frames at 480p, features {args.features}, "
        f"paper protocol (context 1 + 20, top-10, radius 12, temperature 0.05); {rows[0]['threads']} torch threads"
    )
    print(
        f"{'implementation':<15} {'s/frame':>8} {'feat s/frame':>13} {'prop+score s/frame':>19} "
        f"{'peak RSS MiB':>13} {'J':>6} {'F':>6}"
    )
    for row in rows:
        per_frame = row["seconds"] / row["frames"]
        features = row["feature_seconds"] / row["frames"]
        print(
            f"{row['implementation']:<15} {per_frame:>8.2f} {features:>13.2f} {per_frame - features:>19.2f} "
            f"{row['peak_rss_mb']:>13.0f} {100 * row['J']:>6.1f} {100 * row['F']:>6.1f}"
        )
    print(f"predicted pixels identical between the two: {100 * same:.3f}%")


if __name__ == "__main__":
    main()
