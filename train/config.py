"""The trainer's configuration: one dataclass, JSON config files, command-line overrides.

Defaults are the official README recipe (Jabri et al. 2020, ``ajabri/videowalk``): 4-frame clips resampled to
8 fps, a 7x7 grid of 64x64 patches at stride 32 from 256x256 frame crops, temperature 0.05, edge dropout 0.1,
Adam at 1e-4 without weight decay, learning rate x0.3 at epochs 20, 30 and 40, 25 epochs, batch 20.

Every field is checked against its type hint (an ``int`` field refuses ``2.5``, a pair field refuses a scalar,
``Literal`` fields take one of their values) and its range when a config is made, whether from Python, from a JSON
file (:meth:`TrainConfig.from_file`) or from ``walkreg train`` flags; an error is a one-line ``ValueError`` naming
the field, the rule and the value. In a config file, relative paths (the fields in ``PATH_FIELDS``) are relative to
the file's folder, so a config works from any working directory; paths given in Python or as flags are used as given.
The ``walkreg train --help`` text of each field is its entry in the :class:`TrainConfig` docstring
(:func:`field_docs`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from walkreg.atomic import write_text_atomic


NodeMode = Literal["grid", "frame"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
Arch = Literal["resnet18", "resnet18-small"]  # walkreg.encoder.ARCHITECTURES (not imported: it needs torch)
ReportTo = Literal["auto", "tensorboard", "wandb", "all", "none"]
NODE_MODES = typing.get_args(NodeMode)
MIXED_PRECISION = typing.get_args(MixedPrecision)
PATH_FIELDS = ("data", "output_dir", "cache_dir", "init_encoder", "resume_from_checkpoint", "validation_data")
"""Fields holding paths; in a config file, relative ones are relative to the file's folder."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; written to ``<output_dir>/train_config.json`` at the start of a run.

    Each field's entry below is also its ``walkreg train --help`` text (see :func:`field_docs`): one entry per field,
    ``name: sentence.``, continued on lines indented further.

    Data:
        data: Video sources: folders (searched recursively; Kinetics ``<split>/<class>/<id>.mp4`` or flat), text
            files listing one video or frame folder per line (relative to the list file), or single videos.
        cache_dir: Where the dataset index is cached (``<output_dir>/index`` when unset); share it between runs.
        clip_len: Frames per clip (``T``); the loss walks to frames ``2..T-1`` and back.
        fps: Frame rate clips are resampled to (``0`` keeps every frame).
        frame_folder_fps: Frame rate assumed for folders of images.
        clips_per_video: Clips drawn per video per epoch (distinct starts, cycled again for short videos).
        node_mode: What the walk's nodes are: ``grid`` (patches, as in the paper) or ``frame`` (the feature cells of
            the whole frame).
        frame_size: Side of the square per-frame random resized crop, in pixels.
        frame_crop_scale: Area fraction range (low, high) of the per-frame random resized crop.
        frame_crop_ratio: Aspect ratio range (low, high) of the per-frame random resized crop.
        patch_size: Side of the grid's patches, in pixels (``(frame_size - patch_size) // patch_stride + 1`` patches
            per side).
        patch_stride: Step between neighbouring patches of the grid, in pixels.
        patch_crop_scale: Area fraction range (low, high) of each patch's own random resized crop (spatial jitter).
        patch_crop_ratio: Aspect ratio range (low, high) of each patch's own random resized crop.
        num_workers: Data loader processes per training process (0 loads in the training process).
        preload_frames: Decode every resampled frame once at the start (``frame_size`` short side, uint8, shared
            with the loader workers) instead of decoding each clip; for small datasets, where decoding bounds the
            run (``3 * frame_size**2 * aspect`` bytes per frame: 428 MB for the 1,437 frames the default encoder saw).

    Model and loss:
        arch: Encoder trunk: ``resnet18`` (the paper's) or ``resnet18-small`` (ignored with ``init_encoder``).
        init_encoder: Encoder directory or Hub repo id to start from (an inference-only export gets a fresh
            ``layer4`` and head); unset starts from random weights.
        temperature: Temperature of the softmax that turns node affinities into walk transition probabilities.
        edge_dropout: Probability that each edge of the walk's transition graph is dropped.

    Known motion (the supervised transition loss, :func:`walkreg.loss.transition_loss`, on the ``layer3`` features
    that inference walks on, added to the walk-back loss):
        synthetic_fraction: Fraction of clips replaced by synthetic known-motion clips, rendered from the drawn
            clip's frames (a camera panning, zooming and rolling over one frame, textured layers moving over it,
            lighting and blur changes; :func:`walkreg.synthetic.synthetic_sequence`), supervised by their true motion.
        flow_teacher: Supervise the transitions of real clips with OpenCV DIS flow (forward-backward consistent
            cells only) computed on the augmented frames; needs ``pip install 'walkreg[flow]'``.
        motion_loss_weight: Weight of the supervised transition loss against the walk-back loss.

    Optimisation:
        batch_size: Clips per process per micro-batch.
        gradient_accumulation_steps: Micro-batches per optimizer update.
        learning_rate: Adam learning rate.
        adam_betas: Adam's beta1 and beta2.
        weight_decay: Adam weight decay.
        max_grad_norm: Gradient norm clipping threshold (0 = no clipping, as the official code).
        num_epochs: Epochs to train, unless ``max_train_steps`` is set.
        max_train_steps: Optimizer updates to train; overrides ``num_epochs`` when set.
        max_train_minutes: Wall-clock budget of this call; when it is spent the run ends as if at its last step
            (final checkpoint and ``encoder/``); a resumed run gets a fresh budget.
        lr_milestones: Epochs at which the learning rate is multiplied by ``lr_gamma``.
        lr_gamma: Factor applied to the learning rate at each of ``lr_milestones``.
        mixed_precision: Autocast precision: ``auto`` (bf16 where the hardware computes it natively, CUDA GPUs that
            support it and CPUs with AVX-512 bf16 or AMX; fp32 elsewhere, where bf16 is emulated and slower), ``no``
            (fp32), ``bf16`` or ``fp16``.
        channels_last: Run the encoder in channels-last memory format (a speed option: 1.15x per step in fp32 on a
            2-core AVX2 CPU, and it helps bf16 on GPUs and bf16 CPUs; equal loss to 1e-5).
        compile: Compile the model with ``torch.compile`` (a speed option).

    Run:
        output_dir: Folder for checkpoints, the final ``encoder/``, ``logs/`` and ``train_config.json``.
        seed: Random seed of initialisation, clip sampling, augmentation and edge dropout.
        checkpointing_steps: Save a checkpoint every this many optimizer updates (and at the end).
        checkpoints_total_limit: How many of the newest checkpoints to keep; unset keeps all.
        resume_from_checkpoint: Resume from a ``checkpoint-<step>`` directory, or ``"latest"`` for the newest one
            in ``output_dir`` (a new run when there is none yet).
        trust_checkpoint: Resume even from a checkpoint whose pickles could run code when loaded (only for checkpoints
            from a trusted source); by default such a checkpoint is refused.
        logging_steps: Log metrics every this many optimizer updates.
        report_to: Experiment tracker: ``auto`` (TensorBoard when it is installed, otherwise none), ``tensorboard``,
            ``wandb``, ``all`` or ``none``; metrics always go to ``logs/metrics.jsonl`` too.
        validation_data: DAVIS-layout root for label-propagation validation; unset skips validation.
        validation_resolution: DAVIS resolution folder to validate on (such as ``480p``).
        validation_steps: Validate every this many optimizer updates (0 = never).
        validation_max_frames: Frames per DAVIS sequence used for validation.
    """

    data: list[str] = field(default_factory=list)
    output_dir: str = "outputs/crw"
    cache_dir: str | None = None
    clip_len: int = 4
    fps: float = 8.0
    frame_folder_fps: float = 30.0
    clips_per_video: int = 5
    node_mode: NodeMode = "grid"
    frame_size: int = 256
    frame_crop_scale: tuple[float, float] = (0.8, 0.95)
    frame_crop_ratio: tuple[float, float] = (0.7, 1.3)
    patch_size: int = 64
    patch_stride: int = 32
    patch_crop_scale: tuple[float, float] = (0.7, 0.9)
    patch_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    num_workers: int = 4
    preload_frames: bool = False
    arch: Arch = "resnet18"
    init_encoder: str | None = None
    temperature: float = 0.05
    edge_dropout: float = 0.1
    synthetic_fraction: float = 0.0
    flow_teacher: bool = False
    motion_loss_weight: float = 1.0
    batch_size: int = 20
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0
    num_epochs: int = 25
    max_train_steps: int | None = None
    max_train_minutes: float | None = None
    lr_milestones: tuple[int, ...] = (20, 30, 40)
    lr_gamma: float = 0.3
    mixed_precision: MixedPrecision = "auto"
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    checkpointing_steps: int = 1000
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    trust_checkpoint: bool = False
    logging_steps: int = 10
    report_to: ReportTo = "auto"
    validation_data: str | None = None
    validation_resolution: str = "480p"
    validation_steps: int = 0
    validation_max_frames: int = 20

    def __post_init__(self):
        """Convert every field to the type of its hint (see :func:`check_field`), then check the ranges."""
        for name, hint in _field_types(type(self)).items():
            setattr(self, name, check_field(name, hint, getattr(self, name)))
        self._check_ranges()

    def _check_ranges(self) -> None:
        """The range checks (the types are right by now); a ValueError names the field, the rule and the value."""
        positive = (
            "clip_len",
            "clips_per_video",
            "frame_size",
            "patch_size",
            "patch_stride",
            "batch_size",
            "gradient_accumulation_steps",
            "num_epochs",
            "checkpointing_steps",
            "logging_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, but is {getattr(self, name)}.")
        if self.clip_len < 3:
            raise ValueError(f"`clip_len` must be >= 3 to form a palindrome walk, but is {self.clip_len}.")
        if self.fps < 0 or not self.frame_folder_fps > 0:
            raise ValueError(
                f"`fps` must be >= 0 and `frame_folder_fps` > 0, but are {self.fps} and {self.frame_folder_fps}."
            )
        if self.node_mode == "grid" and self.patch_size > self.frame_size:
            raise ValueError(f"`patch_size` must be <= `frame_size`, but is {self.patch_size} > {self.frame_size}.")
        for name in ("frame_crop_scale", "patch_crop_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"`{name}` must satisfy 0 < low <= high <= 1, but is {getattr(self, name)}.")
        for name in ("frame_crop_ratio", "patch_crop_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"`{name}` must satisfy 0 < low <= high, but is {getattr(self, name)}.")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0, but is {self.temperature}.")
        if not 0 <= self.edge_dropout < 1:
            raise ValueError(f"`edge_dropout` must be in [0, 1), but is {self.edge_dropout}.")
        if not 0 <= self.synthetic_fraction <= 1 or self.motion_loss_weight < 0:
            raise ValueError(
                "`synthetic_fraction` must be in [0, 1] and `motion_loss_weight` >= 0, but are "
                f"{self.synthetic_fraction} and {self.motion_loss_weight}."
            )
        if self.known_motion and self.frame_size % 8:
            raise ValueError(
                "`frame_size` must be a multiple of 8 (the feature stride) to supervise motion, but is "
                f"{self.frame_size}."
            )
        if not self.learning_rate > 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(
                "`learning_rate` must be > 0 and `weight_decay`, `max_grad_norm` >= 0, but are "
                f"{self.learning_rate}, {self.weight_decay} and {self.max_grad_norm}."
            )
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise ValueError(f"`max_train_steps` must be >= 1 or None, but is {self.max_train_steps}.")
        if self.max_train_minutes is not None and not self.max_train_minutes > 0:
            raise ValueError(f"`max_train_minutes` must be > 0 or None, but is {self.max_train_minutes}.")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"`checkpoints_total_limit` must be >= 1 or None, but is {self.checkpoints_total_limit}.")
        if self.num_workers < 0 or self.validation_steps < 0 or self.validation_max_frames < 2:
            raise ValueError(
                "`num_workers` and `validation_steps` must be >= 0 and `validation_max_frames` >= 2, but are "
                f"{self.num_workers}, {self.validation_steps} and {self.validation_max_frames}."
            )

    @property
    def known_motion(self) -> bool:
        """Whether clips carry motion targets (synthetic clips or the flow teacher)."""
        return self.synthetic_fraction > 0 or self.flow_teacher

    @property
    def patches_per_side(self) -> int:
        return (self.frame_size - self.patch_size) // self.patch_stride + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as JSON (through a temporary file, renamed into place)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        """Read a JSON config file, then apply ``overrides`` (command-line values) on top.

        Unknown keys and values of the wrong type are errors naming the file. Relative paths in the file (the
        fields in ``PATH_FIELDS``) are made absolute against the file's folder; paths in ``overrides`` are kept as
        given.
        """
        where = f"`--config` file {str(path)!r}"
        values = _read_config_file(cls, path, where)
        try:
            return cls(**{**values, **overrides})
        except ValueError as err:
            raise ValueError(f"{where}{' with command-line overrides' if overrides else ''}: {err}") from err


def _read_config_file(cls: type, path: str | os.PathLike, where: str) -> dict:
    """The fields in the JSON config file ``path``, type-checked, with their relative paths resolved."""
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{where} must hold a JSON object, but holds {type(values).__name__}.")
    hints = _field_types(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; known keys are {sorted(hints)}.")
    try:
        values = {name: check_field(name, hints[name], value) for name, value in values.items()}
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    return resolve_paths(values, Path(path).parent)


@functools.cache
def _field_types(cls: type) -> dict[str, typing.Any]:
    """The resolved type hint of each dataclass field of ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


