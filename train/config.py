"""The trainer's configuration: one dataclass, JSON config files, command-line overrides.

Defaults are the official README recipe (Jabri et al. 2020, ``ajabri/videowalk``): 4-frame clips resampled to
8 fps, a 7x7 grid of 64x64 patches at stride 32 from 256x256 frame crops, temperature 0.05, edge dropout 0.1,
Adam at 1e-4 without weight decay, learning rate x0.3 at epochs 20, 30 and 40, 25 epochs, batch 20.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from walkreg.atomic import write_text_atomic


NODE_MODES = ("grid", "frame")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a training run depends on; written to ``<output_dir>/train_config.json`` at the start of a run.

    Data:
        data: video sources: folders (searched recursively; Kinetics ``<split>/<class>/<id>.mp4`` or flat), text
            files listing one video or frame folder per line, or single videos.
        cache_dir: where the dataset index is cached (default ``<output_dir>/index``); share it between runs.
        clip_len: frames per clip (``T``); the loss walks to frames ``2..T-1`` and back.
        fps: frame rate clips are resampled to (``0`` keeps every frame).
        frame_folder_fps: frame rate assumed for folders of images.
        clips_per_video: clips drawn per video per epoch (distinct starts, cycled again for short videos).
        node_mode: ``"grid"`` (nodes are patches, the paper) or ``"frame"`` (nodes are feature cells of the frame).
        frame_size: side of the square per-frame random resized crop.
        frame_crop_scale, frame_crop_ratio: area fraction and aspect range of that crop.
        patch_size, patch_stride: the patch grid (``(frame_size - patch_size) // patch_stride + 1`` per side).
        patch_crop_scale, patch_crop_ratio: each patch's own random resized crop (spatial jitter).
        num_workers: data loader processes per training process.
        preload_frames: decode every resampled frame once at the start (``frame_size`` short side, uint8, shared
            with the loader workers) instead of decoding each clip; for small datasets, where decoding bounds the
            run (``3 * frame_size**2 * aspect`` bytes per frame: 428 MB for the 1,437 frames the default encoder saw).

    Model and loss:
        arch: encoder trunk (``"resnet18"`` or ``"resnet18-small"``); init_encoder: optional encoder directory
        to start from (an inference-only export gets a fresh ``layer4`` and head). temperature, edge_dropout: of :func:`walkreg.walk.walk_back_loss`.

    Optimisation:
        batch_size: clips per process per micro-batch; gradient_accumulation_steps micro-batches per update.
        learning_rate, adam_betas, weight_decay, max_grad_norm (0 = no clipping, as the official code).
        num_epochs, max_train_steps (optimizer updates; overrides ``num_epochs`` when set).
        max_train_minutes: wall-clock budget of this call; when it is spent the run ends as if at its last step
            (final checkpoint and ``encoder/``); a resumed run gets a fresh budget.
        lr_milestones: epochs at which the learning rate is multiplied by lr_gamma.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"``; channels_last, compile: speed options.

    Run:
        output_dir, seed, checkpointing_steps, checkpoints_total_limit (None keeps all),
        resume_from_checkpoint (a ``checkpoint-<step>`` directory or ``"latest"``), logging_steps,
        report_to (``"tensorboard"``, ``"wandb"``, ``"all"`` or ``"none"``), validation_data (a DAVIS-layout
        root for label-propagation validation), validation_resolution, validation_steps,
        validation_max_frames.
    """

    data: list[str] = field(default_factory=list)
    output_dir: str = "outputs/crw"
    cache_dir: str | None = None
    clip_len: int = 4
    fps: float = 8.0
    frame_folder_fps: float = 30.0
    clips_per_video: int = 5
    node_mode: str = "grid"
    frame_size: int = 256
    frame_crop_scale: tuple[float, float] = (0.8, 0.95)
    frame_crop_ratio: tuple[float, float] = (0.7, 1.3)
    patch_size: int = 64
    patch_stride: int = 32
    patch_crop_scale: tuple[float, float] = (0.7, 0.9)
    patch_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    num_workers: int = 4
    preload_frames: bool = False
    arch: str = "resnet18"
    init_encoder: str | None = None
    temperature: float = 0.05
    edge_dropout: float = 0.1
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
    mixed_precision: str = "no"
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    checkpointing_steps: int = 1000
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    logging_steps: int = 10
    report_to: str = "tensorboard"
    validation_data: str | None = None
    validation_resolution: str = "480p"
    validation_steps: int = 0
    validation_max_frames: int = 20

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = [self.data]
        for name in ("frame_crop_scale", "frame_crop_ratio", "patch_crop_scale", "patch_crop_ratio", "adam_betas", "lr_milestones"):
            setattr(self, name, tuple(getattr(self, name)))
        positive = ("clip_len", "clips_per_video", "frame_size", "patch_size", "patch_stride", "batch_size",
                    "gradient_accumulation_steps", "num_epochs", "checkpointing_steps", "logging_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, but is {getattr(self, name)}.")
        if self.clip_len < 3:
            raise ValueError(f"`clip_len` must be >= 3 to form a palindrome walk, but is {self.clip_len}.")
        if self.fps < 0 or not self.frame_folder_fps > 0:
            raise ValueError(f"`fps` must be >= 0 and `frame_folder_fps` > 0, but are {self.fps} and {self.frame_folder_fps}.")
        if self.node_mode not in NODE_MODES:
            raise ValueError(f"`node_mode` must be one of {NODE_MODES}, but is {self.node_mode!r}.")
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
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION}, but is {self.mixed_precision!r}.")
        if self.num_workers < 0 or self.validation_steps < 0 or self.validation_max_frames < 2:
            raise ValueError(
                "`num_workers` and `validation_steps` must be >= 0 and `validation_max_frames` >= 2, but are "
                f"{self.num_workers}, {self.validation_steps} and {self.validation_max_frames}."
            )

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
        """Read a JSON config file (unknown keys are an error), then apply ``overrides`` on top."""
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"`--config` file {str(path)!r} is not valid JSON: {err}") from err
        if not isinstance(values, dict):
            raise ValueError(f"`--config` file {str(path)!r} must hold a JSON object, but holds {type(values).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"`--config` file {str(path)!r} has unknown keys {unknown}; known keys are {sorted(known)}.")
        return cls(**{**values, **overrides})
