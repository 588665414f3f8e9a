"""Ablation of the known-motion training options: the same fine-tuning run with each combination, then the
ground-truth correspondence benchmark and DAVIS label propagation on every resulting encoder, in one run.

Variants (``--variants``, all by default): the walk-back loss alone (``crw``), plus synthetic known-motion clips
(``+syn``, ``synthetic_fraction``), plus the DIS-flow teacher on real clips (``+teacher``), plus both
(``+syn+teacher``), each with the walk over whole-frame feature cells (``frame``, ``node_mode="frame"``) and over
the paper's patch grid (``grid``). Every variant starts from the same encoder (``--init-encoder``, the bundled one by
default: its ``layer1``-``layer3``, with a fresh ``layer4`` and head), sees the same clips in the same order (same
seed) and takes the same number of updates; its wall-clock time is reported beside its scores. Then
``bench/correspondence.py`` scores every encoder beside the bundled one, random init, Lab cells, zero motion and DIS
flow (``<out>/correspondence.json``), and ``walkreg eval-davis`` gives label-propagation J&F on ``--davis-root``
(the repository's 240p DAVIS fixtures by default) for every encoder and baseline. A second call with the same
``--out`` trains only the variants it has not trained yet and evaluates them all again. Usage:

    python bench/motion_ablation.py --out runs/ablation --data footage/train-videos --steps 50
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import describe


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OPTIONS = {
    "crw": [],
    "+syn": ["--synthetic-fraction", "0.5"],
    "+teacher": ["--flow-teacher"],
    "+syn+teacher": ["--synthetic-fraction", "0.5", "--flow-teacher"],
}
VARIANTS = [f"{mode}{option}" for mode in ("frame", "grid") for option in OPTIONS]


def variant_flags(name: str) -> list[str]:
    """``walkreg train`` flags of a variant name such as ``frame+syn+teacher`` or ``gridcrw``."""
    mode = "frame" if name.startswith("frame") else "grid"
    option = name[len(mode) :]
    flags = ["--node-mode", mode, *OPTIONS[option]]
    if mode == "grid":  # the paper's 7x7 grid, scaled to the frame size
        flags += ["--patch-size", "32", "--patch-stride", "16"]
    return flags


def train_variant(name: str, args: argparse.Namespace) -> dict:
    """Run ``walkreg train`` for one variant into ``<out>/<name>``; returns its time and last logged losses."""
    run = Path(args.out) / name
    command = [
        sys.executable, "-m", "walkreg", "train",
        "--data", *args.data,
        "--output-dir", str(run),
        "--init-encoder", args.init_encoder,
        "--frame-size", str(args.frame_size),
        "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate),
        "--max-train-steps", str(args.steps),
        "--checkpointing-steps", str(args.steps),
        "--logging-steps", "5",
        "--num-workers", "0",
        "--preload-frames",
        "--report-to", "none",
        "--seed", str(args.seed),
        *variant_flags(name),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True)
    minutes = (time.perf_counter() - start) / 60
    lines = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    return {
        "minutes": minutes,
        "walk_back_loss": last["train/loss"],
        "motion_loss": last.get("train/motion_loss"),
        "encoder": str(run / "encoder"),
    }


def davis_jf(features: str, out: Path, args: argparse.Namespace) -> float:
    """Mean J&F of ``walkreg eval-davis`` with ``features`` (an encoder directory or a baseline name)."""
    kind = ["--baselines", features] if features in ("random-resnet18", "lab") else ["--encoder", features]
    command = [sys.executable, "-m", "walkreg", "eval-davis", "--davis-root", args.davis_root,
               "--resolution", args.resolution, "--out", str(out), *kind]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    methods = json.loads((out / "results.json").read_text())["methods"]
    return 100 * next(iter(methods.values()))["JF_mean"]


def evaluate(results: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    """Correspondence errors (synthetic and real, 1 step, argmax) and J&F of every trained variant and baseline."""
    out = Path(args.out) / "eval"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    methods = {"bundled": args.init_encoder, "random-resnet18": "random-resnet18", "lab": "lab"}
    methods.update({name: r["encoder"] for name, r in results.items()})
    corr = out / "correspondence.json"
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("correspondence.py")), "--encoders", *methods.values(),
         "--json", str(corr)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    pooled = json.loads(corr.read_text())["results"]
    errors = {
        name: {s: pooled[s]["pooled"]["1"][spec]["argmax"]["mean"] for s in pooled if "pooled" in pooled[s]}
        for name, spec in methods.items()
    }
    jf = {name: davis_jf(spec, out / f"davis-{i}", args) for i, (name, spec) in enumerate(methods.items())}
    return errors, jf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the runs and results.json")
    parser.add_argument("--data", nargs="+", required=True, help="training videos (as `walkreg train --data`)")
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--init-encoder", default=str(ROOT / "walkreg" / "assets" / "encoder"))
    parser.add_argument("--steps", type=int, default=50, help="optimizer updates per variant")
    parser.add_argument("--frame-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--davis-root", default=str(ROOT / "tests" / "fixtures" / "davis"))
    parser.add_argument("--resolution", default="240p")
    args = parser.parse_args()
    print(describe())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "training.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in args.variants:
        if name in results:
            continue  # trained by an earlier call
        results[name] = train_variant(name, args)
        results_file.write_text(json.dumps(results, indent=2))
    errors, jf = evaluate(results, args)
    (out / "results.json").write_text(json.dumps({"training": results, "argmax_epe": errors, "jf": jf}, indent=2))
    sets = sorted({s for e in errors.values() for s in e})
    print(f"| method | minutes | walk-back loss | motion loss | {' | '.join(f'{s} argmax EPE' for s in sets)} | J&F |")
    print("|---|" + "---|" * (4 + len(sets)))
    for name in errors:
        r = results.get(name, {"minutes": None, "walk_back_loss": None, "motion_loss": None})
        train = ["-" if r[k] is None else f"{r[k]:.{d}f}" for k, d in (("minutes", 1), ("walk_back_loss", 3),
                                                                        ("motion_loss", 3))]  # fmt: skip
        epe = [f"{errors[name][s]:.2f}" for s in sets]
        print(f"| {name} | {' | '.join(train + epe)} | {jf[name]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
