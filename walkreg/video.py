"""Video and frame I/O with PyAV: files (mp4, webm, avi, mov, mkv), frame folders and the DAVIS layout.

Frames are ``(T, 3, H, W)`` float32 RGB in [0, 1] (one frame: ``(3, H, W)``). Reading streams frame by frame
(:func:`iter_frames`); :func:`read_video` stacks the stream. Every write goes to a temporary name first and is
renamed into place, so a failed or interrupted write leaves no partial file behind.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from walkreg.atomic import replace_atomically
from walkreg.cells import MIN_FRAME_SIZE


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".gif")


class VideoReadError(ValueError):
    """A video, frame folder or image that cannot be read; the message names the file."""


@dataclass
class VideoInfo:
    """What a video's container declares: ``num_frames`` may be 0 where the container does not say."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int


def frame_files(folder: Path) -> list[Path]:
    """The images of a frame folder in file-name order (a ``VideoReadError`` if there are none)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoReadError(f"Frame folder {str(folder)!r} contains no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


def decode_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> torch.Tensor:
    """A decoded PyAV frame -> ``(3, H, W)`` float RGB in [0, 1], resized to ``size`` = ``(H, W)`` if given."""
    if size is not None:
        frame = frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation="AREA")
    return _to_tensor(frame.to_ndarray(format="rgb24"))


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream of ``container``, set to decode with frame threads, or with one thread inside a
    DataLoader worker (there the workers are the parallelism)."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if torch.utils.data.get_worker_info() is not None:
        stream.thread_count = 1
    return stream


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One image file -> ``(3, H, W)`` float in [0, 1] (``size`` = ``(H, W)`` resizes)."""
    try:
        with av.open(str(path)) as container:
            return decode_rgb(next(container.decode(video=0)), size)
    except (av.error.FFmpegError, StopIteration, OSError) as err:
        raise VideoReadError(f"Cannot read image {str(path)!r}: {err or 'no frame decoded'}") from err


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a video file or frame folder, without decoding the frames."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        first = read_image(files[0])
        return VideoInfo(str(path), len(files), 0.0, first.shape[2], first.shape[1])
    if not path.is_file():
        raise VideoReadError(f"Video {str(path)!r} does not exist.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{str(path)!r} has no video stream.")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            return VideoInfo(
                str(path), int(stream.frames or 0), fps, stream.codec_context.width, stream.codec_context.height
            )
    except av.error.FFmpegError as err:
        raise VideoReadError(f"Cannot open video {str(path)!r}: {err}") from err


def iter_frames(
    path: str | os.PathLike,
    stride: int = 1,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> Iterator[torch.Tensor]:
    """Stream frames of a video file or an image folder.

    Args:
        path: a video file, or a folder of images read in file-name order.
        stride: keep every ``stride``-th frame.
        max_frames: stop after this many kept frames.
        size: ``(H, W)`` to resize every frame to (area interpolation), or ``None`` for the native size.

    Yields:
        ``(3, H, W)`` float32 RGB frames in [0, 1].

    Raises:
        VideoReadError: the file is missing, corrupt, truncated or holds no frames.
    """
    if stride < 1:
        raise ValueError(f"`stride` must be >= 1, but is {stride}.")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"`max_frames` must be >= 1 or None, but is {max_frames}.")
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)[::stride][:max_frames]
        for file in files:
            yield read_image(file, size)
        return
    info = probe_video(path)
    kept = decoded = 0
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container)
            for frame in container.decode(stream):
                decoded += 1
                if (decoded - 1) % stride:
                    continue
                yield decode_rgb(frame, size)
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
    except av.error.FFmpegError as err:
        raise VideoReadError(f"Video {str(path)!r} is corrupt after {decoded} frames: {err}") from err
    if decoded == 0:
        raise VideoReadError(f"Video {str(path)!r} holds no decodable frames.")
    if info.num_frames and decoded < info.num_frames:
        raise VideoReadError(
            f"Video {str(path)!r} is truncated: its header declares {info.num_frames} frames "
            f"but only {decoded} decode."
        )


