"""DAVIS semi-supervised label propagation: the CRW paper's protocol, scored with J and F (``walkreg eval-davis``).

Protocol (Jabri et al. 2020, official ``code/test.py``): frames at their native size; stride-8 L2-normalised
features; the first frame's one-hot labels are resized bilinearly to the feature grid (void pixels carry no label);
:func:`walkreg.propagation.propagate` carries them through the clip (first frame + 20 previous frames as context,
top-10 taken jointly over all of it, radius 12 except for the first frame, temperature 0.05, soft labels fed back);
each predicted soft map is upsampled bilinearly to the frame size and its argmax is the predicted object id. The
first frame's output is its annotation. Predictions are written as DAVIS palette PNGs,
``OUT/<method>/<seq>/<frame>.png``.

Scoring follows davis2017-evaluation's semi-supervised task: the first and last frames are not scored, J and F per
object and frame (:mod:`walkreg.metrics`), summarised per object (mean, recall, decay); a method's J and F means are
averages over all objects of all sequences and J&F is their mean. The objects are the ids (1..254) that the first
annotation holds; predictions keep those ids. (The toolkit takes ``1..max``, the same set for DAVIS, whose ids are
consecutive; here an absent id, such as 2 in ``{1, 3}``, is no object.) Ids that appear only in later annotations
are not scored, with a warning.

Void pixels (id 255) are scored as background by default (``void="background"``), as the toolkit does, so J&F can
be compared with published figures. ``void="ignore"`` leaves them out of J and F instead; it was the default
before, and the DAVIS figures in the bundled encoder's model card were measured with it.

Frames stream from disk, so memory depends on the context length and frame size, never on the sequence length.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from walkreg.metrics import Statistics, f_measure, jaccard, summarize
from walkreg.progress import progress
from walkreg.propagation import PropagationConfig, propagate
from walkreg.video import IMAGE_SUFFIXES, iter_frames, read_annotation, write_annotation


VOID_ID = 255
FeatureExtractor = Callable[[Iterable[torch.Tensor]], Iterator[torch.Tensor]]  # (3, H, W) frames -> (1, C, h, w)


@dataclass
class ObjectScores:
    """Scores of one object of one sequence: statistics and per-frame values (frames 1 .. T-2)."""

    object_id: int
    j: Statistics
    f: Statistics
    j_per_frame: list[float]
    f_per_frame: list[float]

    def to_dict(self) -> dict:
        return {
            "object": self.object_id,
            "J": self.j.to_dict(),
            "F": self.f.to_dict(),
            "J_per_frame": self.j_per_frame,
            "F_per_frame": self.f_per_frame,
        }


@dataclass
class SequenceResult:
    """One sequence under one method; ``objects`` is empty when the sequence has only its first frame annotated."""

    name: str
    num_frames: int
    objects: list[ObjectScores]
    seconds: float
    feature_seconds: float

    @property
    def j_mean(self) -> float:
        return float(np.mean([o.j.mean for o in self.objects])) if self.objects else float("nan")

    @property
    def f_mean(self) -> float:
        return float(np.mean([o.f.mean for o in self.objects])) if self.objects else float("nan")

    def to_dict(self) -> dict:
        return {
            "sequence": self.name,
            "num_frames": self.num_frames,
            "J_mean": self.j_mean,
            "F_mean": self.f_mean,
            "JF_mean": (self.j_mean + self.f_mean) / 2,
            "seconds": self.seconds,
            "feature_seconds": self.feature_seconds,
            "objects": [o.to_dict() for o in self.objects],
        }


@dataclass
class MethodResult:
    """All sequences of one method (an encoder or a baseline). Means are over all objects, as the toolkit's."""

    method: str
    sequences: list[SequenceResult] = field(default_factory=list)

    def _objects(self) -> list[ObjectScores]:
        return [o for s in self.sequences for o in s.objects]

    @property
    def j_mean(self) -> float:
        objects = self._objects()
        return float(np.mean([o.j.mean for o in objects])) if objects else float("nan")

    @property
    def f_mean(self) -> float:
        objects = self._objects()
        return float(np.mean([o.f.mean for o in objects])) if objects else float("nan")

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2

    @property
    def seconds_per_frame(self) -> float:
        return sum(s.seconds for s in self.sequences) / max(1, sum(s.num_frames for s in self.sequences))

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "J_mean": self.j_mean,
            "F_mean": self.f_mean,
            "JF_mean": self.jf_mean,
            "seconds_per_frame": self.seconds_per_frame,
            "sequences": [s.to_dict() for s in self.sequences],
        }


class _Timed:
    """Iterator wrapper that adds up the seconds spent producing its items."""

    def __init__(self, iterable: Iterable):
        self._items = iter(iterable)
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - start


def object_ids(ids: np.ndarray) -> list[int]:
    """The object ids an annotation holds, ascending: its values other than background (0) and void (255)."""
    return [int(k) for k in np.unique(ids) if 0 < k < VOID_ID]


