"""Quality of ``walkreg stabilize`` on real clips, every method side by side in one run, plus its speed at 480p.

Five frame-by-frame edits that flicker in different bands are made of the first ``--frames`` frames of each shared
clip (resized to ``--height``), each frame with its own random draw: ``grade`` (colour-grade jitter: gain, offset,
gamma), ``palette`` (k-means palette of 8 colours, own seed per frame), ``stylise`` (blur, shifted colour levels and
inked edges at a per-frame threshold, plus a per-frame grade), ``clahe`` (local contrast with a per-frame clip
limit) and ``grain`` (film grain re-synthesised per frame). Each edit is stabilised by every method at every
``--strengths`` value, and measured by an independent flow metric: the occlusion-masked warp error along OpenCV DIS
flow of the source (:func:`walkreg.flow.warp_error`), as a cut relative to the per-frame edit, and the PSNR to the
per-frame edit. Per family and method the cut is interpolated (linearly in PSNR) at equal PSNR, 30 and 33 dB.

Methods (the ablation): ``crw`` (the default: the bundled encoder's transitions, soft placement, refinement on the
source pixels), the same fed with ``random-resnet18`` and ``lab`` transitions, ``crw`` without the refinement
(soft placement alone), ``flow`` (DIS flow in the same filter), ``ema`` (no motion, same filter) and ``before``
(``walkreg/stabilize.py`` of the git revision ``--before``, ``HEAD`` by default, its ``crw``; ``a52650f^`` is the
low-band, one-way filter walkreg had before this benchmark). The source motion of each method is computed once per
clip and reused for every edit and strength (``walkreg.stabilize.source_motion``).

A reference row, ``unedited source``, is the cut the source clip itself has against each edit
(``1 - warp error(source) / warp error(edit)``): the metric's floor (flow errors, lighting, occlusion borders) is in
every output, so no method that keeps the edit gets far past it.

Speed: ``walkreg stabilize`` as the CLI streams it (fresh subprocess per run, so peak RSS is that run's) on the
first N frames of a 480p clip, ``--before``'s filter against the methods of the working tree. Usage:

    python bench/stabilize_quality.py --json runs/stabilize_quality.json
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from machine import describe

from walkreg.demo import posterize
from walkreg.features import CachedFeatures, create_features
from walkreg.flow import guide_flow, warp_error
from walkreg.progress import progress
from walkreg.stabilize import StabilizeConfig, source_motion, stabilize_along
from walkreg.video import read_video


ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
CLIPS = ["bedroom", "cups", "davis-cows", "davis-kite-surf"]
FAMILIES = ["grade", "palette", "stylise", "clahe", "grain"]
# method -> (features, StabilizeConfig keywords); "before" is the stabilize of the revision --before
METHODS = {
    "crw": ("default", {}),
    "crw random-resnet18": ("random-resnet18", {}),
    "crw lab": ("lab", {}),
    "crw no refinement": ("default", {"refine": False}),
    "flow": (None, {"method": "flow"}),
    "ema": (None, {"method": "ema"}),
    "before": ("default", {}),
}
LEVELS = (30.0, 33.0)


def uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape or (1,), generator=generator)


def grade(frame: torch.Tensor, generator: torch.Generator, amount: float = 1.0) -> torch.Tensor:
    """A random colour grade of ``(3, H, W)``: per-channel gain and offset, and a gamma."""
    gain = 1 + amount * uniform(generator, -0.1, 0.1, 3, 1, 1)
    offset = amount * uniform(generator, -0.03, 0.03, 3, 1, 1)
    gamma = 1 + amount * uniform(generator, -0.15, 0.15)
    return (frame.clamp(0, 1) ** gamma * gain + offset).clamp(0, 1)


def blur(frame: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` (reflect border)."""
    radius = max(1, round(3 * sigma))
    taps = torch.exp(-(torch.arange(-radius, radius + 1.0) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    c = frame.shape[0]
    x = F.pad(frame[None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)[0]


def stylise(frame: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, colour levels shifted per frame, edges inked at a per-frame threshold, then a per-frame grade."""
    smooth = blur(frame, 1.2)
    levels = 6
    shift = uniform(generator, 0, 1)
    flat = (torch.floor(smooth * levels + shift) - shift + 0.5).clamp(0, levels) / levels
    grey = smooth.mean(0, keepdim=True)[None]
    gx = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), torch.tensor([[[[-1.0, 0, 1]] * 3]]) / 3)
    gy = F.conv2d(
        F.pad(grey, (1, 1, 1, 1), mode="replicate"), torch.tensor([[[[-1.0, 0, 1]] * 3]]).transpose(2, 3) / 3
    )
    ink = ((gx.square() + gy.square()).sqrt()[0] > uniform(generator, 0.03, 0.07)).float()
    return grade(flat * (1 - 0.8 * ink), generator)


def clahe(frame: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """OpenCV CLAHE on the L channel of Lab, 8x8 tiles, clip limit drawn per frame in [1.5, 4]."""
    rgb = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
    limit = float(uniform(generator, 1.5, 4.0))
    lab[..., 0] = cv2.createCLAHE(clipLimit=limit, tileGridSize=(8, 8)).apply(lab[..., 0])
    return torch.from_numpy(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)).permute(2, 0, 1).float() / 255


def grain(frame: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Film grain re-synthesised per frame: blurred Gaussian noise, mostly in luminance."""
    noise = torch.randn(4, *frame.shape[-2:], generator=generator)
    luma, chroma = blur(noise[:1], 0.8) * 0.06, blur(noise[1:], 0.8) * 0.015
    return (frame + luma + chroma).clamp(0, 1)


EDITS = {
    "grade": grade,
    "palette": lambda frame, generator: posterize(frame, 8, generator),
    "stylise": stylise,
    "clahe": clahe,
    "grain": grain,
}


def edit_clip(frames: torch.Tensor, family: str, seed: int) -> torch.Tensor:
    """``(T, 3, H, W)`` -> the per-frame edit of ``family``, every frame with its own draw."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([EDITS[family](frame, generator) for frame in frames])


def load_clip(name: str, frames: int, height: int) -> torch.Tensor:
    clip = read_video(VIDEOS / f"{name}.mp4", max_frames=frames)
    width = round(clip.shape[-1] * height / clip.shape[-2])
    return F.interpolate(clip, size=(height, width), mode="area").clamp(0, 1)


def mean_warp_error(flows: list, clip: torch.Tensor) -> float:
    return sum(warp_error(flow, (clip[t], clip[t + 1])) for t, flow in enumerate(flows)) / len(flows)


def psnr(clip: torch.Tensor, reference: torch.Tensor) -> float:
    return float(-10 * torch.log10((clip - reference).square().mean().clamp_min(1e-12)))


def stabilize_at(revision: str):
    """``walkreg/stabilize.py`` as committed at git ``revision``, loaded as its own module."""
    text = subprocess.run(
        ["git", "show", f"{revision}:walkreg/stabilize.py"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    path = Path(tempfile.mkdtemp()) / "stabilize_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("stabilize_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


class Runner:
    """Stabilises any edit of one clip with one method at any strength (source motion computed once)."""

    def __init__(self, method: str, source: torch.Tensor, encoders: dict, before):
        features, options = METHODS[method]
        self.method, self.source, self.options, self.before = method, source, options, before
        self.encoder = encoders.get(features)
        start = time.perf_counter()
        if method == "before":
            self.motion = None
            list(self.encoder.iter_features(source))  # fill the cache, as the others pay their motion here
        else:
            self.motion = list(source_motion(source, self.encoder, StabilizeConfig(**options)))
        self.motion_seconds = time.perf_counter() - start

    def __call__(self, edited: torch.Tensor, strength: float) -> torch.Tensor:
        if self.method == "before":
            config = self.before.StabilizeConfig(strength=strength)
            return torch.stack(list(self.before.stabilize(self.source, edited, self.encoder, config)))
        config = StabilizeConfig(strength=strength, **self.options)
        return torch.stack(list(stabilize_along(self.source, edited, self.motion, config)))


def measure_clip(name: str, args, encoders: dict, before) -> dict:
    """Every family x method x strength on one clip: warp error and PSNR."""
    source = load_clip(name, args.frames, args.height)
    flows = [guide_flow(source[t], source[t + 1]) for t in range(len(source) - 1)]
    result = {"clip": name, "size": list(source.shape[-2:]), "source_warp_error": mean_warp_error(flows, source)}
    edits = {family: edit_clip(source, family, seed) for seed, family in enumerate(args.families)}
    result["edit_warp_error"] = {family: mean_warp_error(flows, edit) for family, edit in edits.items()}
    result["motion_seconds"], result["runs"] = {}, []
    for method in args.methods:
        runner = Runner(method, source, encoders, before)
        result["motion_seconds"][method] = runner.motion_seconds
        for family, strength in progress(
            [(f, s) for f in args.families for s in args.strengths], desc=f"{name} {method}", unit="run"
        ):
            out = runner(edits[family], strength)
            error = mean_warp_error(flows, out)
            result["runs"].append({
                "family": family, "method": method, "strength": strength, "warp_error": error,
                "cut": 1 - error / result["edit_warp_error"][family], "psnr": psnr(out, edits[family]),
            })  # fmt: skip
    return result


def curve(clips: list[dict], family: str, method: str, strengths: list[float]) -> list[tuple[float, float, float]]:
    """``(strength, mean cut, mean PSNR)`` over the clips, per strength."""
    points = []
    for strength in strengths:
        key = (family, method, strength)
        runs = [r for c in clips for r in c["runs"] if (r["family"], r["method"], r["strength"]) == key]
        points.append((strength, float(np.mean([r["cut"] for r in runs])), float(np.mean([r["psnr"] for r in runs]))))
    return points


def cut_at(points: list[tuple[float, float, float]], level: float) -> tuple[float | None, str]:
    """The cut at PSNR ``level``, linear in PSNR between the two strengths around it; ``None`` with a note when the
    curve does not reach it (every strength above: ``>= cut`` of the strongest; every one below: ``n/a``)."""
    pairs = sorted((p, c) for _, c, p in points)
    if pairs[-1][0] < level:
        return None, "below"
    if pairs[0][0] > level:
        return pairs[0][1], "above"
    for (p0, c0), (p1, c1) in zip(pairs, pairs[1:], strict=False):
        if p0 <= level <= p1:
            return c0 + (c1 - c0) * (level - p0) / max(p1 - p0, 1e-9), "interpolated"
    return None, "below"


def show(value: float | None, note: str) -> str:
    if value is None:
        return "n/a (<)"
    return f"≥{100 * value:.1f}" if note == "above" else f"{100 * value:.1f}"


SPEED_CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[6])
from walkreg.features import create_features
from walkreg.video import iter_frames
task, path, frames, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
if task == "before":
    import importlib.util
    spec = importlib.util.spec_from_file_location("before", sys.argv[5])
    module = importlib.util.module_from_spec(spec); sys.modules["before"] = module; spec.loader.exec_module(module)
    run = lambda s, e, enc: module.stabilize(s, e, enc, module.StabilizeConfig())
else:
    from walkreg.stabilize import StabilizeConfig, stabilize
    run = lambda s, e, enc: stabilize(s, e, enc, StabilizeConfig(method=task))
encoder = create_features("default")
clip = lambda: iter_frames(path, max_frames=frames)
start = time.perf_counter()
for _ in run(clip(), clip(), encoder):
    pass
seconds = time.perf_counter() - start
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]  # this process's own
print(json.dumps({"seconds": seconds, "peak_mib": int(peak) / 1024}))
"""


def measure_speed(task: str, clip: Path, frames: int, threads: int, before_path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SPEED_CHILD, task, str(clip), str(frames), str(threads), str(before_path), str(ROOT)],
        capture_output=True, text=True, env={"WALKREG_NO_PROGRESS": "1", "PATH": "", "OMP_NUM_THREADS": str(threads)},
    )  # fmt: skip
    if result.returncode:
        raise SystemExit(result.stderr.strip().splitlines()[-1])
    return {"task": task, "frames": frames, **json.loads(result.stdout.strip().splitlines()[-1])}


def quality_tables(clips: list[dict], args) -> dict:
    """Print the trade-off and equal-PSNR tables; return the equal-PSNR cuts."""
    summary: dict = {}
    for family in args.families:
        print(f"\n### {family}: warp-error cut % / PSNR dB per strength (mean over {len(clips)} clips)")
        edit_we = np.mean([c["edit_warp_error"][family] for c in clips])
        source_we = np.mean([c["source_warp_error"] for c in clips])
        print(f"per-frame edit warp error {edit_we:.4f}, unedited source {source_we:.4f}")
        print("| method | " + " | ".join(f"s={s}" for s in args.strengths) + " |")
        print("|---|" + "---|" * len(args.strengths))
        for method in args.methods:
            points = curve(clips, family, method, args.strengths)
            summary.setdefault(family, {})[method] = {"curve": points, **{
                f"cut_at_{level:g}dB": cut_at(points, level) for level in LEVELS}}  # fmt: skip
            print(f"| {method} | " + " | ".join(f"{100 * c:.1f} / {p:.1f}" for _, c, p in points) + " |")
    for level in LEVELS:
        print(f"\n### warp-error cut % at equal PSNR {level:g} dB (≥: every strength stays above {level:g} dB)")
        print("| method | " + " | ".join(args.families) + " | mean |")
        print("|---|" + "---|" * (len(args.families) + 1))
        for method in args.methods:
            cuts = [summary[f][method][f"cut_at_{level:g}dB"] for f in args.families]
            known = [v for v, _ in cuts if v is not None]
            mean = f"{100 * np.mean(known):.1f}" if len(known) == len(cuts) else "n/a"
            print(f"| {method} | " + " | ".join(show(*c) for c in cuts) + f" | {mean} |")
        floor = [source_cut(clips, family) for family in args.families]
        print("| unedited source (the metric's floor) | " + " | ".join(f"{100 * c:.1f}" for c in floor)
              + f" | {100 * np.mean(floor):.1f} |")  # fmt: skip
    for family in args.families:
        summary[family]["unedited source"] = source_cut(clips, family)
    per_clip_table(clips, args, LEVELS[0])
    return summary


def per_clip_table(clips: list[dict], args, level: float) -> None:
    """Print, per clip, each method's cut at PSNR ``level`` averaged over the families (a family whose every
    strength stays above ``level`` counts with its strongest cut; one that never reaches it makes the mean n/a),
    next to the unedited source's: motion can only matter where the clip moves."""
    print(f"\n### per clip: warp-error cut % at {level:g} dB, mean over the families")
    print("| clip | source warp error | " + " | ".join(args.methods) + " | unedited source |")
    print("|---|---|" + "---|" * (len(args.methods) + 1))
    for clip in clips:
        cells = []
        for method in args.methods:
            cuts = [cut_at(curve([clip], family, method, args.strengths), level)[0] for family in args.families]
            cells.append("n/a" if None in cuts else f"{100 * np.mean(cuts):.1f}")
        floor = np.mean([source_cut([clip], family) for family in args.families])
        print(f"| {clip['clip']} | {clip['source_warp_error']:.4f} | " + " | ".join(cells) + f" | {100 * floor:.1f} |")


def source_cut(clips: list[dict], family: str) -> float:
    """The cut of the unedited source clip against the per-frame edit of ``family``, mean over the clips."""
    return float(np.mean([1 - c["source_warp_error"] / c["edit_warp_error"][family] for c in clips]))


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--clips", nargs="*", default=CLIPS, help="names of clips in shared/data/videos (none: speed only)"
    )
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.15, 0.35, 0.55, 0.75, 0.9])
    parser.add_argument("--speed-clip", default=str(VIDEOS / "cups.mp4"), help="a 480p clip for the speed runs")
    parser.add_argument("--speed-lengths", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--speed-tasks", nargs="*", default=["before", "crw", "flow", "ema"])
    parser.add_argument("--before", default="HEAD", help="git revision whose stabilize is the method `before`")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (quality and speed runs)")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    print(describe())
    torch.set_num_threads(args.threads)
    before = stabilize_at(args.before)
    names = {METHODS[m][0] for m in args.methods} - {None}
    encoders = {name: CachedFeatures(create_features(name)) for name in names}
    clips = []
    for name in args.clips:
        encoders = {key: CachedFeatures(enc.features) for key, enc in encoders.items()}  # a fresh cache per clip
        clips.append(measure_clip(name, args, encoders, before))
    summary = report_quality(clips, args) if clips else {}
    speed = measure_speeds(args, Path(before.__file__)) if args.speed_lengths else []
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        body = {"command": describe(), "args": vars(args), "clips": clips, "summary": summary, "speed": speed}
        Path(args.json).write_text(json.dumps(body, indent=1) + "\n")
        print(f"wrote {args.json}")


def report_quality(clips: list[dict], args) -> dict:
    """Print the quality tables and the source-motion time per method; return the equal-PSNR summary."""
    print(f"\nclips {', '.join(args.clips)}: first {args.frames} frames at {args.height}p; threads {args.threads}")
    summary = quality_tables(clips, args)
    print("\n### source motion, seconds per frame (once per clip; shared by every edit and strength)")
    for method in args.methods:
        seconds = np.mean([c["motion_seconds"][method] for c in clips]) / args.frames
        print(f"- {method}: {seconds:.3f}")
    return summary


def measure_speeds(args, before_path: Path) -> list[dict]:
    """Print and return the speed runs: every ``--speed-tasks`` at every ``--speed-lengths``."""
    print(f"\n### speed: stabilize at 480p, {Path(args.speed_clip).name}, bundled encoder, {args.threads} thread(s)")
    print(f"| method | frames | seconds | fps | x before ({args.before}) | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    speed = []
    for frames in args.speed_lengths:
        base = None
        for task in args.speed_tasks:
            r = measure_speed(task, Path(args.speed_clip), frames, args.threads, before_path)
            base = base or r["seconds"]
            speed.append(r)
            print(f"| {task} | {frames} | {r['seconds']:.1f} | {frames / r['seconds']:.2f} | "
                  f"{r['seconds'] / base:.2f} | {r['peak_mib']:.0f} |")  # fmt: skip
    return speed


if __name__ == "__main__":
    main()
