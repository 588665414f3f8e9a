"""Unlabeled video clips for CRW training: source discovery, a cached index, PyAV clip decoding, sampling.

Sources: folders searched recursively (Kinetics ``<split>/<class>/<id>.mp4`` or flat), text files listing one video
or frame folder per line (relative lines are relative to the list file), single video files. A folder that holds
images and no videos is a video given as frames.

The index (frame count, frame rate and size of every video) is built once with parallel probes and cached as JSON;
later runs re-probe only files whose size or modification time changed. Unreadable videos and videos too short for
one clip are counted and left out. A video that stops decoding early (a truncated file, a corrupt packet, a broken
image in a frame folder) keeps the frames before the failure when they make a clip; otherwise it is skipped (another
clip is drawn) and counted in the ``skipped`` field of every sample, so the training loop can log it. Bad videos
never stop a run.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import torch

from walkreg.atomic import write_text_atomic
from walkreg.progress import progress
from walkreg.video import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    VideoReadError,
    decode_rgb,
    frame_files,
    iter_frames,
    probe_video,
    read_image,
    video_stream,
)

from .augment import augment_clip


logger = logging.getLogger(__name__)
INDEX_VERSION = 1
MAX_RETRIES = 50


# -- discovery ------------------------------------------------------------------------------------------------------


def _walk(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        videos = sorted(f for f in files if Path(f).suffix.lower() in VIDEO_SUFFIXES)
        found += [os.path.join(root, f) for f in videos]
        if not videos and not dirs and any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            found.append(root)
    return found


def find_videos(sources: list[str]) -> list[str]:
    """Absolute paths of every video file and frame folder under ``sources`` (sorted within each source).

    List files hold one path per line (a second column, such as the official ``<frame_dir> <n_frames>``, is
    ignored; ``#`` starts a comment line).
    """
    if not sources:
        raise ValueError("`data` must name at least one folder, list file or video, but is empty.")
    found: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            found += _walk(path)
        elif path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            found.append(str(path))
        elif path.is_file():
            for line in path.read_text().splitlines():
                entry = line.split()[0] if line.strip() and not line.startswith("#") else None
                if entry:
                    found.append(str(path.parent / entry) if not os.path.isabs(entry) else entry)
        else:
            raise ValueError(f"`data` entries must be folders, list files or videos, but {source!r} does not exist.")
    if not found:
        raise ValueError(f"`data` {sources} holds no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders.")
    return [os.path.abspath(p) for p in found]


# -- index ----------------------------------------------------------------------------------------------------------


@dataclass
class VideoEntry:
    """One indexed video; ``error`` is set (and the rest zero) when it could not be probed."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    error: str | None = None


def _count_packets(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def _probe(path: str) -> VideoEntry:
    try:
        info = probe_video(path)
        num_frames = info.num_frames or (0 if os.path.isdir(path) else _count_packets(path))
        return VideoEntry(path, num_frames, info.fps, info.width, info.height)
    except (VideoReadError, av.error.FFmpegError, OSError) as err:
        return VideoEntry(path, 0, 0.0, 0, 0, error=" ".join(str(err).split()))


def _stamp(path: str) -> list[int]:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def build_index(
    paths: list[str], cache_file: str | os.PathLike | None, num_workers: int = 8, disable_progress: bool = False
) -> list[VideoEntry]:
    """Probe every video once; reuse ``cache_file`` entries whose size and mtime still match.

    The cache is rewritten (atomically) every 2000 new probes, so an interrupted index build resumes.
    """
    cache: dict = {}
    cache_path = Path(cache_file) if cache_file else None
    if cache_path is not None and cache_path.is_file():
        try:
            stored = json.loads(cache_path.read_text())
            cache = stored["videos"] if stored.get("version") == INDEX_VERSION else {}
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.warning("Ignoring unreadable index cache %s; rebuilding it.", cache_path)

    def save() -> None:
        if cache_path is not None:
            write_text_atomic(cache_path, json.dumps({"version": INDEX_VERSION, "videos": cache}))

    stamps = {}
    for path in paths:
        try:
            stamps[path] = _stamp(path)
        except OSError:
            stamps[path] = None
    todo = [p for p in paths if p not in cache or cache[p]["stamp"] != stamps[p] or stamps[p] is None]
    if todo:
        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            bar = progress(
                pool.map(_probe, todo), desc="indexing videos", total=len(todo), unit="video", disable=disable_progress
            )
            for count, entry in enumerate(bar, 1):
                cache[entry.path] = {"stamp": stamps[entry.path], **asdict(entry)}
                if count % 2000 == 0:
                    save()
        save()
    return [VideoEntry(**{k: v for k, v in cache[p].items() if k != "stamp"}) for p in paths]


def source_indices(num_frames: int, fps: float, target_fps: float) -> list[int]:
    """Source frame of each resampled frame: ``floor(j * fps / target_fps)`` (``target_fps`` 0 keeps all frames)."""
    if target_fps <= 0 or fps <= 0:
        return list(range(num_frames))
    step = fps / target_fps
    return [int(j * step) for j in range(int(num_frames * target_fps / fps))]


# -- decoding -------------------------------------------------------------------------------------------------------


def _scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int] | None:
    if short_side is None or min(height, width) == short_side:
        return None
    factor = short_side / min(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def _decode_after_seek(path: str, wanted: list[int], size) -> dict[int, torch.Tensor]:
    """The ``wanted`` frames, by source index, decoded from the key frame before ``wanted[0]``: the fast path of
    :func:`read_clip`. Empty when the container's timestamps do not place the seek; frames after a corrupt packet
    are missing."""
    frames: dict[int, torch.Tensor] = {}
    with av.open(path) as container:
        stream = video_stream(container)
        rate, base, start = stream.average_rate, stream.time_base, stream.start_time or 0
        if not rate or base is None:
            return {}
        container.seek(start + int(wanted[0] / rate / base), stream=stream, backward=True)
        try:
            for count, frame in enumerate(container.decode(stream)):
                if frame.pts is None:
                    return {}
                index = round((frame.pts - start) * base * rate)
                if count == 0 and index > wanted[0]:
                    return {}  # the seek overshot
                if index in wanted and index not in frames:
                    frames[index] = decode_rgb(frame, size)
                if index >= wanted[-1]:
                    break
        except av.error.FFmpegError:
            pass  # the sequential pass of the caller tells where decoding stops
    return frames


class TruncatedVideoError(VideoReadError):
    """A video or frame folder whose frames decode up to source frame ``first_missing``, not that one."""

    def __init__(self, path: str, first_missing: int, cause: VideoReadError | None = None):
        detail = str(cause) if cause else f"Video {path!r} decodes fewer frames than its index says"
        super().__init__(f"{detail.rstrip('.')}; frame {first_missing} is the first that does not decode.")
        self.first_missing = first_missing


def read_clip(entry: VideoEntry, indices: list[int], short_side: int | None = None) -> torch.Tensor:
    """Decode frames ``indices`` of an indexed video or frame folder.

    Videos seek to the key frame before the first wanted frame; when that misses a frame (the container's
    timestamps do not allow it, or a frame does not decode) one sequential pass (:func:`iter_resampled`) decodes
    from the start. ``short_side`` resizes (area interpolation) so the shorter side has that many pixels.

    Returns:
        ``(len(indices), 3, H, W)`` float in [0, 1].

    Raises:
        TruncatedVideoError: a wanted frame does not decode (a truncated or corrupt stream, a broken image).
        VideoReadError: the video cannot be opened.
    """
    wanted = sorted(set(indices))
    frames: dict[int, torch.Tensor] = {}
    if not os.path.isdir(entry.path) and wanted[0] > 0:
        try:
            frames = _decode_after_seek(entry.path, wanted, _scaled_size(entry.height, entry.width, short_side))
        except (av.error.FFmpegError, OSError, IndexError) as err:
            raise VideoReadError(f"Cannot decode video {entry.path!r}: {err}") from err
    if len(frames) < len(wanted):
        frames = dict(zip(wanted, iter_resampled(entry, wanted, short_side), strict=True))
    return torch.stack([frames[i] for i in indices])


def iter_resampled(entry: VideoEntry, indices: list[int], short_side: int | None = None) -> Iterator[torch.Tensor]:
    """Frames ``indices`` (increasing) of an indexed video or frame folder, in one sequential pass.

    Yields ``(3, H, W)`` float in [0, 1] (``short_side`` as in :func:`read_clip`); raises :class:`VideoReadError`
    (:class:`TruncatedVideoError` where the decodable frames end early) after every frame before the failure.
    """
    size = _scaled_size(entry.height, entry.width, short_side)
    if os.path.isdir(entry.path):
        files = frame_files(Path(entry.path))
        for i in indices:
            if i >= len(files):
                raise TruncatedVideoError(entry.path, i)
            try:
                yield read_image(files[i], size)
            except VideoReadError as err:
                raise TruncatedVideoError(entry.path, i, err) from err
        return
    pending = iter(indices)
    wanted, passed = next(pending, None), 0  # passed: frames decoded so far
    try:
        for index, frame in enumerate(iter_frames(entry.path, size=size)):
            passed = index + 1
            if index == wanted:
                yield frame
                wanted = next(pending, None)
            if wanted is None:
                return
    except VideoReadError as err:
        raise TruncatedVideoError(entry.path, passed, err) from err
    raise TruncatedVideoError(entry.path, passed)


# -- dataset and sampler --------------------------------------------------------------------------------------------


class ClipDataset(torch.utils.data.Dataset):
    """Clips of indexed videos, keyed by ``(video, clip_start, seed)`` tuples from :class:`ClipSampler`.

    A sample is ``{"clip": tensor, "skipped": int}``: ``clip`` is ``(T, N, 3, P, P)`` patches (grid mode) or
    ``(T, 3, S, S)`` frames (frame mode), normalised, plus the motion targets of
    :func:`~walkreg.train.augment.augment_clip` when the config asks for them; ``skipped`` counts videos that failed
    to decode while producing it (each failure is replaced by a clip of another video drawn from the same seed).
    """

    def __init__(self, entries: list[VideoEntry], config):
        self.config = config
        self.entries, self.frames, self.unreadable, self.too_short = [], [], [], []
        for entry in entries:
            if entry.error:
                self.unreadable.append(entry)
                continue
            fps = entry.fps if not os.path.isdir(entry.path) else config.frame_folder_fps
            frames = source_indices(entry.num_frames, fps, config.fps)
            if len(frames) < config.clip_len:
                self.too_short.append(entry)
                continue
            self.entries.append(entry)
            self.frames.append(frames)
        if not self.entries:
            raise ValueError(
                f"`data` holds no usable video: {len(self.unreadable)} unreadable, {len(self.too_short)} shorter than "
                f"`clip_len`={config.clip_len} frames at `fps`={config.fps}."
            )
        self.bad: set[int] = set()
        self.preloaded: list[torch.Tensor | None] | None = None

    def preload(self, disable_progress: bool = False) -> int:
        """Decode every resampled frame of every video once, for ``__getitem__`` to slice instead of decoding.

        Each video becomes a ``(F, 3, H, W)`` uint8 tensor at ``config.frame_size`` short side, in shared memory
        (loader workers read it, none copies it). A video whose decoding stops early keeps the frames before
        (:meth:`keep_head`); one that yields too few is marked bad, as at clip time. Returns the bytes held.
        """
        preloaded = []
        for video, entry in enumerate(
            progress(self.entries, desc="preloading frames", unit="video", disable=disable_progress)
        ):
            frames = []
            try:
                for frame in iter_resampled(entry, self.frames[video], self.config.frame_size):
                    frames.append(frame.mul(255).round_().to(torch.uint8))
            except VideoReadError as err:
                if not self.keep_head(video, len(frames), err):
                    preloaded.append(None)
                    continue
            preloaded.append(torch.stack(frames).share_memory_())
        self.preloaded = preloaded
        return sum(f.numel() for f in preloaded if f is not None)

    def keep_head(self, video: int, count: int, err: VideoReadError) -> bool:
        """After ``err``, train on the first ``count`` resampled frames of ``video`` only; with fewer than
        ``clip_len`` of them the video is marked bad instead. Returns whether the video stays."""
        if count < self.config.clip_len:
            logger.warning("Skipping unreadable video: %s", err)
            self.bad.add(video)
            return False
        logger.warning("Keeping the first %d of %d frames: %s", count, len(self.frames[video]), err)
        self.frames[video] = self.frames[video][:count]
        return True

    def _clip_frames(self, video: int, start: int) -> torch.Tensor:
        """``(clip_len, 3, H, W)`` float in [0, 1]: sliced from the preloaded frames, or decoded."""
        end = start + self.config.clip_len
        if self.preloaded is not None:
            return self.preloaded[video][start:end].float().div_(255)
        return read_clip(self.entries[video], self.frames[video][start:end], short_side=self.config.frame_size)

    @property
    def num_clips(self) -> list[int]:
        """Clip start positions of each video (clips overlap, step one resampled frame)."""
        return [len(f) - self.config.clip_len + 1 for f in self.frames]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        video, start, seed = key
        rng = random.Random(seed)
        skipped = 0
        while True:
            if video not in self.bad:
                if start >= self.num_clips[video]:  # the video was cut to its decodable head after this was drawn
                    start = rng.randrange(self.num_clips[video])
                try:
                    return {**augment_clip(self._clip_frames(video, start), self.config, rng), "skipped": skipped}
                except VideoReadError as err:
                    decodable = getattr(err, "first_missing", 0)  # 0: the video cannot be opened at all
                    if self.keep_head(video, sum(i < decodable for i in self.frames[video]), err):
                        continue
                    skipped += 1
            if skipped > MAX_RETRIES or len(self.bad) == len(self.entries):
                raise RuntimeError(
                    f"No readable video after {skipped} failed decodes (last: {self.entries[video].path!r})."
                )
            video = rng.randrange(len(self.entries))
            start = rng.randrange(self.num_clips[video])


class ClipSampler(torch.utils.data.Sampler):
    """Per-epoch random clips, sharded across processes, deterministic given ``(seed, epoch)``.

    Each epoch draws ``clips_per_video`` clips per video: distinct clip starts in random order (the official
    RandomClipSampler), cycled again when a video has fewer starts, so that a small set of videos still makes long
    epochs (no loader drain every few updates). Clips are shuffled, each gets its own augmentation seed, a multiple
    of ``world_size * batch_size`` is kept and process ``rank`` gets every ``world_size``-th clip. ``skip`` drops that
    many of this process's first clips (resume).
    """

    def __init__(
        self,
        num_clips: list[int],
        clips_per_video: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.num_clips, self.clips_per_video, self.batch_size = num_clips, clips_per_video, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.skip = 0, 0
        total = clips_per_video * sum(1 for n in num_clips if n > 0)
        self.per_rank = total // (world_size * batch_size) * batch_size
        if self.per_rank == 0:
            raise ValueError(
                f"`batch_size`={batch_size} x {world_size} processes is more than the {total} clips an epoch draws; "
                "lower `batch_size` or raise `clips_per_video`."
            )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        rng = random.Random(f"walkreg-clips-{self.seed}-{self.epoch}")
        items = []
        for video, n in enumerate(self.num_clips):
            starts = []
            while n and len(starts) < self.clips_per_video:
                starts += rng.sample(range(n), min(n, self.clips_per_video - len(starts)))
            items += [(video, start) for start in starts]
        rng.shuffle(items)
        keyed = [(v, s, rng.getrandbits(63)) for v, s in items]
        mine = keyed[self.rank :: self.world_size][: self.per_rank]
        return iter(mine[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def collate(samples: list[dict]) -> dict:
    """Stack every tensor of the samples (``clip``, and ``targets``, ``valid``, ``frames`` with known motion) and
    add up ``skipped``."""
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0] if key != "skipped"}
    return {**batch, "skipped": sum(s["skipped"] for s in samples)}


def make_loader(
    dataset: ClipDataset, sampler: ClipSampler, config, device: torch.device
) -> torch.utils.data.DataLoader:
    """The training loader: ``config.num_workers`` persistent workers (they keep their list of videos that failed
    to decode), pinned memory and spawned workers for CUDA, batches ``{"clip": (B, ...), "skipped": int}`` (and the
    motion targets, see :func:`collate`)."""
    cuda = device.type == "cuda"
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=cuda,
        generator=torch.Generator(),
        persistent_workers=config.num_workers > 0,
        multiprocessing_context="spawn" if config.num_workers and cuda else None,
    )