def read_video(
    path: str | os.PathLike,
    stride: int = 1,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Read a whole video file or image folder into ``(T, 3, H, W)`` float32 in [0, 1] (see :func:`iter_frames`)."""
    return torch.stack(list(iter_frames(path, stride=stride, max_frames=max_frames, size=size)))


def _as_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(T, 3, H, W)`` float in [0, 1] or uint8 -> ``(T, H, W, 3)`` uint8."""
    frames = torch.as_tensor(frames)
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"`frames` must have shape (T, 3, H, W), but got {tuple(frames.shape)}.")
    if frames.shape[0] == 0:
        raise ValueError("`frames` holds no frames.")
    if frames.is_floating_point():
        frames = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _x264_pixel_format(height: int, width: int) -> str:
    """``yuv420p`` when both sides are even, else ``yuv444p`` (4:2:0 chroma needs even sizes; 4:4:4 does not)."""
    return "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"


def write_video(
    path: str | os.PathLike, frames: torch.Tensor | np.ndarray | Iterable, fps: float = 24.0, crf: int = 18
) -> None:
    """Write frames as an H.264 mp4 at their exact size.

    Even sizes are stored as yuv420p, the most widely played format. An odd height or width is stored as yuv444p
    (full-resolution chroma, H.264 High 4:4:4), which keeps the size exact instead of padding it; ffmpeg-based
    players and readers (PyAV, OpenCV) decode it, some browsers do not.

    Args:
        frames: ``(T, 3, H, W)`` float in [0, 1] or uint8, or an iterable of ``(3, H, W)`` frames (streamed).
        fps: frame rate; ``crf``: x264 quality (lower is better, 18 is visually lossless).
    """
    if not 0 < fps < float("inf"):
        raise ValueError(f"`fps` must be a finite number > 0, but is {fps}.")
    chunks = [frames] if isinstance(frames, (torch.Tensor, np.ndarray)) else (f[None] for f in frames)

    def write(tmp: Path) -> None:
        count = 0
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for chunk in chunks:
                for image in _as_uint8(chunk):
                    if stream is None:
                        height, width = image.shape[:2]
                        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                        stream.width, stream.height = width, height
                        stream.pix_fmt = _x264_pixel_format(height, width)
                        stream.options = {"crf": str(crf)}
                    if image.shape[:2] != (height, width):
                        raise ValueError(
                            f"Frame {count} is {image.shape[:2]}, but the first frame is {(height, width)}."
                        )
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                    count += 1
            if stream is None:
                raise ValueError("`frames` holds no frames.")
            container.mux(stream.encode())

    replace_atomically(Path(path), write)


def write_frames(folder: str | os.PathLike, frames: torch.Tensor | np.ndarray, suffix: str = ".png") -> list[Path]:
    """Write ``(T, 3, H, W)`` frames as ``00000.png``, ``00001.png``, ... (or ``.jpg``) into ``folder``."""
    if suffix not in (".png", ".jpg"):
        raise ValueError(f"`suffix` must be '.png' or '.jpg', but is {suffix!r}.")
    folder = Path(folder)
    paths = []
    for i, image in enumerate(_as_uint8(frames)):
        target = folder / f"{i:05d}{suffix}"

        def write(tmp: Path, image=image) -> None:
            with av.open(str(tmp), mode="w", format="image2") as container:
                stream = container.add_stream("png" if suffix == ".png" else "mjpeg")
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "rgb24" if suffix == ".png" else "yuvj444p"
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                container.mux(stream.encode())

        replace_atomically(target, write)
        paths.append(target)
    return paths


# -- DAVIS layout ---------------------------------------------------------------------------------------------------


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: ``(256, 3)`` uint8, id ``i`` -> RGB (the bits of ``i`` spread
    over R, G, B)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        value, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[label] = (r, g, b)
    return palette


