"""Controlled-flicker study: is the CRW score monotone in flicker strength and does it rank edits like the flow warp error?

On real clips from the shared data (resized to 240p, first N frames) make per-frame edits of controlled strength:
independent per-frame colour gains, brightness offsets and texture noise, a per-frame stylisation (posterised
colour transform with parameters drawn per frame), shuffled frames and dropped (held) frames. Score every edit
against its source with ``walkreg.scoring.score_clip`` and with the DIS flow warp error, side by side, then
stabilise one flickering edit with each method. Usage:

    python bench/validate_score.py --encoder random-small --frames 16
"""

import argparse
import time

import torch

from walkreg.scoring import ScoreConfig, load_encoder, score_clip
from walkreg.stabilize import StabilizeConfig, stabilize
from walkreg.video import read_video


CLIPS = ["davis/JPEGImages/480p/blackswan", "davis/JPEGImages/480p/car-roundabout", "davis/JPEGImages/480p/dance-twirl"]


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
    return out


def ranks(values: list[float]) -> torch.Tensor:
    order = torch.tensor(values).argsort()
    r = torch.empty(len(values))
    r[order] = torch.arange(len(values), dtype=torch.float)
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data")
    parser.add_argument("--encoder", default="random-small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(240, 427))
    args = parser.parse_args()
    encoder = load_encoder(args.encoder)
    config = ScoreConfig(include_flow=True)
    print(f"encoder {args.encoder}; {args.frames} frames at {args.size[1]}x{args.size[0]}")
    for clip in CLIPS:
        src = read_video(f"{args.data}/{clip}", max_frames=args.frames, size=tuple(args.size))
        name = clip.split("/")[-1]
        rows = {}
        start = time.perf_counter()
        made = edits(src)
        for label, edited in made.items():
            rows[label] = score_clip(edited, encoder, src, config).overall
            no_source = score_clip(edited, encoder, None, config).overall
            rows[label]["walk_back_no_source"] = no_source["walk_back"]
            rows[label]["flow_error_no_source"] = no_source["flow_warp_error"]
        print(f"\n## {name} ({time.perf_counter() - start:.0f} s)")
        print("| edit | fidelity | agreement | walk_back | flow warp error (source flow) | flow warp error (edit's own flow) |")
        print("|---|---|---|---|---|---|")
        for label, r in rows.items():
            print(f"| {label} | {r['fidelity']:.4f} | {r['agreement']:.4f} | {r['walk_back']:.4f} | {r['flow_warp_error']:.4f} | {r['flow_error_no_source']:.4f} |")
        flow = [-r["flow_warp_error"] for r in rows.values()]
        own_flow = [-r["flow_error_no_source"] for r in rows.values()]
        for key in ("fidelity", "agreement"):
            print(f"Spearman({key}, -flow warp error) = {spearman([r[key] for r in rows.values()], flow):.3f}")
        print(f"Spearman(walk_back, -edit's own flow warp error) = {spearman([r['walk_back'] for r in rows.values()], own_flow):.3f}")
        for family in ("colour", "brightness", "texture"):
            values = [rows["clean"]] + [r for k, r in rows.items() if k.startswith(family)]
            for key in ("fidelity", "walk_back"):
                seq = [v[key] for v in values]
                print(f"{family}: {key} monotone decreasing with strength: {all(a > b for a, b in zip(seq, seq[1:], strict=False))} {[round(x, 4) for x in seq]}")
        # stabilisation of the strongest colour flicker, against the clean edit it came from
        flickering = made["colour 0.2"]
        print("\n| method | flow warp error (flicker) | fidelity | MAE to per-frame edit | MAE to clean clip | s |")
        print("|---|---|---|---|---|---|")
        for method in ("none", "ema", "flow", "crw"):
            start = time.perf_counter()
            out = flickering if method == "none" else torch.stack(list(stabilize(src, flickering, encoder, StabilizeConfig(method=method))))
            seconds = time.perf_counter() - start
            r = score_clip(out, encoder, src, config).overall
            print(f"| {method} | {r['flow_warp_error']:.4f} | {r['fidelity']:.4f} | {(out - flickering).abs().mean():.4f} | {(out - src).abs().mean():.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
