"""Training-data throughput: clips per second out of the trainer's own loader, short epochs against long ones.

With a handful of videos, drawing each clip start at most once per epoch makes epochs of a few updates, and every
epoch boundary drains the loader. On an H100 the 14-video default-encoder run averaged 1.0 s per update while a
fed update took 0.19 s; this script measures the loader alone so such runs can be diagnosed: it pulls ``--batches``
batches through :func:`walkreg.train.data.make_loader` for each ``--clips-per-video`` value, side by side in one
run, and prints clips/s, the epochs crossed and the ratio to the first setting. The last ``--clips-per-video``
value is measured once more with ``preload_frames`` (frames decoded once up front, clips sliced from memory). Usage:

    python bench/data_loader.py --data ../shared/data/videos --workers 2 --batches 24 --clips-per-video 2 200
"""

import argparse
import time

import torch
from machine import describe

from walkreg.train.config import TrainConfig
from walkreg.train.data import ClipDataset, ClipSampler, build_index, find_videos, make_loader


def clips_per_second(config: TrainConfig, batches: int) -> tuple[float, int]:
    dataset = ClipDataset(build_index(find_videos(config.data), None, disable_progress=True), config)
    if config.preload_frames:
        dataset.preload(disable_progress=True)
    sampler = ClipSampler(dataset.num_clips, config.clips_per_video, config.batch_size, config.seed)
    loader = make_loader(dataset, sampler, config, torch.device("cpu"))
    done, epochs, start = 0, 0, None
    while done < batches:
        sampler.set_epoch(epochs)
        epochs += 1
        for _ in loader:
            done += 1
            if done == 1:
                start = time.perf_counter()  # worker start-up is not counted
            if done == batches:
                break
    return config.batch_size * (batches - 1) / (time.perf_counter() - start), epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="tests/fixtures/clips")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--node-mode", default="grid", choices=("grid", "frame"))
    parser.add_argument("--clips-per-video", type=int, nargs="+", default=[2, 200])
    args = parser.parse_args()
    print(describe())
    torch.set_num_threads(1)
    first = None
    settings = [(clips, False) for clips in args.clips_per_video] + [(args.clips_per_video[-1], True)]
    for clips, preload in settings:
        config = TrainConfig(
            data=[args.data],
            node_mode=args.node_mode,
            clips_per_video=clips,
            batch_size=args.batch_size,
            num_workers=args.workers,
            preload_frames=preload,
            report_to="none",
        )
        rate, epochs = clips_per_second(config, args.batches)
        first = first or rate
        print(
            f"clips_per_video={clips:5d} {'preloaded' if preload else 'decoded  '}: {rate:6.1f} clips/s over "
            f"{args.batches} batches, {epochs} epochs ({rate / first:.2f}x the first setting)"
        )


if __name__ == "__main__":
    main()