class _Mismatch(Exception):
    """A value that does not fit a type hint (:func:`check_field` turns it into a ValueError naming the field)."""


def check_field(name: str, hint: typing.Any, value: typing.Any) -> typing.Any:
    """``value`` converted to the type hint ``hint`` of the config field ``name``, or a ValueError naming all three.

    Supported hints: ``bool``; ``int`` (refuses floats and bools); ``float`` (takes ints, refuses NaN and
    infinities); ``str`` (takes ``os.PathLike``); ``Literal[...]``; ``X | None``; ``list[X]`` (a single string
    becomes a one-item list); ``tuple[X, X]`` (exactly that length) and ``tuple[X, ...]`` (lists become tuples).
    """
    try:
        return _convert(hint, value)
    except _Mismatch:
        raise ValueError(f"`{name}` must be {_describe(hint)}, but is {value!r} ({type(value).__name__}).") from None


def _convert(hint: typing.Any, value: typing.Any) -> typing.Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value)
    if origin is Literal:
        if not any(type(value) is type(choice) and value == choice for choice in args):
            raise _Mismatch
        return value
    if origin is list:
        items = [value] if isinstance(value, (str, os.PathLike)) else _sequence(value)
        return [_convert(args[0], item) for item in items]
    if origin is tuple:
        items = _sequence(value)
        item_hints = [args[0]] * len(items) if Ellipsis in args else args
        if len(items) != len(item_hints):
            raise _Mismatch
        return tuple(_convert(item_hint, item) for item_hint, item in zip(item_hints, items, strict=True))
    return _convert_scalar(hint, value)


