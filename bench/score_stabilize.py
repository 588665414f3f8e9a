"""Speed of ``walkreg score`` / ``walkreg stabilize`` at 480p and peak memory against clip length, in one run.

Each measurement runs in a fresh subprocess (so ``ru_maxrss`` is that run's peak) on the first N frames of a real
480p clip from the shared data, streamed from disk as the CLI does. Usage:

    python bench/score_stabilize.py --encoder random-resnet18-small --lengths 8 16 32
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


CHILD = r"""
import json, resource, sys, time, torch
from walkreg.features import create_features
from walkreg.scoring import ScoreConfig, score_clip
from walkreg.stabilize import StabilizeConfig, stabilize
from walkreg.video import iter_frames
task, path, frames, spec, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
if threads:
    torch.set_num_threads(threads)
encoder = create_features(spec)
start = time.perf_counter()
if task == "score":
    score_clip(iter_frames(path, max_frames=frames), encoder, iter_frames(path, max_frames=frames), ScoreConfig())
else:
    for _ in stabilize(
        iter_frames(path, max_frames=frames),
        iter_frames(path, max_frames=frames),
        encoder,
        StabilizeConfig(method=task.split(":")[1]),
    ):
        pass
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clip",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "cups.mp4"),
        help="a 480p clip",
    )
    parser.add_argument("--encoder", default="random-resnet18-small")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--tasks", nargs="+", default=["score", "stabilize:crw", "stabilize:flow", "stabilize:ema"])
    args = parser.parse_args()
    print(f"clip {args.clip}, encoder {args.encoder}, torch threads: {args.threads or 'default'}")
    print("| task | frames | seconds | fps | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for task in args.tasks:
        for frames in args.lengths:
            wall = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", CHILD, task, args.clip, str(frames), args.encoder, str(args.threads)],
                capture_output=True,
                text=True,
                env={"WALKREG_NO_PROGRESS": "1", "PATH": ""},
            )
            if result.returncode:
                raise SystemExit(result.stderr.strip().splitlines()[-1])
            r = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"| {task} | {frames} | {r['seconds']:.1f} | {frames / r['seconds']:.2f} | {r['peak_mib']:.0f} |  "
                f"(wall {time.perf_counter() - wall:.0f} s)"
            )


if __name__ == "__main__":
    main()
