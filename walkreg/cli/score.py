"""``walkreg score``: temporal-consistency scores of an edited clip, or of every clip in a folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from walkreg import atomic
from walkreg.cli.common import add_encoder_argument, add_overwrite_argument, finite_float
from walkreg.features import create_features
from walkreg.progress import progress
from walkreg.scoring import BATCH_SCHEMA, PREVIEW_FRAMES, WORST_PAIRS, ScoreConfig, score_files
from walkreg.video import VIDEO_SUFFIXES


DESCRIPTION = (
    "Score how temporally consistent EDITED is: walk-back consistency of its own CRW walks and, with --source, "
    "fidelity to the source motion and agreement of the walks. All scores are in [0, 1], higher is more consistent; "
    "the DIS optical-flow warp error (lower is better) can be reported beside them. Outputs (--json, --report) are "
    "written together or not at all, may not be an input, and replace existing files only with --overwrite."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ScoreConfig()
    parser.add_argument(
        "edited", metavar="EDITED", help="the edited video file or frame folder (with --batch: a folder of them)"
    )
    parser.add_argument(
        "--source",
        help="the unedited clip, same length, size and frame rate (with --batch: a folder of clips with the same "
        "names); without it only walk_back is scored (default: none)",
    )
    add_encoder_argument(parser)
    parser.add_argument(
        "--json",
        help="write the scores to this JSON file, schema walkreg.score/1 (batch: walkreg.score-batch/1) "
        "(default: none)",
    )
    parser.add_argument("--report", help="write a self-contained HTML report to this file (default: none)")
    parser.add_argument("--batch", action="store_true", help="score every clip in the EDITED folder (default: off)")
    parser.add_argument(
        "--flow-baseline",
        action="store_true",
        help="also report the DIS optical-flow warp error, lower is better; needs OpenCV (default: off)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=defaults.window,
        help="frames per palindrome walk of walk_back (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=finite_float,
        default=defaults.temperature,
        help="softmax temperature of the transitions; lower is sharper (default: %(default)s)",
    )
    parser.add_argument(
        "--radius",
        type=finite_float,
        default=defaults.radius,
        help="how far one step may reach, in 8x8 cells (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k", type=int, default=defaults.top_k, help="transitions kept per cell (default: %(default)s)"
    )
    parser.add_argument(
        "--colour-scale",
        type=finite_float,
        default=defaults.colour_scale,
        help="colour difference (mean absolute, 0-1 scale) that costs a factor e of score (default: %(default)s)",
    )
    add_overwrite_argument(parser)


def _batch_clips(folder: Path, sources: Path | None) -> list[tuple[Path, Path | None]]:
    """Video files and frame folders directly inside ``folder``, each paired with the same name in ``sources``."""
    clips = sorted(p for p in folder.iterdir() if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise ValueError(
            f"`EDITED` folder {str(folder)!r} holds no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders."
        )
    pairs = []
    for clip in clips:
        src = sources / clip.name if sources is not None else None
        if src is not None and not src.exists():
            raise ValueError(f"`--source` folder {str(sources)!r} has no {clip.name!r} to pair with {str(clip)!r}.")
        pairs.append((clip, src))
    return pairs


def run(args: argparse.Namespace) -> int:
    config = ScoreConfig(
        window=args.window,
        temperature=args.temperature,
        radius=args.radius,
        top_k=args.top_k,
        colour_scale=args.colour_scale,
        include_flow=args.flow_baseline,
        num_worst=WORST_PAIRS if args.report else 0,
        preview_frames=PREVIEW_FRAMES if args.report else 0,
    )
    edited = Path(args.edited)
    source = Path(args.source) if args.source else None
    outputs = {"--json": args.json, "--report": args.report}
    atomic.check_outputs_differ(outputs, {"EDITED": edited, "--source": source})
    atomic.check_outputs_new(outputs, args.overwrite)
    encoder = create_features(args.encoder)
    report = None
    if args.batch:
        if not edited.is_dir() or (source is not None and not source.is_dir()):
            raise ValueError("`--batch` needs `EDITED` (and `--source`, if given) to be folders of clips.")
        if args.report:
            raise ValueError("`--report` writes one clip's page; it cannot be combined with `--batch`.")
        results = [
            score_files(clip, src, encoder, config, args.encoder)[0]
            for clip, src in progress(_batch_clips(edited, source), desc="clips", unit="clip")
        ]
        body = {"schema": BATCH_SCHEMA, "clips": results}
        summary = "\n".join(f"{r['edited']}: consistency {r['overall']['consistency']:.4f}" for r in results)
    else:
        body, out = score_files(edited, source, encoder, config, args.encoder)
        summary = " ".join(f"{k}={v:.4f}" for k, v in out.overall.items())
        if args.report:
            from walkreg.report import render_report

            report = render_report(body, out)
    with atomic.output_set() as outputs:
        if report is not None:
            outputs.write_text(args.report, report)
        if args.json:
            outputs.write_text(args.json, json.dumps(body, indent=2) + "\n")
    sys.stdout.write(summary + "\n")
    return 0