def first_frame_labels(ids: np.ndarray, objects: Sequence[int], grid: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` object ids -> ``(1, len(objects) + 1, h, w)`` soft labels on the feature grid.

    Channel 0 is the indicator of the background (id 0) and channel ``k`` that of id ``objects[k - 1]``, each resized
    bilinearly (no antialiasing, half-pixel centres, as ``cv2.resize``); void pixels (255) belong to no channel.
    """
    ids_t = torch.from_numpy(np.asarray(ids).astype(np.int64))
    onehot = torch.stack([ids_t == k for k in (0, *objects)]).float()
    return F.interpolate(onehot[None], size=tuple(grid), mode="bilinear", align_corners=False)


def labels_to_ids(values: torch.Tensor, size: tuple[int, int], objects: Sequence[int] | None = None) -> np.ndarray:
    """``(1, L, h, w)`` soft labels -> ``(H, W)`` uint8 ids: bilinear upsampling to ``size``, then argmax.

    The winning channel ``k`` is the id ``objects[k - 1]`` (0 stays background), or ``k`` itself when ``objects`` is
    ``None``.
    """
    upsampled = F.interpolate(values.float(), size=tuple(size), mode="bilinear", align_corners=False)
    channels = upsampled.argmax(1)[0].cpu().numpy()
    if objects is None:
        return channels.astype(np.uint8)
    return np.array([0, *objects], dtype=np.uint8)[channels]


def _frame_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"Frame folder {str(folder)!r} does not exist.")
    names = sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise ValueError(f"Frame folder {str(folder)!r} contains no images.")
    return names


def evaluate_sequence(
    root: str | os.PathLike,
    name: str,
    extractor: FeatureExtractor,
    out_dir: str | os.PathLike | None = None,
    resolution: str = "480p",
    config: PropagationConfig | None = None,
    void: str = "background",
    desc: str | None = None,
) -> SequenceResult:
    """Propagate the first annotation of one DAVIS sequence and score the prediction.

    Args:
        root: DAVIS root holding ``JPEGImages/<resolution>/<name>/`` and ``Annotations/<resolution>/<name>/``.
        extractor: maps an iterable of ``(3, H, W)`` frames in [0, 1] to ``(1, C, h, w)`` unit-norm features,
            e.g. the ``iter_features`` of :func:`walkreg.features.create_features`'s result.
        out_dir: where to write ``<frame>.png`` predictions (DAVIS palette), or ``None``.
        config: propagation hyper-parameters (default: the paper's DAVIS protocol).
        void: ``"background"`` (void pixels count as background, as davis2017-evaluation scores them) or
            ``"ignore"`` (void pixels are left out of J and F).

    Returns:
        :class:`SequenceResult`; its ``objects`` are empty if only the first frame is annotated.

    Warns:
        UserWarning: annotations after the first frame hold ids that the first does not (they are not scored).
    """
    if void not in ("ignore", "background"):
        raise ValueError(f"`void` must be 'ignore' or 'background', but is {void!r}.")
    root = Path(root)
    names = _frame_names(root / "JPEGImages" / resolution / name)
    annotation_dir = root / "Annotations" / resolution / name
    annotated = {p.stem: p for p in annotation_dir.glob("*.png")} if annotation_dir.is_dir() else {}
    missing = [n for n in names if n not in annotated]
    if names[0] in missing:
        raise FileNotFoundError(
            f"Sequence {name!r} has no first-frame annotation {str(annotation_dir / (names[0] + '.png'))!r}."
        )
    scored = not missing
    if missing and len(missing) != len(names) - 1:
        raise FileNotFoundError(
            f"Sequence {name!r} lacks {len(missing)} of {len(names)} annotations, e.g. {missing[0]}.png."
        )
    if scored and len(names) < 3:
        raise ValueError(
            f"Sequence {name!r} has {len(names)} frames; scoring skips the first and last, so it needs >= 3."
        )

    first_ids = read_annotation(annotated[names[0]])
    objects = object_ids(first_ids)
    if not objects:
        raise ValueError(f"The first annotation of sequence {name!r} holds no object (ids 1..254).")
    num_objects = len(objects)
    unknown: dict[int, str] = {}  # id that only later annotations hold -> the first frame that holds it
    out = Path(out_dir) if out_dir is not None else None
    frames = iter_frames(root / "JPEGImages" / resolution / name)
    features = _Timed(extractor(frames))
    scores_j = np.zeros((num_objects, max(0, len(names) - 2)))
    scores_f = np.zeros_like(scores_j)

    start = time.perf_counter()
    first = next(features)
    size = first_ids.shape
    first_values = first_frame_labels(first_ids, objects, first.shape[-2:]).to(first)
    outputs = propagate(itertools.chain([first], features), first_values, config)
    for t, values in enumerate(progress(outputs, desc=desc or name, total=len(names))):
        ids = np.where(first_ids == VOID_ID, 0, first_ids) if t == 0 else labels_to_ids(values, size, objects)
        if out is not None:
            write_annotation(out / f"{names[t]}.png", ids)
        if scored and 0 < t < len(names) - 1:
            truth = read_annotation(annotated[names[t]])
            if truth.shape != ids.shape:
                raise ValueError(
                    f"Annotation {names[t]}.png of {name!r} is {truth.shape}, but frames are {ids.shape}."
                )
            for k in set(object_ids(truth)) - set(objects):
                unknown.setdefault(k, names[t])
            void_mask = truth == VOID_ID if void == "ignore" else None
            for i, k in enumerate(objects):
                scores_j[i, t - 1] = jaccard(truth == k, ids == k, void_mask)
                scores_f[i, t - 1] = f_measure(truth == k, ids == k, void_mask)
    seconds = time.perf_counter() - start
    if unknown:
        warnings.warn(_unknown_ids_message(name, objects, unknown), stacklevel=2)

    scored_objects = []
    if scored:
        for i, k in enumerate(objects):
            scored_objects.append(
                ObjectScores(
                    k, summarize(scores_j[i]), summarize(scores_f[i]), scores_j[i].tolist(), scores_f[i].tolist()
                )
            )
    return SequenceResult(name, len(names), scored_objects, seconds, features.seconds)


def _unknown_ids_message(name: str, objects: list[int], unknown: dict[int, str]) -> str:
    """The warning for ids that only annotations after the first frame hold (``unknown``: id -> first frame)."""
    where = ", ".join(f"{k} (from {frame}.png)" for k, frame in sorted(unknown.items()))
    return (
        f"Sequence {name!r}: later annotations hold object ids that the first does not, {where}; they are not "
        f"scored (the objects are the first annotation's ids {', '.join(map(str, objects))})."
    )


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (None where the platform does not report it).

    On Linux it is ``VmHWM``, this process's own high-water mark: ``ru_maxrss`` of a process started by ``exec``
    counts the memory of the process that forked it."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


# -- reports ----------------------------------------------------------------------------------------------------------

_CSV_FIELDS = [
    "method",
    "sequence",
    "object",
    "J_mean",
    "J_recall",
    "J_decay",
    "F_mean",
    "F_recall",
    "F_decay",
    "JF_mean",
    "num_frames",
    "seconds_per_frame",
]


def results_csv(results: list[MethodResult]) -> str:
    """One row per object, per sequence (``object`` = ``mean``) and per method (``sequence`` = ``ALL``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        for seq in result.sequences:
            for obj in seq.objects:
                writer.writerow(
                    {
                        "method": result.method,
                        "sequence": seq.name,
                        "object": obj.object_id,
                        "J_mean": obj.j.mean,
                        "J_recall": obj.j.recall,
                        "J_decay": obj.j.decay,
                        "F_mean": obj.f.mean,
                        "F_recall": obj.f.recall,
                        "F_decay": obj.f.decay,
                        "JF_mean": (obj.j.mean + obj.f.mean) / 2,
                        "num_frames": seq.num_frames,
                    }
                )
            writer.writerow(
                {
                    "method": result.method,
                    "sequence": seq.name,
                    "object": "mean",
                    "J_mean": seq.j_mean,
                    "F_mean": seq.f_mean,
                    "JF_mean": (seq.j_mean + seq.f_mean) / 2,
                    "num_frames": seq.num_frames,
                    "seconds_per_frame": seq.seconds / seq.num_frames,
                }
            )
        writer.writerow(
            {
                "method": result.method,
                "sequence": "ALL",
                "object": "mean",
                "J_mean": result.j_mean,
                "F_mean": result.f_mean,
                "JF_mean": result.jf_mean,
                "num_frames": sum(s.num_frames for s in result.sequences),
                "seconds_per_frame": result.seconds_per_frame,
            }
        )
    return buffer.getvalue()


def results_table(results: list[MethodResult]) -> str:
    """A fixed-width table: per method, one line per sequence and a mean line (J, F, J&F in percent)."""
    lines = [
        f"{'method':<22} {'sequence':<20} {'obj':>3} {'J&F':>6} {'J':>6} {'F':>6} {'s/frame':>8} {'feat s/fr':>9}"
    ]
    for result in results:
        for seq in result.sequences:
            lines.append(
                f"{result.method:<22} {seq.name:<20} {len(seq.objects):>3} "
                f"{50 * (seq.j_mean + seq.f_mean):>6.1f} {100 * seq.j_mean:>6.1f} {100 * seq.f_mean:>6.1f} "
                f"{seq.seconds / seq.num_frames:>8.3f} {seq.feature_seconds / seq.num_frames:>9.3f}"
            )
        count = sum(len(s.objects) for s in result.sequences)
        lines.append(
            f"{result.method:<22} {'MEAN':<20} {count:>3} {100 * result.jf_mean:>6.1f} "
            f"{100 * result.j_mean:>6.1f} {100 * result.f_mean:>6.1f} {result.seconds_per_frame:>8.3f}"
        )
    return "\n".join(lines)
