"""Re-encode training videos as the trainer reads them: resampled to ``--fps``, ``--short-side`` pixels, H.264.

The trainer picks frames at ``fps`` (:func:`walkreg.train.data.source_indices`) and scales them to ``frame_size``
short side (area interpolation) whatever the source, so copies made the same way train the same and are a fraction
of the bytes: the bundled encoder's second stage read 20 such copies (7.1 MB instead of 27 MB of sources) on a lent
GPU whose upload was capped. A video that stops decoding early (a header that promises more frames, a corrupt
tail) is cut before the first frame that fails, as the trainer does; unreadable videos are left out with a warning.
Usage:

    python examples/prepare_training_footage.py --out footage/train-videos ../shared/data/videos extra/vtest.avi
"""

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from walkreg.train.data import VideoEntry, build_index, find_videos, iter_resampled, source_indices
from walkreg.video import VideoReadError, write_video


logger = logging.getLogger("prepare_training_footage")


def resampled_frames(
    entry: VideoEntry, fps: float, short_side: int, frame_folder_fps: float
) -> Iterator[torch.Tensor]:
    """``(3, H, W)`` frames of ``entry`` at ``fps`` and ``short_side``; stops with a warning where decoding fails."""
    indices = source_indices(entry.num_frames, entry.fps or frame_folder_fps, fps)
    try:
        yield from iter_resampled(entry, indices, short_side)
    except VideoReadError as err:
        logger.warning("%s: keeping the frames before the error (%s)", entry.path, err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="videos, folders of videos or list files (as the trainer's `data`)")
    parser.add_argument("--out", required=True, help="folder for the <name>.mp4 copies")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--frame-folder-fps", type=float, default=30.0, help="frame rate of folders of images")
    parser.add_argument("--crf", type=int, default=20, help="x264 quality (lower is better)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for entry in build_index(find_videos(args.sources), None, disable_progress=True):
        target = out / (Path(entry.path).stem + ".mp4")
        if target.exists():
            raise SystemExit(f"error: {target} exists; two sources share the name {target.stem!r} or --out is not new")
        try:
            if entry.error:
                raise VideoReadError(entry.error)
            write_video(
                target,
                resampled_frames(entry, args.fps, args.short_side, args.frame_folder_fps),
                fps=args.fps,
                crf=args.crf,
            )
        except (VideoReadError, ValueError) as err:  # unreadable, or no frame decodes: nothing is written
            logger.warning("%s: left out (%s)", entry.path, err)
            continue
        logger.info("%s -> %s", entry.path, target)


if __name__ == "__main__":
    main()
