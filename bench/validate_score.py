"""Controlled-flicker study: is the CRW score monotone in flicker strength and does it rank edits like the flow
warp error?

On real clips from the shared data (first N frames, resized) make per-frame edits of controlled strength:
independent per-frame colour gains, brightness offsets and texture noise, a per-frame stylisation (a colour
matrix and posterisation drawn per frame), shuffled frames, dropped (held) frames and a frozen clip. Score every
edit against its source with ``walkreg.scoring.score_clip`` and, side by side, with the DIS optical-flow warp error
(flow of the source), then check

- Spearman rank correlation of each CRW score with the negated flow warp error, per clip and pooled over clips;
- monotonicity of the scores in the strength of each flicker family;

and stabilise two flickering edits (colour 0.2 and the per-frame stylisation) with each method of
``walkreg.stabilize`` at several strengths (a flicker / fidelity trade-off curve per method): flicker is the flow
warp error of the output with flow from the source (an independent measure: no CRW involved), fidelity is the mean
absolute distance to the per-frame edit. Usage:

    python bench/validate_score.py --encoder random-small --frames 16
"""

import argparse
import time
from pathlib import Path

import torch
from machine import describe

from walkreg.features import CachedFeatures, create_features
from walkreg.flow import flow_warp_error, guide_flow, warp_error
from walkreg.scoring import ScoreConfig, score_clip
from walkreg.stabilize import METHODS, StabilizeConfig, stabilize
from walkreg.video import read_video


CLIPS = [
    "davis/JPEGImages/480p/blackswan",
    "davis/JPEGImages/480p/dance-twirl",
    "videos/cups.mp4",
    "videos/davis-scooter-black.mp4",
]
FAMILIES = ("colour", "brightness", "texture")
STABILISED = ("colour 0.2", "stylised per frame")
STRENGTHS = (0.5, 0.8, 0.9)


def per_frame(frames: torch.Tensor, seed: int, fn) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([fn(f, g) for f in frames]).clamp(0, 1)


