"""Speed of ``walkreg score`` / ``walkreg stabilize`` against the encoder's own feature pass, and peak memory against
clip length, in one run.

Each measurement runs in a fresh subprocess (its peak resident memory is ``VmHWM``, which, unlike ``ru_maxrss``,
does not start from the forking parent's size) on the first N frames of a real
480p clip, streamed from disk as the CLI does. ``features`` is one pass of the encoder over the clip (what any
consumer of the features pays at least once); ``score`` needs two (source and edit) plus the walks; ``stabilize``
one plus the walks. The ratio column divides each task's time by the feature pass of the same length, measured in
the same run. Usage:

    python bench/score_stabilize.py --encoder default --lengths 8 16 32 --threads 1
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from machine import describe


CHILD = r"""
import json, sys, time, torch
from walkreg.features import create_features
from walkreg.scoring import ScoreConfig, score_clip
from walkreg.stabilize import StabilizeConfig, stabilize
from walkreg.video import iter_frames
task, path, frames, spec, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
if threads:
    torch.set_num_threads(threads)
encoder = create_features(spec)
clip = lambda: iter_frames(path, max_frames=frames)
start = time.perf_counter()
if task == "features":
    for _ in encoder.iter_features(clip()):
        pass
elif task == "score":
    score_clip(clip(), encoder, clip(), ScoreConfig())
else:
    for _ in stabilize(clip(), clip(), encoder, StabilizeConfig(method=task.split(":")[1])):
        pass
seconds = time.perf_counter() - start
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]  # this process's own
print(json.dumps({"seconds": seconds, "peak_mib": int(peak) / 1024}))
"""


def measure(task: str, clip: str, frames: int, encoder: str, threads: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, task, clip, str(frames), encoder, str(threads)],
        capture_output=True,
        text=True,
        env={"WALKREG_NO_PROGRESS": "1", "PATH": ""},
    )
    if result.returncode:
        raise SystemExit(result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--clip",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "cups.mp4"),
        help="a 480p clip",
    )
    parser.add_argument("--encoder", default="default")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--tasks", nargs="+", default=["score", "stabilize:crw", "stabilize:flow", "stabilize:ema"])
    args = parser.parse_args()
    print(describe())
    print(f"clip {args.clip}, encoder {args.encoder}, torch threads: {args.threads or 'default'}")
    print("| task | frames | seconds | fps | x feature pass | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for frames in args.lengths:
        base = measure("features", args.clip, frames, args.encoder, args.threads)
        for task in ["features", *args.tasks]:
            r = base if task == "features" else measure(task, args.clip, frames, args.encoder, args.threads)
            print(
                f"| {task} | {frames} | {r['seconds']:.1f} | {frames / r['seconds']:.2f} | "
                f"{r['seconds'] / base['seconds']:.2f} | {r['peak_mib']:.0f} |"
            )


if __name__ == "__main__":
    main()
