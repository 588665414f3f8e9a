"""Benchmark: does every scheduler walkreg supports carry the edit? Flicker cut and edit survival per scheduler, with
the adapters' history writes switched off as an ablation, all in one run.

The cases and measures are those of ``tests/test_scheduler_effect.py`` (tiny random-weight pipelines built offline,
the repository's ``cups.mp4`` clip): per-frame SD img2img (6 frames at 32x48), CogVideoX and Wan video-to-video (x4
time compression, 9 frames at 32x48), 10 denoising steps at strength 0.7.

- *flicker cut*: DIS-flow warp error of the decoded output along the source's flow, plain pipeline against
  ``WalkRegCallback(weight=1)`` on every step;
- *survival*: the callback acts at the first step only; the share of the final latents' distance to their own
  propagation that this one early edit removed (0 when the scheduler throws the edit away);
- *residual*: that distance, ``|P(z) - z| / |z|``, of the final latents, plain and with walkreg on every step.

    python bench/scheduler_effect.py [--cases NAME ...] [--no-ablation]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from machine import describe


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the cases live with the effect tests

import test_scheduler_effect as effect  # noqa: E402

from walkreg.pipelines import schedules  # noqa: E402


# the cases whose adapter writes history (the others are unchanged by the ablation)
ABLATED = ["PNDM (PLMS)", "PNDM (PRK)", "DPM-Solver++ multistep", "UniPC", "CogVideoX DPM", "Wan UniPC (flow)"]


def table(title: str, names: list[str]) -> None:
    print(f"\n{title}")
    print(
        "| scheduler | pipeline | bit-exact at weight 0 | flicker plain -> walkreg | cut | survival "
        "| residual plain -> walkreg |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        got = effect.measure(name)
        print(
            f"| {name} | {effect.CASES[name].pipeline} | {'yes' if got['bit_exact'] else 'NO'} | "
            f"{got['flicker_plain']:.4f} -> {got['flicker_walkreg']:.4f} | {100 * got['flicker_cut']:.1f} % | "
            f"{got['survival']:.3f} | {got['residual_plain']:.3f} -> {got['residual_walkreg']:.4f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(effect.CASES), help="case names (default: all)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the run with the history writes switched off")
    args = parser.parse_args()
    unknown = sorted(set(args.cases) - set(effect.CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(effect.CASES)}")
    print(describe())
    table("walkreg's scheduler adapters", args.cases)
    if args.no_ablation:
        return
    kept = [name for name in args.cases if name in ABLATED]
    effect.measure.cache_clear()
    schedules.SchedulerTap.edit_history = lambda self, delta: None  # the ablation: no history writes
    table("ablation: the same, with the edit not written into the schedulers' history", kept)


if __name__ == "__main__":
    main()
