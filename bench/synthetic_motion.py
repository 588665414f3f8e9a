"""Label propagation on synthetic known-motion sequences: the encoder against raw-pixel and random-init features.

Renders ``--sequences`` sequences with :func:`walkreg.synthetic.synthetic_sequence` (a real background panned and
zoomed by a virtual camera, real-image-textured blobs moving at constant velocity and spin, occluding each other;
exact masks) into a DAVIS-layout folder, then runs ``walkreg eval-davis`` on it for the encoder and the baselines,
which prints the J&F table and writes ``results.json``. Backgrounds and textures are images the bundled encoder was
not trained on: the shared DAVIS evaluation sequences, the DAVIS 2017 sample and the optical-flow images when the
shared data is there, else the repository's 240p test fixtures. Usage:

    python bench/synthetic_motion.py --out runs/synthetic --encoder default --baselines lab random-resnet18
"""

import argparse
from pathlib import Path

from machine import describe

from walkreg.atomic import fill_new_directory
from walkreg.cli import main as walkreg_main
from walkreg.synthetic import synthetic_sequence, write_davis_sequence
from walkreg.video import read_image


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def source_images() -> tuple[list[Path], list[Path]]:
    """(backgrounds, textures): first frames of sequences the encoder never saw in training."""
    if SHARED.is_dir():
        backgrounds = [
            SHARED / f"davis/JPEGImages/480p/{s}/00000.jpg" for s in ("blackswan", "car-roundabout", "dance-twirl")
        ]
        backgrounds.append(SHARED / "flow/sintel/training/clean/alley_2/frame_0002.png")
        textures = [SHARED / f"davis2017-sample/JPEGImages/480p/{s}/00000.jpg" for s in ("tennis", "bear")]
        textures.append(SHARED / "flow/flyingchairs/00009_img1.png")
        return backgrounds, textures
    frames = sorted((ROOT / "tests/fixtures/davis/JPEGImages").glob("*/*/00000.jpg"))
    return frames, sorted((ROOT / "tests/fixtures/davis2017/JPEGImages").glob("*/*/00000.jpg")) or frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="new or empty output folder (data/ and eval/ go inside)")
    parser.add_argument("--encoder", default="default", help="encoder directory, or 'default' for the bundled one")
    parser.add_argument("--baselines", nargs="*", default=["lab", "random-resnet18"])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--max-speed", type=float, default=6.0, help="object speed bound, pixels per frame")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(describe())

    backgrounds, textures = source_images()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        parser.error(f"--out {str(out)!r} must be new or empty.")

    def render(root: Path) -> None:
        for i in range(args.sequences):
            background = read_image(backgrounds[i % len(backgrounds)])
            shifted = textures[i % len(textures) :] + textures[: i % len(textures)]
            clip = synthetic_sequence(
                background,
                [read_image(p) for p in shifted],
                num_frames=args.frames,
                size=tuple(args.size),
                num_objects=args.objects,
                max_speed=args.max_speed,
                seed=args.seed + i,
            )
            write_davis_sequence(root, f"synthetic-{i:02d}", clip.frames, clip.ids)
            print(
                f"rendered synthetic-{i:02d}: background {backgrounds[i % len(backgrounds)].name}, "
                f"{args.frames} frames"
            )

    fill_new_directory(out / "data", render, "`--out`")
    command = ["eval-davis", "--davis-root", str(out / "data"), "--out", str(out / "eval"), "--encoder", args.encoder]
    if args.baselines:
        command += ["--baselines", *args.baselines]
    return walkreg_main(command)


if __name__ == "__main__":
    raise SystemExit(main())
