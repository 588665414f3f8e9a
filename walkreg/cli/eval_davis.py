"""``walkreg eval-davis``: DAVIS label propagation scored with J and F, for an encoder and baselines side by side."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from walkreg.atomic import fill_new_directory
from walkreg.cli.common import add_device_argument, finite_float, resolve_device
from walkreg.evaluation import (
    FeatureExtractor,
    MethodResult,
    evaluate_sequence,
    peak_rss_mb,
    results_csv,
    results_table,
)
from walkreg.features import FEATURE_NAMES, create_features
from walkreg.propagation import PropagationConfig
from walkreg.video import davis_sequences


DESCRIPTION = (
    "Propagate each sequence's first-frame masks with an encoder's features and/or baselines, write DAVIS palette "
    "PNGs to OUT/<method>/<sequence>/, and score J (region IoU) and F (boundary) as davis2017-evaluation does. "
    "Prints a table and writes OUT/results.csv and OUT/results.json."
)
BASELINES = tuple(name for name in FEATURE_NAMES if name != "default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PropagationConfig()
    parser.add_argument(
        "--davis-root",
        required=True,
        type=Path,
        help="the DAVIS folder holding JPEGImages/ and Annotations/ (required)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory; it must be new or empty (required)")
    parser.add_argument(
        "--encoder",
        metavar="NAME_OR_DIR",
        help="the encoder to evaluate: an encoder directory (CRWEncoder.save_pretrained or convert-crw) or "
        "'default' for the bundled encoder; reported as method 'encoder' (default: none)",
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        default=[],
        choices=BASELINES,
        metavar="NAME",
        help="features to evaluate beside the encoder, each reported under its own name: "
        f"{', '.join(BASELINES)} (default: none)",
    )
    parser.add_argument(
        "--sequences", nargs="+", metavar="SEQ", help="the sequences to evaluate (default: all of DAVIS_ROOT)"
    )
    parser.add_argument(
        "--resolution",
        default="480p",
        help="the resolution folder under JPEGImages/ and Annotations/ (default: %(default)s)",
    )
    parser.add_argument(
        "--num-context",
        type=int,
        default=defaults.num_context,
        help="previous frames in the propagation context, beside the first (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=defaults.top_k,
        help="neighbours per cell, chosen jointly over the whole context (default: %(default)s)",
    )
    parser.add_argument(
        "--radius",
        type=finite_float,
        default=defaults.radius,
        help="how far a label may move between frames, in 8x8 cells (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=finite_float,
        default=defaults.temperature,
        help="softmax temperature of the affinities (default: %(default)s)",
    )
    parser.add_argument(
        "--implementation",
        default=defaults.implementation,
        choices=("auto", "windowed", "dense"),
        help="how propagation computes affinities; all give the same labels (default: %(default)s)",
    )
    parser.add_argument(
        "--void",
        default="background",
        choices=("background", "ignore"),
        help="how void pixels (id 255) are scored: as background, as davis2017-evaluation does, so J&F compares "
        "with published figures; or ignored, left out of J and F (the default before, with which the model card's "
        "figures were measured) (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="initialisation seed of the random-init baselines (default: %(default)s)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=4, help="frames per encoder forward pass (default: %(default)s)"
    )
    add_device_argument(parser)


def _methods(args: argparse.Namespace) -> list[tuple[str, FeatureExtractor, dict]]:
    """(name, feature extractor, description) for ``--encoder`` and every ``--baselines`` entry."""
    device = resolve_device(args.device)
    named = ([("encoder", args.encoder)] if args.encoder else []) + [
        (name, name) for name in dict.fromkeys(args.baselines)
    ]
    methods = []
    for name, spec in named:
        features = create_features(spec, device, seed=args.seed)
        info = {"features": str(spec)}
        if hasattr(features, "arch"):
            info["arch"] = features.arch
            extractor = lambda frames, f=features: f.iter_features(frames, chunk_size=args.chunk_size)  # noqa: E731
        else:
            extractor = features.iter_features
        if spec.startswith("random-"):
            info["seed"] = args.seed
        methods.append((name, extractor, info))
    return methods


def run(args: argparse.Namespace) -> int:
    if not args.encoder and not args.baselines:
        raise ValueError(
            f"Nothing to evaluate: pass `--encoder` and/or `--baselines` (one or more of {', '.join(BASELINES)})."
        )
    if args.chunk_size < 1:
        raise ValueError(f"`--chunk-size` must be >= 1, but is {args.chunk_size}.")
    config = PropagationConfig(
        num_context=args.num_context,
        top_k=args.top_k,
        radius=args.radius,
        temperature=args.temperature,
        implementation=args.implementation,
    )
    available = davis_sequences(args.davis_root, args.resolution)
    sequences = args.sequences or available
    unknown = [s for s in sequences if s not in available]
    if unknown:
        raise ValueError(
            f"`--sequences` must name sequences of {args.davis_root} ({', '.join(available)}), "
            f"but got {', '.join(unknown)}."
        )
    methods = _methods(args)

    def write(tmp: Path) -> tuple[list[MethodResult], dict]:
        results = []
        for name, extractor, _ in methods:
            result = MethodResult(name)
            for seq in sequences:
                result.sequences.append(
                    evaluate_sequence(
                        args.davis_root,
                        seq,
                        extractor,
                        tmp / name / seq,
                        args.resolution,
                        config,
                        args.void,
                        desc=f"{name} {seq}",
                    )
                )
            results.append(result)
        report = {
            "davis_root": str(args.davis_root),
            "resolution": args.resolution,
            "sequences": sequences,
            "protocol": asdict(config),
            "void": args.void,
            "device": str(resolve_device(args.device)),
            "peak_rss_mb": peak_rss_mb(),
            "methods": {name: {**info, **r.to_dict()} for (name, _, info), r in zip(methods, results, strict=True)},
        }
        (tmp / "results.csv").write_text(results_csv(results))
        (tmp / "results.json").write_text(json.dumps(report, indent=2))
        return results, report

    results, report = fill_new_directory(args.out, write, "`--out`")
    rss = report["peak_rss_mb"]
    where = f"predictions, results.csv and results.json in {args.out}"
    sys.stdout.write(
        results_table(results) + "\n" + (f"peak RSS {rss:.0f} MiB; {where}" if rss is not None else where) + "\n"
    )
    return 0