def read_annotation(path: str | os.PathLike) -> np.ndarray:
    """A DAVIS mask -> ``(H, W)`` uint8 object ids.

    Palette PNGs (DAVIS 2017) give their indices (0 background, 1.. objects, 255 void). Grey masks (DAVIS 2016,
    values 0 and 255) give 0 and 1.
    """
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            if frame.format.name == "pal8":
                return frame.to_ndarray()[0]
            grey = frame.to_ndarray(format="gray")
    except (av.error.FFmpegError, StopIteration, OSError) as err:
        raise VideoReadError(f"Cannot read annotation {str(path)!r}: {err or 'no frame decoded'}") from err
    return (grey >= 128).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An ``(H, W, 3)`` uint8 RGB image as the bytes of an 8-bit truecolour PNG (lossless; each row stored with
    the PNG "Sub" filter: every byte minus the same channel of the pixel to its left, which compresses photos
    about a quarter better than no filter)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"`rgb` must be a non-empty (H, W, 3) uint8 array, but got {rgb.dtype} {rgb.shape}.")
    sub = np.diff(rgb, axis=1, prepend=np.zeros_like(rgb[:, :1]))  # uint8 arithmetic wraps modulo 256, as PNG's
    rows = np.concatenate([np.ones((rgb.shape[0], 1), np.uint8), sub.reshape(rgb.shape[0], -1)], axis=1)
    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 8, 2, 0, 0, 0)  # 8-bit RGB, filter type per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def write_annotation(path: str | os.PathLike, ids: np.ndarray | torch.Tensor) -> None:
    """Write ``(H, W)`` object ids as an indexed PNG with the DAVIS palette (the DAVIS 2017 file format)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise ValueError(f"`ids` must be (H, W) integers in [0, 255], but got shape {ids.shape}.")
    rows = np.concatenate([np.zeros((ids.shape[0], 1), np.uint8), ids.astype(np.uint8)], axis=1)  # filter byte 0
    header = struct.pack(">IIBBBBB", ids.shape[1], ids.shape[0], 8, 3, 0, 0, 0)  # 8-bit indexed colour
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"PLTE", davis_palette().tobytes())
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )
    replace_atomically(Path(path), lambda tmp: tmp.write_bytes(png))


@dataclass
class DavisSequence:
    """A DAVIS sequence: ``frames`` ``(T, 3, H, W)`` in [0, 1] and ``annotations`` ``(T, H, W)`` ids (None if
    absent)."""

    name: str
    frames: torch.Tensor
    annotations: np.ndarray | None


def davis_sequences(root: str | os.PathLike, resolution: str = "480p") -> list[str]:
    """Names of the sequences under ``root/JPEGImages/<resolution>``."""
    folder = Path(root) / "JPEGImages" / resolution
    if not folder.is_dir():
        raise VideoReadError(f"{str(root)!r} is not a DAVIS root: {str(folder)!r} does not exist.")
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def read_davis_sequence(root: str | os.PathLike, name: str, resolution: str = "480p") -> DavisSequence:
    """Frames and (where present) per-frame annotations of one sequence in the DAVIS layout."""
    root = Path(root)
    frames = read_video(root / "JPEGImages" / resolution / name)
    masks = root / "Annotations" / resolution / name
    annotations = None
    if masks.is_dir():
        annotations = np.stack([read_annotation(p) for p in sorted(masks.glob("*.png"))])
    return DavisSequence(name, frames, annotations)


def check_frame_size(name: str, path: str | os.PathLike, info: VideoInfo) -> None:
    """Raise ``ValueError`` unless ``info``'s frames are at least :data:`MIN_FRAME_SIZE` pixels on each side."""
    if min(info.height, info.width) < MIN_FRAME_SIZE:
        raise ValueError(
            f"{name} {str(path)!r} is {info.width}x{info.height}, but frames must be at least "
            f"{MIN_FRAME_SIZE}x{MIN_FRAME_SIZE} pixels (a 2x2 grid of 8x8 cells)."
        )


def check_clip_pair(edited: str | os.PathLike, source: str | os.PathLike | None) -> VideoInfo:
    """Probe both clips and raise ``ValueError`` unless their frame counts, sizes and frame rates agree and the
    frames are at least :data:`MIN_FRAME_SIZE` pixels on each side.

    Returns ``edited``'s :class:`VideoInfo`, its frame count taken from ``source`` where only the source's container
    declares one (0 where neither does).
    """
    info = probe_video(edited)
    check_frame_size("`edited`", edited, info)
    if source is None:
        return info
    src = probe_video(source)
    if (src.height, src.width) != (info.height, info.width):
        raise ValueError(
            f"`--source` is {src.width}x{src.height} but `edited` is {info.width}x{info.height}; "
            "both must have the same size."
        )
    if src.num_frames and info.num_frames and src.num_frames != info.num_frames:
        raise ValueError(
            f"`--source` has {src.num_frames} frames but `edited` has {info.num_frames}; "
            "both must have the same length."
        )
    if src.fps and info.fps and abs(src.fps - info.fps) > 1e-3 * src.fps:
        raise ValueError(
            f"`--source` runs at {src.fps:g} fps but `edited` at {info.fps:g} fps; both must have the same frame rate."
        )
    return replace(info, num_frames=info.num_frames or src.num_frames)