def edits(src: torch.Tensor) -> dict[str, torch.Tensor]:
    def gain(s):
        return lambda f, g: f * (1 + s * (torch.rand(3, 1, 1, generator=g) * 2 - 1))

    def offset(s):
        return lambda f, g: f + s * (torch.rand(1, generator=g) * 2 - 1)

    def noise(s):
        return lambda f, g: f + s * torch.randn(f.shape, generator=g)

    def stylise(f, g):
        matrix = torch.eye(3) + 0.25 * torch.randn(3, 3, generator=g)
        levels = int(torch.randint(4, 8, (1,), generator=g))
        return (torch.einsum("ij,jhw->ihw", matrix, f).clamp(0, 1) * levels).round() / levels

    out = {"clean": src}
    for s in (0.05, 0.1, 0.2, 0.3):
        out[f"colour {s}"] = per_frame(src, 1, gain(s))
    for s in (0.05, 0.1, 0.2):
        out[f"brightness {s}"] = per_frame(src, 2, offset(s))
    for s in (0.02, 0.05, 0.1):
        out[f"texture {s}"] = per_frame(src, 3, noise(s))
    out["stylised per frame"] = per_frame(src, 4, stylise)
    order = torch.arange(len(src)).view(-1, 4)[:, torch.tensor([1, 0, 3, 2])].flatten()
    out["shuffled"] = src[order]
    out["dropped (held)"] = src[torch.arange(len(src)) // 2 * 2]
    out["frozen"] = src[:1].expand_as(src).contiguous()
    return out


def ranks(values: list[float]) -> torch.Tensor:
    """Ranks with ties averaged."""
    x = torch.tensor(values, dtype=torch.float64)
    return ((x[:, None] > x[None]).sum(1) + ((x[:, None] == x[None]).sum(1) - 1) / 2).double()


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def source_warp_error(flows: list, frames: torch.Tensor) -> float:
    """Mean warp error of ``frames`` ``(T, 3, H, W)`` along the source's flows (``guide_flow`` of every pair)."""
    return sum(warp_error(flow, (frames[t], frames[t + 1])) for t, flow in enumerate(flows)) / len(flows)


def own_warp_error(frames: torch.Tensor) -> float:
    """Mean DIS flow warp error of ``frames`` along their own flow (what is measurable without a source)."""
    return sum(
        flow_warp_error((frames[t], frames[t + 1]), (frames[t], frames[t + 1])) for t in range(len(frames) - 1)
    ) / (len(frames) - 1)


def score_table(
    name: str, src: torch.Tensor, flows: list, made: dict, encoder, config: ScoreConfig
) -> dict[str, dict[str, float]]:
    """Score every edit (``walk_back`` needs no source, so one pass with the source gives all CRW scores)."""
    rows = {}
    start = time.perf_counter()
    for label, edited in made.items():
        rows[label] = score_clip(edited, encoder, src, config).overall
        rows[label].update(flow_warp_error=source_warp_error(flows, edited), flow_error_own=own_warp_error(edited))
    print(f"\n## {name} ({time.perf_counter() - start:.0f} s)\n")
    print(
        "| edit | fidelity | fidelity error | agreement | walk_back | flow warp error (source flow) | "
        "flow warp error (edit's own flow) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['fidelity']:.4f} | {r['fidelity_error']:.4f} | {r['agreement']:.4f} "
            f"| {r['walk_back']:.4f} | {r['flow_warp_error']:.4f} | {r['flow_error_own']:.4f} |"
        )
    print()
    for line in correlations(rows):
        print(line)
    for family in FAMILIES:
        values = [rows["clean"]] + [r for k, r in rows.items() if k.startswith(family)]
        for key, sign in (("fidelity", 1), ("walk_back", 1), ("flow_warp_error", -1)):
            seq = [sign * v[key] for v in values]
            print(
                f"{family}: {key} monotone in strength: {all(a > b for a, b in zip(seq, seq[1:], strict=False))} "
                f"{[round(sign * x, 4) for x in seq]}"
            )
    return rows


def correlations(rows: dict) -> list[str]:
    flow = [-r["flow_warp_error"] for r in rows.values()]
    own = [-r["flow_error_own"] for r in rows.values()]
    return [
        f"Spearman(fidelity, -flow warp error) = {spearman([r['fidelity'] for r in rows.values()], flow):.3f}",
        f"Spearman(agreement, -flow warp error) = {spearman([r['agreement'] for r in rows.values()], flow):.3f}",
        "Spearman(walk_back, -edit's own flow warp error) = "
        f"{spearman([r['walk_back'] for r in rows.values()], own):.3f}",
    ]


def stabilisation_table(src: torch.Tensor, flows: list, made: dict, encoder) -> list[dict]:
    """Stabilise each edit of ``STABILISED`` with every method at every strength (the flicker / fidelity trade-off)."""
    print(
        "\n| edit | method | strength | flicker: flow warp error | flicker reduction | MAE to per-frame edit | "
        "MAE to source | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for label in STABILISED:
        edited = made[label]
        before = source_warp_error(flows, edited)
        print(f"| {label} | none | | {before:.4f} | 0% | 0 | {(edited - src).abs().mean():.4f} | |")
        for method in METHODS:
            for strength in STRENGTHS:
                start = time.perf_counter()
                out = torch.stack(
                    list(stabilize(src, edited, encoder, StabilizeConfig(method=method, strength=strength)))
                )
                seconds = time.perf_counter() - start
                flicker = source_warp_error(flows, out)
                fidelity = float((out - edited).abs().mean())
                results.append(
                    {"method": method, "strength": strength, "reduction": 1 - flicker / before, "mae": fidelity}
                )
                print(
                    f"| {label} | {method} | {strength} | {flicker:.4f} | {100 * (1 - flicker / before):.0f}% "
                    f"| {fidelity:.4f} | {(out - src).abs().mean():.4f} | {seconds:.1f} |"
                )
    return results


def main():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--clips", nargs="+", default=CLIPS, help="clips relative to --data")
    parser.add_argument("--encoder", default="random-small")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (a multiple of 4)")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 427), metavar=("H", "W"))
    parser.add_argument("--sub-cells", type=int, default=ScoreConfig.sub_cells, help="ScoreConfig.sub_cells")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 avoids thread contention on a shared CPU)"
    )
    args = parser.parse_args()
    if args.frames % 4:
        parser.error(
            f"--frames must be a multiple of 4 (the shuffle swaps frames in blocks of 4), but is {args.frames}"
        )
    print(describe())
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ScoreConfig(sub_cells=args.sub_cells)
    print(f"# encoder {args.encoder}; {args.frames} frames per clip at {args.size[1]}x{args.size[0]}; {config}")
    pooled, stabilised = {}, []
    for clip in args.clips:
        encoder = CachedFeatures(create_features(args.encoder))
        src = read_video(f"{args.data}/{clip}", max_frames=args.frames, size=tuple(args.size))
        name = clip.rstrip("/").split("/")[-1]
        made = edits(src)
        flows = [guide_flow(src[t], src[t + 1]) for t in range(len(src) - 1)]
        rows = score_table(name, src, flows, made, encoder, config)
        pooled.update({f"{name}: {label}": r for label, r in rows.items()})
        stabilised += stabilisation_table(src, flows, made, encoder)
    print(f"\n## pooled over {len(args.clips)} clips ({len(pooled)} edits)\n")
    for line in correlations(pooled):
        print(line)
    print("\n| method | strength | mean flicker reduction | mean MAE to per-frame edit |\n|---|---|---|---|")
    for method in METHODS:
        for strength in STRENGTHS:
            chosen = [r for r in stabilised if (r["method"], r["strength"]) == (method, strength)]
            print(
                f"| {method} | {strength} | {100 * sum(r['reduction'] for r in chosen) / len(chosen):.1f}% "
                f"| {sum(r['mae'] for r in chosen) / len(chosen):.4f} |"
            )


if __name__ == "__main__":
    main()