def _sequence(value: typing.Any) -> list:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    return list(value)


def _convert_scalar(hint: type, value: typing.Any) -> typing.Any:
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if hint is float and isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if hint is str and isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str):
        return os.fspath(value)
    if hint not in (bool, int, float, str):
        raise TypeError(f"`hint` must be a type that check_field supports, but is {hint!r}.")
    raise _Mismatch


_NOUNS = {
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a finite number", "numbers"),
    str: ("a string", "strings"),
}


def _describe(hint: typing.Any) -> str:
    """What a value of type ``hint`` must be, in words: "an integer or None", "a pair of numbers"..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) if a is not type(None) else "None" for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in args)
    if origin is list or (origin is tuple and Ellipsis in args):
        return f"a list of {_NOUNS[args[0]][1]}"
    if origin is tuple:
        return f"a pair of {_NOUNS[args[0]][1]}" if len(args) == 2 else f"a list of {len(args)} {_NOUNS[args[0]][1]}"
    return _NOUNS[hint][0]


def resolve_paths(values: dict, folder: str | os.PathLike) -> dict:
    """``values`` (config fields) with the relative paths of the ``PATH_FIELDS`` made absolute against ``folder``.

    ``~`` is expanded; ``resume_from_checkpoint="latest"`` is kept, and so is an ``init_encoder`` shaped like a
    Hub repo id (``org/name``) unless ``folder`` holds a path of that name.
    """
    resolved = dict(values)
    for name in PATH_FIELDS:
        value = values.get(name)
        if isinstance(value, list):
            resolved[name] = [_resolve_path(name, item, folder) for item in value]
        elif value is not None:
            resolved[name] = _resolve_path(name, value, folder)
    return resolved


def _resolve_path(name: str, value: str, folder: str | os.PathLike) -> str:
    if name == "resume_from_checkpoint" and value == "latest":
        return value
    path = os.path.expanduser(value)
    if os.path.isabs(path):
        return path
    resolved = os.path.abspath(os.path.join(folder, path))
    hub_id = name == "init_encoder" and not path.startswith(".") and path.count("/") == 1
    return value if hub_id and not os.path.exists(resolved) else resolved


@functools.cache
def field_docs() -> dict[str, str]:
    """Each field's entry in the :class:`TrainConfig` docstring as plain text (no reST markup), for ``--help``."""
    docs: dict[str, list[str]] = {}
    current = None
    for line in inspect.cleandoc(TrainConfig.__doc__ or "").splitlines():
        entry = re.match(r" {4}(\w+): (.*)", line)
        if entry and entry.group(1) in TrainConfig.__dataclass_fields__:
            current = docs.setdefault(entry.group(1), [entry.group(2)])
        elif current is not None and line.startswith(" " * 8):
            current.append(line.strip())
        else:
            current = None
    return {name: _plain_text(" ".join(words)) for name, words in docs.items()}


def _plain_text(text: str) -> str:
    """``text`` without reST markup: ``:func:`~a.b``` -> ``b``, double and single backticks dropped."""
    text = re.sub(r":\w+:`~[\w.]*\.(\w+)`", r"\1", text)
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("`", "")
