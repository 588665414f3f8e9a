"""The CRW training loop on accelerate: one code path from a single CPU to many GPUs and nodes.

``walkreg train`` and ``accelerate launch -m walkreg train`` both end in :func:`train`. Each process reads its own
shard of clips (:class:`~walkreg.train.data.ClipSampler`), encodes them to node embeddings through the DDP-wrapped
model, and computes :func:`walkreg.loss.walk_back_loss` in float32 outside autocast (plus, with known motion,
:func:`walkreg.loss.transition_loss` on the ``layer3`` features). The learning rate follows the
official per-iteration MultiStepLR. Edge dropout draws from a dedicated generator that is checkpointed, and
augmentation is seeded per clip, so a resumed run repeats the uninterrupted run's loss trajectory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, TorchDynamoPlugin, set_seed
from torch import nn

from walkreg import atomic
from walkreg.encoder import CRWEncoder
from walkreg.loss import transition_loss, walk_back_loss
from walkreg.progress import progress
from walkreg.video import davis_sequences

from . import checkpoints
from .config import TrainConfig
from .data import ClipDataset, ClipSampler, build_index, find_videos, make_loader
from .precision import resolve_mixed_precision
from .validation import davis_j


logger = logging.getLogger(__name__)


class WalkNodes(nn.Module):
    """The trained module: a clip -> ``(B, 128, T, N)`` node embeddings, in one ``forward`` that DDP can wrap.

    Grid mode takes ``(B, T, N, 3, P, P)`` patches (:meth:`CRWEncoder.node_embeddings`); frame mode takes
    ``(B, T, 3, S, S)`` frames (:meth:`CRWEncoder.cell_embeddings`). Both inputs are already normalised. With
    ``with_features`` it returns ``(nodes, features)``, the ``(B, C, T, S/8, S/8)`` ``layer3`` features of the whole
    frames as well (:meth:`CRWEncoder.training_features`; grid mode needs the ``frames`` then, frame mode shares the
    pass).
    """

    def __init__(self, encoder: CRWEncoder, node_mode: str):
        super().__init__()
        self.encoder, self.node_mode = encoder, node_mode

    def forward(
        self, clips: torch.Tensor, frames: torch.Tensor | None = None, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.node_mode == "frame":
            return self.encoder.cell_embeddings(clips, with_features=with_features)
        nodes = self.encoder.node_embeddings(clips)
        return (nodes, self.encoder.training_features(frames)) if with_features else nodes


class GeneratorState:
    """A ``torch.Generator`` that ``accelerator.save_state`` / ``load_state`` checkpoint (edge-dropout masks)."""

    def __init__(self, device: torch.device, seed: int):
        self.generator = torch.Generator(device).manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


@dataclass
class TrainResult:
    """What :func:`train` did: ``losses``/``cycle_accuracies`` hold one value per optimizer step of this call."""

    global_step: int
    losses: list[float] = field(default_factory=list)
    cycle_accuracies: list[float] = field(default_factory=list)
    skipped_videos: int = 0
    last_checkpoint: str | None = None


def _trackers(report_to: str) -> str | list[str] | None:
    """The Accelerator's ``log_with`` for ``report_to``: ``"auto"`` is TensorBoard when it is installed, else none.

    An explicit ``"tensorboard"`` that is not installed warns; other trackers are left to accelerate to check.
    """
    tensorboard = bool(importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"))
    if report_to == "auto":
        return "tensorboard" if tensorboard else None
    if report_to == "none":
        return None
    if report_to == "tensorboard" and not tensorboard:
        logger.warning(
            "`report_to` is 'tensorboard' but tensorboard is not installed (`pip install tensorboard`, or use 'auto' "
            "or 'none'): metrics go to logs/metrics.jsonl only."
        )
        return None
    return report_to


def _index_file(config: TrainConfig) -> Path:
    key = hashlib.sha1(json.dumps(sorted(config.data)).encode()).hexdigest()[:16]
    return Path(config.cache_dir or Path(config.output_dir) / "index") / f"videos-{key}.json"


def _save_checkpoint(accelerator: Accelerator, model: nn.Module, config: TrainConfig, step: int) -> Path:
    """Every process writes its state into the shared temporary directory; the main process then swaps it in."""
    tmp = checkpoints.temporary_path(config.output_dir, step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's RNG state is in `tmp` before it is renamed
    final = Path(config.output_dir) / f"checkpoint-{step}"
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).encoder.save_pretrained(tmp / "encoder")
        final = checkpoints.publish(tmp, step, {"config": config.to_dict()}, config.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    return final


def _log_config(accelerator: Accelerator, config: TrainConfig) -> None:
    flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}
    accelerator.init_trackers("walkreg-train", config=flat)


def _new_paths(config: TrainConfig) -> list[Path]:
    """What a start of ``config``'s run would create: for each path it writes before its first step that does not
    exist yet, the outermost missing folder above it (or the path itself)."""
    output_dir = Path(config.output_dir).absolute()
    found = []
    for path in (output_dir, _index_file(config).absolute(), output_dir / "train_config.json", output_dir / "logs"):
        if path.exists():
            continue
        while not path.parent.exists() and path.parent != path.parent.parent:
            path = path.parent
        found.append(path)
    return list(dict.fromkeys(found))


def _drop_metrics_after(metrics_file: Path, step: int) -> None:
    """Rewrite ``metrics_file`` (atomically) without its lines of steps after ``step`` and its unreadable lines.

    A run killed after logging steps it never checkpointed logs them again once resumed; this removes the first copy.
    """
    if not metrics_file.is_file():
        return
    lines = metrics_file.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass  # a line cut short by the kill
    if len(kept) != len(lines):
        atomic.write_text_atomic(metrics_file, "".join(kept))


def _resume(accelerator: Accelerator, config: TrainConfig, metrics_file: Path) -> int:
    """Load the checkpoint that ``config.resume_from_checkpoint`` names; returns its step (0 when there is none).

    Unless ``config.trust_checkpoint``, a checkpoint whose pickles could run code is refused first
    (:func:`checkpoints.check_safe_to_load`). The metrics logged after the checkpoint's step are dropped.
    """
    if config.resume_from_checkpoint is None:
        return 0
    checkpoint = checkpoints.resolve_checkpoint(config.output_dir, config.resume_from_checkpoint)
    step = 0
    if checkpoint is not None:
        if not config.trust_checkpoint:
            checkpoints.check_safe_to_load(checkpoint)
        try:
            accelerator.load_state(str(checkpoint))
        except Exception as err:  # safetensors, torch and accelerate raise their own types for damaged files
            raise ValueError(f"`resume_from_checkpoint` {str(checkpoint)!r} cannot be loaded: {err}") from err
        step = checkpoints.read_state(checkpoint)["global_step"]
        logger.info("Resumed from %s at step %d.", checkpoint, step)
    else:
        logger.info("No checkpoint in %s yet: starting a new run.", config.output_dir)
    if accelerator.is_main_process:
        _drop_metrics_after(metrics_file, step)
    return step


def train(config: TrainConfig) -> TrainResult:
    """Train a CRW encoder as ``config`` says; returns the per-step losses of this call (see :class:`TrainResult`).

    Writes into ``config.output_dir``: ``train_config.json`` (the resolved config), ``checkpoint-<step>/`` every
    ``checkpointing_steps`` and at the end, ``encoder/`` (the final encoder, ``CRWEncoder.from_pretrained``-loadable)
    and ``logs/metrics.jsonl`` (plus tracker logs). A run that fails with an error before its first optimizer step
    leaves nothing new behind: the output folder, index cache and logs it created are removed again (an interrupted
    one keeps its index cache, so indexing resumes).
    """
    output_dir = Path(config.output_dir)
    new_paths = _new_paths(config)
    precision, why = resolve_mixed_precision(config.mixed_precision)
    logger.info("Mixed precision: %s (%s).", precision, why)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=precision,
        log_with=_trackers(config.report_to),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dynamo_plugin=TorchDynamoPlugin(backend="inductor") if config.compile else None,
    )
    result = TrainResult(global_step=0)
    try:
        _run(accelerator, config, result)
    except Exception:
        if accelerator.is_main_process and not result.losses:
            for path in new_paths:
                atomic.remove(path)
        raise
    return result


def _check_paths(config: TrainConfig) -> None:
    """Refuse, before anything is written, an ``output_dir`` that would write into the training videos' folders,
    ``validation_data`` that is not a DAVIS root, and ``flow_teacher`` without OpenCV."""
    output_dir = Path(config.output_dir).resolve()
    for source in config.data:
        folder = Path(source).resolve()
        if folder.is_dir() and (output_dir == folder or folder in output_dir.parents):
            raise ValueError(
                f"`output_dir` {config.output_dir!r} is inside the training data {source!r}: checkpoints would be "
                "written among the videos; choose a folder outside the data."
            )
    if config.validation_data:
        davis_sequences(config.validation_data, config.validation_resolution)  # raises when it is no DAVIS root
    if config.flow_teacher and importlib.util.find_spec("cv2") is None:
        raise ImportError("`flow_teacher` needs OpenCV: `pip install 'walkreg[flow]'`.")


def _run(accelerator: Accelerator, config: TrainConfig, result: TrainResult) -> None:
    """The body of :func:`train`: data, model, resume, loop, final encoder; fills ``result`` step by step."""
    output_dir = Path(config.output_dir)
    main = accelerator.is_main_process
    set_seed(config.seed)

    _check_paths(config)

    # 1. Data: the index is built by the main process first and read from its cache by the others.
    with accelerator.main_process_first():
        paths = find_videos(config.data)
        entries = build_index(
            paths, _index_file(config), num_workers=max(config.num_workers, 4), disable_progress=not main
        )
    dataset = ClipDataset(entries, config)
    logger.info(
        "Indexed %d videos: %d usable, %d unreadable, %d shorter than %d frames at %g fps.",
        len(entries),
        len(dataset),
        len(dataset.unreadable),
        len(dataset.too_short),
        config.clip_len,
        config.fps,
    )
    for entry in dataset.unreadable[:10]:
        logger.warning("Unreadable video left out: %s", entry.error)
    if config.preload_frames:
        held = dataset.preload(disable_progress=not main)
        logger.info("Preloaded the frames of %d videos: %.0f MB.", len(dataset) - len(dataset.bad), held / 1e6)
    per_update = config.batch_size * config.gradient_accumulation_steps
    sampler = ClipSampler(
        dataset.num_clips,
        config.clips_per_video,
        per_update,
        config.seed,
        accelerator.process_index,
        accelerator.num_processes,
    )
    loader = make_loader(dataset, sampler, config, accelerator.device)
    steps_per_epoch = sampler.per_rank // per_update
    max_steps = config.max_train_steps or config.num_epochs * steps_per_epoch

    # 2. Model, optimizer, per-iteration schedule (not prepared: it must step once per update, not per process).
    encoder = (
        CRWEncoder.from_pretrained(config.init_encoder).for_training()
        if config.init_encoder
        else CRWEncoder(arch=config.arch)
    )
    encoder.train()
    if config.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    model = WalkNodes(encoder, config.node_mode)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, betas=config.adam_betas, weight_decay=config.weight_decay
    )
    milestones = [m * steps_per_epoch for m in config.lr_milestones]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.lr_gamma)
    model, optimizer = accelerator.prepare(model, optimizer)
    dropout_rng = GeneratorState(accelerator.device, config.seed * 1000 + accelerator.process_index)
    accelerator.register_for_checkpointing(scheduler, dropout_rng)

    # 3. Resume.
    metrics_file = output_dir / "logs" / "metrics.jsonl"
    global_step = result.global_step = _resume(accelerator, config, metrics_file)
    if main:
        config.save(output_dir / "train_config.json")
        # what a run killed while saving a checkpoint or the final encoder left
        for leftover in checkpoints.leftovers(output_dir) + atomic.leftovers(output_dir / "encoder"):
            shutil.rmtree(leftover, ignore_errors=True)
    _log_config(accelerator, config)
    logger.info(
        "Running training: %d clips per epoch over %d processes, batch %d per process x %d accumulation = %d clips "
        "per update, %d updates per epoch, %d updates in all (from step %d).",
        sampler.per_rank * accelerator.num_processes,
        accelerator.num_processes,
        config.batch_size,
        config.gradient_accumulation_steps,
        per_update * accelerator.num_processes,
        steps_per_epoch,
        max_steps,
        global_step,
    )

    # 4. Loop.
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    bar = progress(
        total=max_steps, initial=global_step, desc="train", unit="step", disable=not accelerator.is_local_main_process
    )
    epoch, skip = divmod(global_step, steps_per_epoch)
    # walk-back loss, cycle accuracy, clips, skipped videos, out of time, motion loss
    sums = torch.zeros(6, device=accelerator.device)
    tick = start = time.perf_counter()
    budget_s = None if config.max_train_minutes is None else 60 * config.max_train_minutes
    while global_step < max_steps:
        sampler.set_epoch(epoch, skip=skip * per_update)
        skip = 0
        for batch in loader:
            batch = {
                k: v.to(accelerator.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
            }
            with accelerator.accumulate(model):
                if config.known_motion:
                    nodes, features = model(batch["clip"], batch.get("frames"), with_features=True)
                    motion = transition_loss(features.float(), batch["targets"], batch["valid"], config.temperature)
                else:
                    nodes, motion = model(batch["clip"]), torch.zeros((), device=accelerator.device)
                out = walk_back_loss(nodes.float(), config.temperature, config.edge_dropout, dropout_rng.generator)
                accelerator.backward(out.loss + config.motion_loss_weight * motion)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sums += torch.tensor(
                [
                    out.loss.item(),
                    out.cycle_accuracies.mean().item(),
                    len(batch["clip"]),
                    batch["skipped"],
                    0.0,
                    motion.item(),
                ],
                device=sums.device,
            )
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            sums[4] = float(budget_s is not None and time.perf_counter() - start > budget_s)
            totals = accelerator.reduce(sums, reduction="sum").tolist()
            if totals[4] > 0 and global_step < max_steps:  # every process stops at the same step
                logger.info(
                    "`max_train_minutes`=%g spent: ending the run at step %d.", config.max_train_minutes, global_step
                )
                max_steps = global_step
            sums.zero_()
            micro = config.gradient_accumulation_steps * accelerator.num_processes
            now = time.perf_counter()
            logs = {
                "train/loss": totals[0] / micro,
                "train/cycle_accuracy": totals[1] / micro,
                "train/clips_per_s": totals[2] / (now - tick),
                **({"train/motion_loss": totals[5] / micro} if config.known_motion else {}),
                "lr": scheduler.get_last_lr()[0],
            }
            tick = now
            result.losses.append(logs["train/loss"])
            result.cycle_accuracies.append(logs["train/cycle_accuracy"])
            result.skipped_videos += int(totals[3])
            bar.update(1)
            bar.set_postfix(
                loss=f"{logs['train/loss']:.4f}",
                acc=f"{logs['train/cycle_accuracy']:.3f}",
                clips_s=f"{logs['train/clips_per_s']:.1f}",
                skipped=result.skipped_videos,
            )
            if global_step % config.logging_steps == 0 or global_step == max_steps:
                logs["train/skipped_videos"] = result.skipped_videos
                accelerator.log(logs, step=global_step)
                if main:
                    with metrics_file.open("a") as f:
                        f.write(json.dumps({"step": global_step, "epoch": epoch, **logs}) + "\n")
            if config.validation_data and config.validation_steps and global_step % config.validation_steps == 0:
                _validate(accelerator, model, config, global_step, metrics_file)
            if global_step % config.checkpointing_steps == 0 or global_step == max_steps:
                result.last_checkpoint = str(_save_checkpoint(accelerator, model, config, global_step))
            if global_step >= max_steps:
                break
        epoch += 1
    bar.close()

    # 5. The final encoder.
    if main:
        atomic.replace_directory(output_dir / "encoder", accelerator.unwrap_model(model).encoder.save_pretrained)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.global_step = global_step


def _validate(accelerator: Accelerator, model: nn.Module, config: TrainConfig, step: int, metrics_file: Path) -> None:
    """Label-propagation J on ``validation_data`` (main process), logged as ``val/J/<sequence>``."""
    if accelerator.is_main_process:
        encoder = accelerator.unwrap_model(model).encoder
        scores = davis_j(encoder, config.validation_data, config.validation_resolution, config.validation_max_frames)
        encoder.train()
        logger.info("Step %d: validation J %s", step, {k: round(v, 4) for k, v in scores.items()})
        logs = {f"val/J/{k}": v for k, v in scores.items()}
        accelerator.log(logs, step=step)
        with metrics_file.open("a") as f:
            f.write(json.dumps({"step": step, **logs}) + "\n")
    accelerator.wait_for_everyone()
