"""A hostile user's campaign against the ``walkreg`` command line: bad inputs built from real footage.

Every case runs the real CLI in a fresh subprocess (``python -m walkreg <command> ...``, ``WALKREG_NO_PROGRESS=1``,
``HF_HUB_OFFLINE=1``, one torch thread, working directory: the case's own folder) and is checked against walkreg's
promises (README, "Command line"):

* exit code: a bad input ends with 1 (runtime error) or 2 (usage error); a good control case with 0. Some inputs
  are odd but legal (a truncated file that still decodes, 8x8 frames, a grey PNG): those cases accept either a
  clean error or success, and on success the outputs are checked;
* one line: on failure, stderr's last non-empty line starts with ``walkreg <command>: error:`` and is one readable
  line (printable, at most 1,000 characters); no case (failing or not) prints a Python traceback;
* inputs intact: every input file or folder named on the command line (and the data a config file names) is
  byte-identical afterwards (sha256 of every file before and after, symlinks and folders included);
* nothing left behind: when a command fails, its folder (which holds every output location of the case) is exactly
  as before: no output, no created parent folder, no hidden ``.name.partial-*`` temporary; after a success no such
  temporary is left either, and the expected outputs exist;
* case-specific: odd sizes (427x239) and tiny frames keep the input size in the output, a malicious pickle's
  marker file is never created.

The inputs are made in a temporary folder from the repository's fixtures (``tests/fixtures/clips/cups.mp4``,
``carphone.mp4``, the DAVIS layouts ``tests/fixtures/davis`` (240p) and ``davis2017``): truncated, zero-byte, text
and random "videos", wrong extensions, frame folders with a broken, empty, text or differently sized PNG,
mismatched frame counts, sizes and frame rates, 8x8 / 4x6 / 427x239 frames, outputs that are the inputs (same path,
``./`` and ``..`` spellings, symbolic and hard links), output paths that are folders or lie under a file, bad
numbers (zero, negative, NaN, infinite), broken encoder directories, malicious pickles for ``convert-crw`` and for a
resumed training checkpoint, broken DAVIS roots, bad training configs, broken diffusers model directories (a tiny
random Stable Diffusion directory is built offline for the ``edit`` control and its variants) and corrupt demo
clips. Setup also runs one 1-step ``walkreg train`` to have a real checkpoint to tamper with.

Run (from the repository root, in its virtual environment; about 340 cases, 30 minutes on 2 shared CPU cores,
most of it interpreter and torch start-up; the ``edit`` cases import diffusers and take ~20 s each)::

    python bench/bad_inputs.py                       # every case; prints a markdown table and "held N of M cases"
    python bench/bad_inputs.py --only stabilize-out  # the cases whose id contains the substring
    python bench/bad_inputs.py --only edit-          # case ids are <command>-<what>
    python bench/bad_inputs.py --json results.json --keep   # also write JSON; keep the temporary folder

The exit status is 0 when every case held, 1 otherwise. The JSON has, per case, the full command, its working
directory, the expected and observed outcome, stderr's last line (and its tail), and each promise checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import pickle
import random
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np


ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CLIPS = FIXTURES / "clips"
DAVIS = FIXTURES / "davis"
DAVIS2017 = FIXTURES / "davis2017"
TRACEBACK = "Traceback (most recent call last)"
LEFTOVER = re.compile(r"^\..*\.(partial|stale)")  # hidden temporaries of atomic writes (and .checkpoint-N.partial)
OUTPUT_FLAGS = ("--out", "--json", "--report", "--output-dir")
MAX_LINE = 1000
FPS = 15
DAVIS_PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]  # the first entries of the DAVIS palette

Check = Callable[[Path, int], str | None]


# ----------------------------------------------------------------------------------------------- cases and results


@dataclasses.dataclass
class Case:
    id: str
    command: str
    args: list[str]
    expect: str  # "error" (exit 1 or 2), "ok" (exit 0) or "either" (a clean error or a checked success)
    why: str  # what makes the input bad (or the control good)
    needs: tuple[str, ...] = ()  # setup steps: "ckpt" (a real training checkpoint), "sd" (the tiny SD directory)
    prep: Callable[[Path], None] | None = None  # makes case-local files in the case folder, after setup
    extra_inputs: tuple[str, ...] = ()  # inputs not on the command line (a config's data), relative to the case
    outputs: tuple[str, ...] = ()  # paths (relative to the case folder) that must exist after a success
    checks: tuple[tuple[str, Check], ...] = ()  # (promise, check(case_dir, exit_code) -> failure or None)
    timeout: float = 600.0


@dataclasses.dataclass
class Result:
    id: str
    command: str
    cwd: str
    expect: str
    why: str
    exit_code: int | None
    last_line: str
    stderr_tail: str
    seconds: float
    promises: dict[str, bool]
    failures: list[str]

    @property
    def held(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------------------------------------- file helpers


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path) -> dict[str, str]:
    """Every entry at or under ``path``: relative name -> ``dir``, ``link:<target>[:sha]`` or the file's sha256."""
    found: dict[str, str] = {}

    def visit(p: Path, rel: str) -> None:
        if p.is_symlink():
            found[rel] = "link:" + os.readlink(p) + (":" + sha256(p) if p.is_file() else "")
        elif p.is_dir():
            found[rel] = "dir"
            for child in sorted(p.iterdir()):
                visit(child, f"{rel}/{child.name}")
        elif p.exists():
            found[rel] = sha256(p)

    visit(path, ".")
    return found


def describe_change(before: dict[str, str], after: dict[str, str]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = [
        f"{what} {names[:4]}" for what, names in (("new", added), ("gone", removed), ("changed", changed)) if names
    ]
    return "; ".join(parts)


def leftovers(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if LEFTOVER.match(p.name))


def png_bytes(array: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> bytes:
    """A PNG of an (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA uint8 array (filter 0, zlib); with ``palette``, an
    (H, W) array of palette indices (a DAVIS annotation)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    height, width = array.shape[:2]
    colour_type = (3 if palette else 0) if array.ndim == 2 else {3: 2, 4: 6}[array.shape[2]]
    rows = b"".join(b"\x00" + array[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
    if palette:
        header += chunk(b"PLTE", bytes(v for colour in palette for v in colour))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def decode(path: Path, limit: int | None = None) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) == limit:
                break
    return frames


def encode(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """H.264 in an .mp4 (yuv444p for odd sizes, which yuv420p cannot hold)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if height % 2 or width % 2 else "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def probe(path: Path) -> tuple[int, int, int]:
    """(frames, height, width) of a video, by decoding it."""
    frames = decode(path)
    return len(frames), frames[0].shape[0], frames[0].shape[1]


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        (folder / f"{i:05d}.png").write_bytes(png_bytes(frame))
    return folder


def flicker(frames: list[np.ndarray]) -> list[np.ndarray]:
    """A per-frame edit that flickers: each frame gets its own gain and colour cast."""
    out = []
    for t, frame in enumerate(frames):
        gain = 1.0 + 0.15 * math.sin(2.0 * t)
        cast = np.array([18 * math.sin(t), -12 * math.cos(1.3 * t), 10 * math.sin(0.7 * t + 1)])
        out.append(np.clip(frame.astype(np.float32) * gain + cast, 0, 255).astype(np.uint8))
    return out


def resize_nearest(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.arange(height) * frame.shape[0] // height
    cols = np.arange(width) * frame.shape[1] // width
    return frame[rows][:, cols]


def copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


class Payload:
    """Unpickling this runs ``os.makedirs(marker)``: the code a malicious pickle carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


# ------------------------------------------------------------------------------------------------------- setup


class Inputs:
    """The shared bad (and good) inputs, made once in ``<tmp>/inputs``; markers of malicious pickles go to
    ``<tmp>/markers``."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "inputs"
        self.markers = tmp / "markers"
        self.root.mkdir(parents=True)
        self.markers.mkdir()

    def __call__(self, name: str) -> str:
        return str(self.root / name)

    def path(self, name: str) -> Path:
        return self.root / name

    def marker(self, name: str) -> Path:
        return self.markers / name

    # ---- videos and frame folders

    def make_media(self) -> None:
        p = self.path
        copy(CLIPS / "cups.mp4", p("cups.mp4"))
        copy(CLIPS / "carphone.mp4", p("carphone.mp4"))
        cups = decode(CLIPS / "cups.mp4")
        src, edit = cups[:4], flicker(cups[:4])
        encode(p("src.mp4"), src)
        encode(p("edit.mp4"), edit)
        write_frames(p("src_frames"), src)
        write_frames(p("edit_frames"), edit)
        encode(p("edit_5f.mp4"), flicker(cups[:5]))
        write_frames(p("edit_5f_frames"), flicker(cups[:5]))
        encode(p("edit_half.mp4"), [resize_nearest(f, 120, 214) for f in edit])
        encode(p("edit_30fps.mp4"), edit, fps=30)
        encode(p("carphone4.mp4"), decode(CLIPS / "carphone.mp4", 4))
        odd = [f[:239, :427] for f in src]
        encode(p("odd.mp4"), odd)
        encode(p("odd_edit.mp4"), flicker(odd))
        write_frames(p("odd_frames"), odd)
        write_frames(p("odd_edit_frames"), flicker(odd))
        for name, (h, w) in {"tiny8": (8, 8), "tiny4x6": (4, 6)}.items():
            small = [resize_nearest(f, h, w) for f in src]
            encode(p(f"{name}.mp4"), small)
            encode(p(f"{name}_edit.mp4"), flicker(small))
        encode(p("one.mp4"), src[:1])
        write_frames(p("frames_one"), src[:1])

        # files that are no (whole) video
        whole = p("cups.mp4").read_bytes()
        small = p("src.mp4").read_bytes()
        rng = random.Random(0)
        p("zero.mp4").write_bytes(b"")
        p("head.mp4").write_bytes(whole[:3000])
        p("half.mp4").write_bytes(whole[: len(whole) // 2])
        p("text.mp4").write_text("this is not a video, it is a shopping list: eggs, milk\n")
        p("random.mp4").write_bytes(rng.randbytes(20000))
        p("ftyp.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
        garbled = bytearray(small)
        start, stop = len(garbled) * 2 // 5, len(garbled) * 3 // 5
        garbled[start:stop] = rng.randbytes(stop - start)
        p("garbled.mp4").write_bytes(bytes(garbled))
        p("png.mp4").write_bytes(png_bytes(src[0]))
        p("json.mp4").write_text('{"frames": 4}\n')
        p("video.txt").write_bytes(small)
        p("video_noext").write_bytes(small)
        p("folder.mp4").mkdir()

        # frame folders that are broken in one way each
        write_frames(p("frames_broken"), src)
        p("frames_broken/00002.png").write_bytes(p("frames_broken/00002.png").read_bytes()[:100])
        p("frames_empty").mkdir()
        p("frames_textpng").mkdir()
        for i in range(4):
            p(f"frames_textpng/{i:05d}.png").write_text("not an image\n")
        p("frames_notimages").mkdir()
        p("frames_notimages/notes.txt").write_text("frames to come\n")
        p("frames_notimages/data.csv").write_text("a,b\n1,2\n")
        write_frames(p("frames_mixed"), src)
        p("frames_mixed/00002.png").write_bytes(png_bytes(resize_nearest(src[2], 120, 214)))
        write_frames(p("frames_zero"), src)
        p("frames_zero/00002.png").write_bytes(b"")
        write_frames(p("frames_gray"), [f.mean(axis=2).astype(np.uint8) for f in src])
        write_frames(p("frames_rgba"), [np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in src])

    # ---- encoder directories, checkpoints, pickles (torch)

    def make_torch_inputs(self) -> None:
        import torch

        from walkreg import CRWEncoder

        p = self.path
        torch.manual_seed(0)
        encoder = CRWEncoder(arch="resnet18-small").eval()
        encoder.save_pretrained(p("enc_good"))
        config = json.loads(p("enc_good/config.json").read_text())
        weights = p("enc_good/model.safetensors").read_bytes()

        def encoder_dir(name: str, config_text: str | None, weights_bytes: bytes | None) -> None:
            p(name).mkdir()
            if config_text is not None:
                p(f"{name}/config.json").write_text(config_text)
            if weights_bytes is not None:
                p(f"{name}/model.safetensors").write_bytes(weights_bytes)

        good_config = json.dumps(config)
        encoder_dir("enc_empty", None, None)
        encoder_dir("enc_junk_weights", good_config, random.Random(1).randbytes(50000))
        encoder_dir("enc_trunc_weights", good_config, weights[: len(weights) // 2])
        encoder_dir("enc_zero_weights", good_config, b"")
        encoder_dir("enc_bad_json", '{"arch": "resnet18-small", "embed_dim": ', weights)
        encoder_dir(
            "enc_wrong_types", json.dumps({**config, "arch": 18, "embed_dim": "128", "mean": "imagenet"}), weights
        )
        encoder_dir("enc_resnet50", json.dumps({**config, "arch": "resnet50"}), weights)
        vit = {"model_type": "vit", "architectures": ["ViTModel"], "hidden_size": 768, "num_hidden_layers": 12}
        encoder_dir("enc_vit", json.dumps(vit), weights)
        encoder_dir("enc_shape_mismatch", json.dumps({**config, "arch": "resnet18"}), weights)
        encoder_dir("enc_embed_mismatch", json.dumps({**config, "embed_dim": 64}), weights)
        encoder_dir("enc_no_weights", good_config, None)
        encoder_dir("enc_no_config", None, weights)
        encoder_dir("enc_config_list", "[1, 2, 3]", weights)
        p("enc_file").write_text("an encoder? no.\n")

        # the official CRW checkpoint layout, from a small encoder with its training layers
        renames = (("trunk.", "encoder.model."), ("head.", "selfsim_fc.0."))
        state = {}
        for key, value in encoder.state_dict().items():
            for old, new in renames:
                if key.startswith(old):
                    state[new + key[len(old) :]] = value.clone()
        train_args = argparse.Namespace(model_type="scratch", temp=0.05, clip_len=4)
        torch.save({"model": state, "args": train_args, "epoch": 3}, p("official.pth"))
        data = p("official.pth").read_bytes()
        p("ckpt_zero.pth").write_bytes(b"")
        p("ckpt_trunc.pth").write_bytes(data[: len(data) // 2])
        p("ckpt_text.pth").write_text("model weights: trust me\n")
        p("ckpt_evil.pkl").write_bytes(pickle.dumps({"model": Payload(self.marker("convert-pickle"))}, protocol=2))
        torch.save({"model": state, "hook": Payload(self.marker("convert-torch-zip"))}, p("ckpt_evil.pth"))
        with zipfile.ZipFile(p("ckpt_foreign.pth"), "w") as archive:
            archive.writestr("readme.txt", "a zip, but not from torch.save")
        half = dict(list(state.items())[: len(state) // 2])
        torch.save({"model": half}, p("ckpt_missing_keys.pth"))
        torch.save({"model": {**state, "selfsim_fc.0.weight": torch.zeros(7, 3)}}, p("ckpt_misshaped.pth"))
        torch.save({"model": {**state, "encoder.model.fc.weight": torch.zeros(10, 256)}}, p("ckpt_extra_key.pth"))
        torch.save([1, 2, 3], p("ckpt_list.pth"))
        p("ckpt_safetensors.pth").write_bytes(weights)

    # ---- DAVIS roots

    def make_davis(self) -> None:
        p = self.path
        seq = "blackswan"

        def root(name: str, frames: int = 4) -> Path:
            for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                folder = p(f"{name}/{kind}/240p/{seq}")
                folder.mkdir(parents=True)
                for i in range(frames):
                    shutil.copyfile(DAVIS / kind / "240p" / seq / f"{i:05d}{suffix}", folder / f"{i:05d}{suffix}")
            return p(name)

        anno, jpeg = f"Annotations/240p/{seq}", f"JPEGImages/240p/{seq}"
        root("davis_ok")
        copy(DAVIS2017, p("davis2017"))
        root("davis_no_first")
        p(f"davis_no_first/{anno}/00000.png").unlink()
        root("davis_empty_anno")
        for f in p(f"davis_empty_anno/{anno}").iterdir():
            f.unlink()
        root("davis_no_anno_dir")
        shutil.rmtree(p("davis_no_anno_dir/Annotations"))
        root("davis_no_jpeg")
        shutil.rmtree(p("davis_no_jpeg/JPEGImages"))
        root("davis_big_mask")
        shutil.copyfile(DAVIS2017 / "Annotations/480p/tennis/00000.png", p(f"davis_big_mask/{anno}/00000.png"))
        root("davis_small_mask")
        small_mask = np.zeros((100, 120), np.uint8)
        small_mask[30:70, 40:80] = 1
        p(f"davis_small_mask/{anno}/00000.png").write_bytes(png_bytes(small_mask, DAVIS_PALETTE))
        root("davis_anno_trunc")
        first = p(f"davis_anno_trunc/{anno}/00000.png")
        first.write_bytes(first.read_bytes()[:60])
        root("davis_anno_text")
        p(f"davis_anno_text/{anno}/00000.png").write_text("mask: the swan\n")
        root("davis_jpg_trunc")
        frame = p(f"davis_jpg_trunc/{jpeg}/00002.jpg")
        frame.write_bytes(frame.read_bytes()[:200])
        root("davis_frame_size")
        shutil.copyfile(DAVIS2017 / "JPEGImages/480p/tennis/00001.jpg", p(f"davis_frame_size/{jpeg}/00002.jpg"))
        root("davis_empty_seq")
        for f in p(f"davis_empty_seq/{jpeg}").iterdir():
            f.unlink()
        root("davis_blank_mask")
        p(f"davis_blank_mask/{anno}/00000.png").write_bytes(png_bytes(np.zeros((240, 427), np.uint8), DAVIS_PALETTE))
        root("davis_only_first")
        for f in p(f"davis_only_first/{anno}").iterdir():
            if f.name != "00000.png":
                f.unlink()
        root("davis_one_frame", frames=1)

    # ---- training

    def train_config(self, **changes) -> dict:
        config = {
            "data": [self("train_clips")],
            "output_dir": "run",
            "arch": "resnet18-small",
            "frame_size": 64,
            "patch_size": 32,
            "patch_stride": 16,
            "batch_size": 2,
            "clips_per_video": 2,
            "num_workers": 0,
            "report_to": "none",
            "max_train_steps": 1,
            "checkpointing_steps": 1,
        }
        config.update(changes)
        return {k: v for k, v in config.items() if v is not ...}

    def make_train_inputs(self) -> None:
        p = self.path
        p("train_clips").mkdir()
        copy(CLIPS / "cups.mp4", p("train_clips/cups.mp4"))
        copy(CLIPS / "carphone.mp4", p("train_clips/carphone.mp4"))
        p("train_corrupt").mkdir()
        p("train_corrupt/corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
        p("train_list_missing.txt").write_text("videos/does-not-exist.mp4\n")
        p("not_a_checkpoint").mkdir()
        p("not_a_checkpoint/notes.txt").write_text("holiday photos\n")

    def make_checkpoint(self, env: dict) -> None:
        """A real 1-step run (``walkreg train``), whose checkpoint-1/ the resume cases tamper with."""
        p = self.path
        p("ckpt_config.json").write_text(json.dumps(self.train_config(output_dir=self("ckpt_run"))))
        result = subprocess.run(
            [sys.executable, "-m", "walkreg", "train", "--config", self("ckpt_config.json")],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not p("ckpt_run/checkpoint-1/custom_checkpoint_0.pkl").is_file():
            raise RuntimeError(f"setup: the 1-step training run failed: {result.stderr[-2000:]}")

    # ---- a tiny Stable Diffusion directory (random weights), for `walkreg edit`

    def make_sd(self) -> None:
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        from walkreg.pipelines import WalkRegVideoEditPipeline

        p = self.path
        # a byte-level BPE vocabulary without merges: the 256 byte symbols, their word-final forms, two specials
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        extra = iter(range(256, 512))
        symbols = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
        tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
        vocab = {token: i for i, token in enumerate(tokens)}
        tok_dir = p("sd_tokenizer_src")
        tok_dir.mkdir()
        (tok_dir / "vocab.json").write_text(json.dumps(vocab))
        (tok_dir / "merges.txt").write_text("#version: 0.2\n")
        (tok_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16}))
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                hidden_size=16,
                intermediate_size=32,
                num_attention_heads=2,
                num_hidden_layers=1,
                max_position_embeddings=16,
                bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"],
            )
        )
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 8),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16,
            norm_num_groups=2,
            attention_head_dim=2,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 8),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=2,
        )
        scheduler = DDIMScheduler(
            beta_schedule="linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
        )
        pipe = WalkRegVideoEditPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(p("sd"))
        copy(p("sd"), p("sd_junk_unet"))
        for weights in p("sd_junk_unet/unet").glob("*.safetensors"):
            weights.write_bytes(random.Random(2).randbytes(4096))
        p("sd_empty").mkdir()
        p("sd_bad_index").mkdir()
        p("sd_bad_index/model_index.json").write_text("{ this is not json")
        p("sd_empty_index").mkdir()
        p("sd_empty_index/model_index.json").write_text("{}")
        p("sd_file").write_text("a model? no.\n")


# ---------------------------------------------------------------------------------------------------- checks


def no_marker(marker: Path) -> tuple[str, Check]:
    def check(case_dir: Path, code: int) -> str | None:
        return f"the pickle's code ran: {marker} was created" if marker.exists() else None

    return "pickled code did not run", check


def keeps_size(rel: str, height: int, width: int, frames: int | None = None) -> tuple[str, Check]:
    def check(case_dir: Path, code: int) -> str | None:
        if code != 0:
            return None
        try:
            n, h, w = probe(case_dir / rel)
        except Exception as err:  # any failure to read the output is the finding
            return f"cannot read {rel}: {err}"
        if (h, w) != (height, width) or (frames is not None and n != frames):
            return f"{rel} is {n} frames of {h}x{w}, expected {frames or n} frames of {height}x{width}"
        return None

    return "output keeps the input size", check


def file_unchanged(rel: str, content: bytes) -> tuple[str, Check]:
    def check(case_dir: Path, code: int) -> str | None:
        path = case_dir / rel
        return None if path.is_file() and path.read_bytes() == content else f"{rel} was replaced or removed"

    return "existing file untouched", check


# ----------------------------------------------------------------------------------------------------- cases


def build_cases(i: Inputs) -> list[Case]:
    cases: list[Case] = []

    def add(case_id: str, command: str, args: list[str], expect: str, why: str, **kwargs) -> None:
        cases.append(Case(f"{command}-{case_id}", command, args, expect, why, **kwargs))

    def local(*pairs: tuple[str, str]) -> Callable[[Path], None]:
        """A prep that copies shared inputs into the case folder under new names."""

        def prep(case_dir: Path) -> None:
            for name, dst in pairs:
                copy(i.path(name), case_dir / dst)

        return prep

    def chain(*preps: Callable[[Path], None]) -> Callable[[Path], None]:
        def prep(case_dir: Path) -> None:
            for one in preps:
                one(case_dir)

        return prep

    def write(rel: str, content: bytes | str) -> Callable[[Path], None]:
        def prep(case_dir: Path) -> None:
            path = case_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)

        return prep

    def symlink(rel: str, target: str) -> Callable[[Path], None]:
        return lambda case_dir: (case_dir / rel).symlink_to(target)

    def hardlink(rel: str, target: str) -> Callable[[Path], None]:
        return lambda case_dir: os.link(case_dir / target, case_dir / rel)

    enc_bad = ("enc_empty", "enc_junk_weights", "enc_trunc_weights", "enc_zero_weights", "enc_bad_json")
    enc_bad += ("enc_wrong_types", "enc_resnet50", "enc_vit", "enc_shape_mismatch", "enc_embed_mismatch")
    enc_bad += ("enc_no_weights", "enc_no_config", "enc_config_list", "enc_file")
    rgb = ["--encoder", "rgb"]
    old = b"the previous output, to be kept\n"

    # ------------------------------------------------------------------------------------------------ score
    add(
        "ok",
        "score",
        [i("edit.mp4"), "--source", i("src.mp4"), *rgb, "--json", "out.json", "--report", "report.html"],
        "ok",
        "control: an edit and its source",
        outputs=("out.json", "report.html"),
    )
    add(
        "ok-frame-folders",
        "score",
        [i("edit_frames"), "--source", i("src_frames"), *rgb, "--json", "out.json"],
        "ok",
        "control: frame folders",
        outputs=("out.json",),
    )
    add(
        "ok-encoder-dir",
        "score",
        [i("edit.mp4"), "--encoder", i("enc_good"), "--json", "out.json"],
        "ok",
        "control: a saved encoder directory",
        outputs=("out.json",),
    )
    add("ok-odd-size", "score", [i("odd_edit.mp4"), "--source", i("odd.mp4"), *rgb], "ok", "427x239 frames")
    for name, why, expect in (
        ("zero.mp4", "0-byte .mp4", "error"),
        ("head.mp4", "the first 3,000 bytes of an .mp4", "error"),
        ("half.mp4", "the first half of an .mp4 (may decode a few frames)", "either"),
        ("text.mp4", "a text file named .mp4", "error"),
        ("random.mp4", "random bytes named .mp4", "error"),
        ("ftyp.mp4", "an ftyp box and zeros", "error"),
        ("garbled.mp4", "the middle fifth of an .mp4 overwritten with random bytes", "either"),
        ("png.mp4", "a PNG image named .mp4", "either"),
        ("json.mp4", "JSON named .mp4", "error"),
        ("video.txt", "an .mp4 named .txt", "either"),
        ("video_noext", "an .mp4 without extension", "either"),
        ("folder.mp4", "an empty folder named .mp4", "error"),
        ("missing.mp4", "a path that does not exist", "error"),
        ("frames_broken", "a frame folder whose third PNG is cut to 100 bytes", "error"),
        ("frames_empty", "an empty frame folder", "error"),
        ("frames_textpng", "a frame folder of text files named .png", "error"),
        ("frames_notimages", "a folder with a .txt and a .csv only", "error"),
        ("frames_mixed", "a frame folder whose third PNG has another size", "error"),
        ("frames_zero", "a frame folder whose third PNG is 0 bytes", "error"),
        ("frames_gray", "grey (1-channel) PNG frames", "either"),
        ("frames_rgba", "RGBA PNG frames", "either"),
        ("frames_one", "a frame folder with 1 frame", "either"),
        ("one.mp4", "a 1-frame video", "either"),
    ):
        add(f"edited-{name}", "score", [i(name), *rgb, "--json", "out.json"], expect, why, outputs=("out.json",))
    for case_id, edited, source, why in (
        ("count", "edit_5f.mp4", "src.mp4", "edit has 5 frames, source 4"),
        ("count-frames", "edit_5f_frames", "src_frames", "frame folders of 5 and 4 frames"),
        ("size", "edit_half.mp4", "src.mp4", "edit is 214x120, source 428x240"),
        ("fps", "edit_30fps.mp4", "src.mp4", "edit at 30 fps, source at 15"),
        ("other-footage", "edit.mp4", "carphone4.mp4", "source is other footage (176x144)"),
        ("source-text", "edit.mp4", "text.mp4", "source is a text file"),
        ("source-truncated", "edit.mp4", "head.mp4", "source is a truncated .mp4"),
        ("source-missing", "edit.mp4", "missing.mp4", "source does not exist"),
        ("source-broken-png", "edit_frames", "frames_broken", "source frame folder has a broken PNG"),
    ):
        add(
            f"mismatch-{case_id}",
            "score",
            [i(edited), "--source", i(source), *rgb, "--json", "out.json"],
            "error",
            why,
        )
    for name, h, w in (("tiny8", 8, 8), ("tiny4x6", 4, 6)):
        add(
            f"tiny-{name}",
            "score",
            [i(f"{name}_edit.mp4"), "--source", i(f"{name}.mp4"), *rgb, "--json", "out.json"],
            "either",
            f"{h}x{w} frames",
            outputs=("out.json",),
        )
    for option, value in (
        ("--window", "0"),
        ("--window", "-1"),
        ("--window", "1"),
        ("--window", "abc"),
        ("--temperature", "0"),
        ("--temperature", "-1"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--radius", "-1"),
        ("--radius", "nan"),
        ("--top-k", "0"),
        ("--top-k", "-1"),
        ("--top-k", "1.5"),
        ("--colour-scale", "0"),
        ("--colour-scale", "-1"),
        ("--colour-scale", "nan"),
    ):
        add(
            f"{option[2:]}={value}",
            "score",
            [i("edit.mp4"), "--source", i("src.mp4"), *rgb, option, value, "--json", "out.json"],
            "error",
            f"{option} {value}",
        )
    add(
        "json-is-edited",
        "score",
        ["c.mp4", *rgb, "--json", "c.mp4"],
        "error",
        "--json is EDITED",
        prep=local(("edit.mp4", "c.mp4")),
    )
    add(
        "json-dot-edited",
        "score",
        ["c.mp4", *rgb, "--json", "./c.mp4"],
        "error",
        "--json is ./EDITED",
        prep=local(("edit.mp4", "c.mp4")),
    )
    add(
        "json-dotdot-edited",
        "score",
        ["c.mp4", *rgb, "--json", "sub/../c.mp4"],
        "error",
        "--json is sub/../EDITED",
        prep=chain(local(("edit.mp4", "c.mp4")), lambda d: (d / "sub").mkdir()),
    )
    add(
        "report-is-source",
        "score",
        ["e.mp4", "--source", "s.mp4", *rgb, "--report", "s.mp4"],
        "error",
        "--report is --source",
        prep=local(("edit.mp4", "e.mp4"), ("src.mp4", "s.mp4")),
    )
    add(
        "json-symlink-to-edited",
        "score",
        ["c.mp4", *rgb, "--json", "link.json"],
        "error",
        "--json is a symlink to EDITED",
        prep=chain(local(("edit.mp4", "c.mp4")), symlink("link.json", "c.mp4")),
    )
    add(
        "json-hardlink-to-edited",
        "score",
        ["c.mp4", *rgb, "--json", "hard.json"],
        "error",
        "--json is a hard link to EDITED",
        prep=chain(local(("edit.mp4", "c.mp4")), hardlink("hard.json", "c.mp4")),
    )
    add(
        "edited-symlink-json-target",
        "score",
        ["link.mp4", *rgb, "--json", "c.mp4"],
        "error",
        "EDITED is a symlink to the --json path",
        prep=chain(local(("edit.mp4", "c.mp4")), symlink("link.mp4", "c.mp4")),
    )
    add(
        "json-is-folder",
        "score",
        [i("edit.mp4"), *rgb, "--json", "outdir"],
        "error",
        "--json is an existing folder",
        prep=write("outdir/keep.txt", "keep"),
    )
    add(
        "json-under-file",
        "score",
        [i("edit.mp4"), *rgb, "--json", "file.txt/out.json"],
        "error",
        "--json lies under a file",
        prep=write("file.txt", "a file"),
    )
    add(
        "json-report-same",
        "score",
        [i("edit.mp4"), *rgb, "--json", "out.txt", "--report", "out.txt"],
        "either",
        "--json and --report are the same file",
        outputs=("out.txt",),
    )
    add(
        "fail-new-folders",
        "score",
        [i("text.mp4"), *rgb, "--json", "new/deeper/out.json", "--report", "new/r.html"],
        "error",
        "a bad EDITED with outputs in folders that do not exist yet",
    )
    add(
        "fail-keeps-existing",
        "score",
        [i("frames_broken"), *rgb, "--json", "keep.json", "--report", "keep.html", "--overwrite"],
        "error",
        "a bad EDITED (broken third PNG) with --overwrite and outputs that exist already",
        prep=chain(write("keep.json", old), write("keep.html", old)),
        checks=(file_unchanged("keep.json", old), file_unchanged("keep.html", old)),
    )
    add(
        "existing-refused",
        "score",
        [i("edit.mp4"), *rgb, "--json", "keep.json"],
        "error",
        "--json exists and --overwrite is not given",
        prep=write("keep.json", old),
        checks=(file_unchanged("keep.json", old),),
    )
    add(
        "overwrite-ok",
        "score",
        [i("edit.mp4"), *rgb, "--json", "keep.json", "--overwrite"],
        "ok",
        "control: --overwrite replaces an existing --json",
        prep=write("keep.json", old),
        outputs=("keep.json",),
    )
    add(
        "json-hardlink-overwrite",
        "score",
        ["c.mp4", *rgb, "--json", "hard.json", "--overwrite"],
        "error",
        "--json is a hard link to EDITED, with --overwrite",
        prep=chain(local(("edit.mp4", "c.mp4")), hardlink("hard.json", "c.mp4")),
    )
    add(
        "report-symlink-source-overwrite",
        "score",
        ["e.mp4", "--source", "s.mp4", *rgb, "--report", "link.html", "--overwrite"],
        "error",
        "--report is a symlink to --source, with --overwrite",
        prep=chain(local(("edit.mp4", "e.mp4"), ("src.mp4", "s.mp4")), symlink("link.html", "s.mp4")),
    )
    add(
        "json-folder-overwrite",
        "score",
        [i("edit.mp4"), *rgb, "--json", "outdir", "--overwrite"],
        "error",
        "--json is an existing folder, with --overwrite",
        prep=write("outdir/keep.txt", "keep"),
    )
    add(
        "batch-ok",
        "score",
        ["clips", "--batch", *rgb, "--json", "out.json"],
        "ok",
        "control: --batch on a folder of two clips",
        prep=local(("src.mp4", "clips/a.mp4"), ("edit.mp4", "clips/b.mp4")),
        outputs=("out.json",),
    )
    add(
        "batch-one-corrupt",
        "score",
        ["clips", "--batch", *rgb, "--json", "out.json"],
        "error",
        "--batch folder with a good clip and a text file named .mp4",
        prep=local(("src.mp4", "clips/a.mp4"), ("text.mp4", "clips/b.mp4")),
    )
    add("batch-on-file", "score", [i("edit.mp4"), "--batch", *rgb, "--json", "out.json"], "error", "--batch on a file")
    add(
        "batch-with-report",
        "score",
        ["clips", "--batch", *rgb, "--report", "r.html"],
        "error",
        "--batch with --report",
        prep=local(("src.mp4", "clips/a.mp4")),
    )
    add(
        "batch-empty",
        "score",
        [i("frames_empty"), "--batch", *rgb, "--json", "out.json"],
        "error",
        "--batch on an empty folder",
    )
    add(
        "batch-missing-pair",
        "score",
        ["clips", "--batch", "--source", "sources", *rgb, "--json", "out.json"],
        "error",
        "--batch: the source folder lacks one clip",
        prep=local(("edit.mp4", "clips/a.mp4"), ("edit.mp4", "clips/b.mp4"), ("src.mp4", "sources/a.mp4")),
    )
    add("encoder-unknown", "score", [i("edit.mp4"), "--encoder", "resnet50"], "error", "unknown encoder name")
    add("encoder-empty-name", "score", [i("edit.mp4"), "--encoder", ""], "error", "empty encoder name")
    for name in enc_bad:
        add(f"{name.replace('_', '-')}", "score", [i("edit.mp4"), "--encoder", i(name)], "error", f"encoder {name}")

    # ---------------------------------------------------------------------------------------------- stabilize
    def stab(edited: str, source: str, out: str = "out.mp4", *more: str) -> list[str]:
        return ["--source", source, "--edited", edited, "--out", out, *more]

    add(
        "ok",
        "stabilize",
        stab(i("edit.mp4"), i("src.mp4"), "out.mp4", *rgb),
        "ok",
        "control",
        outputs=("out.mp4",),
        checks=(keeps_size("out.mp4", 240, 428, 4),),
    )
    add(
        "ok-frames-ema",
        "stabilize",
        stab(i("edit_frames"), i("src_frames"), "out.mp4", "--method", "ema"),
        "ok",
        "control: frame folders, --method ema",
        outputs=("out.mp4",),
        checks=(keeps_size("out.mp4", 240, 428, 4),),
    )
    add(
        "ok-new-folders",
        "stabilize",
        stab(i("edit.mp4"), i("src.mp4"), "new/deeper/out.mp4", *rgb),
        "ok",
        "control: --out in folders that do not exist yet",
        outputs=("new/deeper/out.mp4",),
    )
    for case_id, edited, source, more in (
        ("odd-size-rgb", "odd_edit.mp4", "odd.mp4", rgb),
        ("odd-size-frames", "odd_edit_frames", "odd_frames", rgb),
        ("odd-size-flow", "odd_edit.mp4", "odd.mp4", ["--method", "flow"]),
        ("odd-size-small-encoder", "odd_edit.mp4", "odd.mp4", ["--encoder", "random-resnet18-small"]),
    ):
        add(
            case_id,
            "stabilize",
            stab(i(edited), i(source), "out.mp4", *more),
            "ok",
            "427x239 frames",
            outputs=("out.mp4",),
            checks=(keeps_size("out.mp4", 239, 427, 4),),
        )
    for name, h, w in (("tiny8", 8, 8), ("tiny4x6", 4, 6)):
        add(
            f"tiny-{name}",
            "stabilize",
            stab(i(f"{name}_edit.mp4"), i(f"{name}.mp4"), "out.mp4", *rgb),
            "either",
            f"{h}x{w} frames",
            outputs=("out.mp4",),
            checks=(keeps_size("out.mp4", h, w, 4),),
        )
    for name, why in (
        ("zero.mp4", "0-byte .mp4"),
        ("head.mp4", "truncated .mp4 (3,000 bytes)"),
        ("text.mp4", "text named .mp4"),
        ("random.mp4", "random bytes named .mp4"),
        ("missing.mp4", "does not exist"),
        ("folder.mp4", "an empty folder named .mp4"),
        ("frames_broken", "frame folder with a broken third PNG"),
        ("frames_empty", "empty frame folder"),
        ("frames_mixed", "frame folder whose third PNG has another size"),
        ("one.mp4", "1 frame"),
    ):
        source = "src_frames" if name.startswith("frames") else "src.mp4"
        add(f"edited-{name}", "stabilize", stab(i(name), i(source), "out.mp4", *rgb), "error", f"--edited: {why}")
    for name, why in (
        ("zero.mp4", "0-byte .mp4"),
        ("text.mp4", "text named .mp4"),
        ("frames_broken", "frame folder with a broken third PNG"),
    ):
        edited = "edit_frames" if name.startswith("frames") else "edit.mp4"
        add(f"source-{name}", "stabilize", stab(i(edited), i(name), "out.mp4", *rgb), "error", f"--source: {why}")
    for case_id, edited, source, why in (
        ("count", "edit_5f.mp4", "src.mp4", "5 against 4 frames"),
        ("size", "edit_half.mp4", "src.mp4", "214x120 against 428x240"),
        ("fps", "edit_30fps.mp4", "src.mp4", "30 against 15 fps"),
        ("other-footage", "edit.mp4", "carphone4.mp4", "source is other footage"),
    ):
        add(f"mismatch-{case_id}", "stabilize", stab(i(edited), i(source), "out.mp4", *rgb), "error", why)
    two = local(("src.mp4", "s.mp4"), ("edit.mp4", "e.mp4"))
    for case_id, out, why, prep in (
        ("out-is-source", "s.mp4", "--out is --source", two),
        ("out-is-edited", "e.mp4", "--out is --edited", two),
        ("out-dot-source", "./s.mp4", "--out is ./SOURCE", two),
        ("out-dotdot-edited", "sub/../e.mp4", "--out is sub/../EDITED", chain(two, lambda d: (d / "sub").mkdir())),
        ("out-symlink-edited", "link.mp4", "--out is a symlink to --edited", chain(two, symlink("link.mp4", "e.mp4"))),
        (
            "out-hardlink-source",
            "hard.mp4",
            "--out is a hard link to --source",
            chain(two, hardlink("hard.mp4", "s.mp4")),
        ),
        (
            "out-is-folder",
            "dir.mp4",
            "--out is an existing folder named .mp4",
            chain(two, write("dir.mp4/keep.txt", "keep")),
        ),
        ("out-under-file", "file.txt/out.mp4", "--out lies under a file", chain(two, write("file.txt", "a file"))),
        ("out-avi", "out.avi", "--out is .avi", two),
        ("out-txt", "out.txt", "--out is .txt", two),
        ("out-no-suffix", "out", "--out has no suffix", two),
    ):
        add(case_id, "stabilize", stab("e.mp4", "s.mp4", out, *rgb), "error", why, prep=prep)
    add(
        "out-abs-source",
        "stabilize",
        ["--source", "s.mp4", "--edited", "e.mp4", "--out", "ABS/s.mp4", *rgb],
        "error",
        "--out is the absolute path of a relative --source",
        prep=two,
    )
    add(
        "source-symlink-out-target",
        "stabilize",
        stab("e.mp4", "link.mp4", "s.mp4", *rgb),
        "error",
        "--source is a symlink to --out",
        prep=chain(two, symlink("link.mp4", "s.mp4")),
    )
    add(
        "out-uppercase-suffix",
        "stabilize",
        stab(i("edit.mp4"), i("src.mp4"), "OUT.MP4", *rgb),
        "either",
        "--out ends in .MP4",
        outputs=("OUT.MP4",),
    )
    add(
        "fail-keeps-existing",
        "stabilize",
        stab(i("frames_broken"), i("src_frames"), "keep.mp4", *rgb, "--overwrite"),
        "error",
        "a bad --edited (broken third PNG) with --overwrite and an --out that exists",
        prep=write("keep.mp4", old),
        checks=(file_unchanged("keep.mp4", old),),
    )
    add(
        "existing-refused",
        "stabilize",
        stab(i("edit.mp4"), i("src.mp4"), "keep.mp4", *rgb),
        "error",
        "--out exists and --overwrite is not given",
        prep=write("keep.mp4", old),
        checks=(file_unchanged("keep.mp4", old),),
    )
    add(
        "overwrite-ok",
        "stabilize",
        stab(i("edit.mp4"), i("src.mp4"), "keep.mp4", *rgb, "--overwrite"),
        "ok",
        "control: --overwrite replaces an existing --out",
        prep=write("keep.mp4", old),
        outputs=("keep.mp4",),
        checks=(keeps_size("keep.mp4", 240, 428, 4),),
    )
    for case_id, out, why, prep in (
        ("out-is-source-overwrite", "s.mp4", "--out is --source, with --overwrite", two),
        ("out-dot-edited-overwrite", "./e.mp4", "--out is ./EDITED, with --overwrite", two),
        (
            "out-symlink-edited-overwrite",
            "link.mp4",
            "--out is a symlink to --edited, with --overwrite",
            chain(two, symlink("link.mp4", "e.mp4")),
        ),
        (
            "out-hardlink-source-overwrite",
            "hard.mp4",
            "--out is a hard link to --source, with --overwrite",
            chain(two, hardlink("hard.mp4", "s.mp4")),
        ),
        (
            "out-is-folder-overwrite",
            "dir.mp4",
            "--out is an existing folder named .mp4, with --overwrite",
            chain(two, write("dir.mp4/keep.txt", "keep")),
        ),
    ):
        add(case_id, "stabilize", stab("e.mp4", "s.mp4", out, *rgb, "--overwrite"), "error", why, prep=prep)
    add(
        "fail-new-folders",
        "stabilize",
        stab(i("frames_broken"), i("src_frames"), "new/deeper/out.mp4", *rgb),
        "error",
        "a bad --edited (broken third PNG) with --out in folders that do not exist yet",
    )
    for value in ("1", "1.5", "-0.1", "nan", "inf"):
        add(
            f"strength={value}",
            "stabilize",
            stab(i("edit.mp4"), i("src.mp4"), "out.mp4", *rgb, "--strength", value),
            "error",
            f"--strength {value}",
        )
    for value in ("0", "-1", "nan", "inf"):
        add(
            f"fps={value}",
            "stabilize",
            stab(i("edit_frames"), i("src_frames"), "out.mp4", "--method", "ema", "--fps", value),
            "error",
            f"--fps {value} with frame folders",
        )
    add(
        "method-bogus",
        "stabilize",
        stab(i("edit.mp4"), i("src.mp4"), "out.mp4", "--method", "magic"),
        "error",
        "unknown --method",
    )
    add(
        "encoder-unknown",
        "stabilize",
        stab(i("edit.mp4"), i("src.mp4"), "out.mp4", "--encoder", "vgg16"),
        "error",
        "unknown encoder name",
    )
    for name in ("enc_junk_weights", "enc_resnet50", "enc_bad_json", "enc_empty"):
        add(
            name.replace("_", "-"),
            "stabilize",
            stab(i("edit.mp4"), i("src.mp4"), "out.mp4", "--encoder", i(name)),
            "error",
            f"encoder {name}",
        )

    # --------------------------------------------------------------------------------------------------- edit
    def edit(source: str, *more: str, model: str | None = None, out: str = "out.mp4", size: str | None = "32x32"):
        args = [source, "--model", model or i("sd"), "--prompt", "ink", "--out", out]
        defaults = {"--max-frames": "2", "--steps": "2", "--device": "cpu", "--encoder": "random-resnet18-small"}
        if size is not None:
            defaults["--size"] = size
        for flag, value in defaults.items():
            if flag not in more:
                args += [flag, value]
        return args + list(more)

    sd = ("sd",)
    add(
        "ok",
        "edit",
        edit(i("src.mp4"), "--json", "out.json"),
        "ok",
        "control: a tiny random SD directory, 2 frames of 32x32, 2 steps",
        needs=sd,
        outputs=("out.mp4", "out.json"),
        checks=(keeps_size("out.mp4", 32, 32, 2),),
    )
    for name, why in (
        ("sd_empty", "an empty folder"),
        ("sd_file", "a file"),
        ("sd_bad_index", "a folder whose model_index.json is not JSON"),
        ("sd_empty_index", "a folder whose model_index.json is {}"),
        ("sd_junk_unet", "a real model folder whose UNet weights are random bytes"),
        ("sd_missing", "a path that does not exist"),
    ):
        add(
            f"model-{name[3:].replace('_', '-')}",
            "edit",
            edit(i("src.mp4"), model=i(name)),
            "error",
            f"--model: {why}",
            needs=sd,
        )
    add(
        "out-is-source",
        "edit",
        edit("s.mp4", out="s.mp4"),
        "error",
        "--out is SOURCE",
        needs=sd,
        prep=local(("src.mp4", "s.mp4")),
    )
    add(
        "out-symlink-source",
        "edit",
        edit("s.mp4", out="link.mp4"),
        "error",
        "--out is a symlink to SOURCE",
        needs=sd,
        prep=chain(local(("src.mp4", "s.mp4")), symlink("link.mp4", "s.mp4")),
    )
    add(
        "json-is-source",
        "edit",
        edit("s.mp4", "--json", "./s.mp4"),
        "error",
        "--json is ./SOURCE",
        needs=sd,
        prep=local(("src.mp4", "s.mp4")),
    )
    add(
        "out-is-source-overwrite",
        "edit",
        edit("s.mp4", "--overwrite", out="s.mp4"),
        "error",
        "--out is SOURCE, with --overwrite",
        needs=sd,
        prep=local(("src.mp4", "s.mp4")),
    )
    add(
        "json-hardlink-source-overwrite",
        "edit",
        edit("s.mp4", "--json", "hard.json", "--overwrite"),
        "error",
        "--json is a hard link to SOURCE, with --overwrite",
        needs=sd,
        prep=chain(local(("src.mp4", "s.mp4")), hardlink("hard.json", "s.mp4")),
    )
    add(
        "existing-refused",
        "edit",
        edit(i("src.mp4"), out="keep.mp4"),
        "error",
        "--out exists and --overwrite is not given",
        needs=sd,
        prep=write("keep.mp4", old),
        checks=(file_unchanged("keep.mp4", old),),
    )
    add(
        "fail-keeps-existing",
        "edit",
        edit(i("frames_broken"), "--max-frames", "4", "--overwrite", out="keep.mp4"),
        "error",
        "a bad SOURCE (broken third PNG) with --overwrite and an --out that exists",
        needs=sd,
        prep=write("keep.mp4", old),
        checks=(file_unchanged("keep.mp4", old),),
    )
    add("out-avi", "edit", edit(i("src.mp4"), out="out.avi"), "error", "--out is .avi", needs=sd)
    add(
        "out-is-folder",
        "edit",
        edit(i("src.mp4"), out="dir.mp4"),
        "error",
        "--out is a folder",
        needs=sd,
        prep=write("dir.mp4/k", "k"),
    )
    add(
        "out-under-file",
        "edit",
        edit(i("src.mp4"), out="f.txt/out.mp4"),
        "error",
        "--out under a file",
        needs=sd,
        prep=write("f.txt", "f"),
    )
    for option, value in (
        ("--size", "abc"),
        ("--size", "7x7"),
        ("--size", "0x8"),
        ("--size", "-8x8"),
        ("--size", "32x32x3"),
        ("--steps", "0"),
        ("--steps", "-1"),
        ("--strength", "0"),
        ("--strength", "1.5"),
        ("--strength", "nan"),
        ("--walkreg-weight", "2"),
        ("--walkreg-weight", "nan"),
        ("--guidance-weight", "nan"),
        ("--stride", "0"),
        ("--max-frames", "0"),
        ("--fps", "0"),
        ("--fps", "nan"),
        ("--encoder", "lab"),
        ("--encoder", "resnet50"),
        ("--encoder", i("enc_junk_weights")),
        ("--device", "banana"),
        ("--device", "cuda:0"),
    ):
        label = value if not value.startswith("/") else Path(value).name
        add(f"{option[2:]}={label}", "edit", edit(i("src.mp4"), option, value), "error", f"{option} {value}", needs=sd)
    for name, why in (
        ("zero.mp4", "0-byte .mp4"),
        ("text.mp4", "text named .mp4"),
        ("frames_broken", "frame folder with a broken third PNG"),
        ("missing.mp4", "does not exist"),
    ):
        add(f"source-{name}", "edit", edit(i(name), "--max-frames", "4"), "error", f"SOURCE: {why}", needs=sd)
    add(
        "odd-size-no-resize",
        "edit",
        edit(i("odd.mp4"), size=None),
        "error",
        "427x239 SOURCE without --size",
        needs=sd,
    )
    add(
        "odd-size-resized",
        "edit",
        edit(i("odd.mp4")),
        "ok",
        "427x239 SOURCE with --size 32x32",
        needs=sd,
        outputs=("out.mp4",),
        checks=(keeps_size("out.mp4", 32, 32, 2),),
    )

    # -------------------------------------------------------------------------------------------------- train
    def config_case(
        case_id: str,
        expect: str,
        why: str,
        config: dict | str | bytes,
        *more: str,
        config_arg: str = "config.json",
        **kwargs,
    ) -> None:
        text = config if isinstance(config, (str, bytes)) else json.dumps(config)
        prep = write("config.json", text)
        if kwargs.get("prep") is not None:
            prep = chain(prep, kwargs["prep"])
        kwargs.pop("prep", None)
        add(
            case_id,
            "train",
            ["--config", config_arg, *more],
            expect,
            why,
            prep=prep,
            extra_inputs=kwargs.pop("extra_inputs", (i("train_clips"),)),
            **kwargs,
        )

    cfg = i.train_config
    config_case(
        "ok",
        "ok",
        "control: 1 step of the small recipe on the two clips",
        cfg(),
        outputs=("run/encoder/config.json", "run/checkpoint-1"),
    )
    for case_id, why, config in (
        ("not-json", "config is not JSON", '{"data": ["clips"], '),
        ("empty-file", "config is 0 bytes", ""),
        ("binary", "config is binary junk", random.Random(3).randbytes(300)),
        ("json-list", "config is a JSON list", "[1, 2, 3]"),
        ("json-string", "config is a JSON string", '"fast please"'),
        ("batch-size-string", "batch_size is a string", cfg(batch_size="two")),
        ("batch-size-float", "a float where an int is meant", cfg(batch_size=2.5)),
        ("batch-size-bool", "a bool where an int is meant", cfg(batch_size=True)),
        ("batch-size-zero", "batch_size 0", cfg(batch_size=0)),
        ("batch-size-null", "batch_size null", cfg(batch_size=None)),
        ("lr-string", "learning_rate is a string", cfg(learning_rate="fast")),
        ("lr-negative", "negative learning rate", cfg(learning_rate=-1e-4)),
        ("crop-scale-scalar", "a scalar where a pair is meant", cfg(frame_crop_scale=0.8)),
        ("crop-scale-triple", "a triple where a pair is meant", cfg(frame_crop_scale=[0.8, 0.9, 1.0])),
        ("crop-scale-reversed", "a (high, low) range", cfg(frame_crop_scale=[0.95, 0.2])),
        ("adam-betas-string", "a string where a pair is meant", cfg(adam_betas="0.9 0.999")),
        ("unknown-key", "unknown key", cfg(temprature=0.1)),
        ("data-missing-path", "data names a path that does not exist", cfg(data=["no/such/videos"])),
        ("data-empty-list", "data is []", cfg(data=[])),
        ("data-object", "data is an object", cfg(data={"videos": i("train_clips")})),
        (
            "data-list-file-missing",
            "data is a list file naming a missing video",
            cfg(data=[i("train_list_missing.txt")]),
        ),
        ("data-only-corrupt-mp4", "data is a folder holding only a corrupt .mp4", cfg(data=[i("train_corrupt")])),
        ("data-only-text-mp4", "data is a text file named .mp4", cfg(data=[i("text.mp4")])),
        ("clip-len-2", "clip_len 2", cfg(clip_len=2)),
        ("max-steps-negative", "max_train_steps -1", cfg(max_train_steps=-1)),
        ("max-steps-zero", "max_train_steps 0", cfg(max_train_steps=0)),
        ("temperature-zero", "temperature 0", cfg(temperature=0)),
        ("temperature-nan", "temperature NaN", cfg(temperature=math.nan)),
        ("edge-dropout-1.5", "edge_dropout 1.5", cfg(edge_dropout=1.5)),
        ("frame-size-zero", "frame_size 0", cfg(frame_size=0)),
        ("patch-bigger-than-frame", "patch_size 128 > frame_size 64", cfg(patch_size=128)),
        ("num-workers-negative", "num_workers -1", cfg(num_workers=-1)),
        ("mixed-precision-fp8", "mixed_precision fp8", cfg(mixed_precision="fp8")),
        ("node-mode-pixels", "node_mode pixels", cfg(node_mode="pixels")),
        ("milestones-strings", "lr_milestones with a string", cfg(lr_milestones=[20, "thirty"])),
        ("checkpointing-steps-zero", "checkpointing_steps 0", cfg(checkpointing_steps=0)),
        ("grad-accum-zero", "gradient_accumulation_steps 0", cfg(gradient_accumulation_steps=0)),
        ("max-minutes-negative", "max_train_minutes -5", cfg(max_train_minutes=-5)),
        ("init-encoder-empty", "init_encoder is an empty folder", cfg(init_encoder=i("enc_empty"))),
        ("init-encoder-junk", "init_encoder has random weights bytes", cfg(init_encoder=i("enc_junk_weights"))),
        ("init-encoder-vit", "init_encoder config is a ViT's", cfg(init_encoder=i("enc_vit"))),
        ("validation-missing", "validation_data does not exist", cfg(validation_data="nope", validation_steps=1)),
    ):
        config_case(case_id, "error", why, config)
    config_case(
        "data-string",
        "ok",
        "data is a string, not a list (documented: a single string becomes a one-item list)",
        cfg(data=i("train_clips")),
        outputs=("run/encoder/config.json",),
    )
    config_case("config-missing", "error", "--config names no file", cfg(), config_arg="does-not-exist.json")
    config_case("config-is-folder", "error", "--config is a folder", cfg(), config_arg=i("train_clips"))
    config_case(
        "output-dir-is-file",
        "error",
        "output_dir is an existing file",
        cfg(output_dir="taken.txt"),
        prep=write("taken.txt", "a file"),
    )
    config_case(
        "output-dir-under-file",
        "error",
        "output_dir lies under a file",
        cfg(output_dir="taken.txt/run"),
        prep=write("taken.txt", "a file"),
    )
    config_case(
        "output-dir-is-data",
        "error",
        "output_dir is the data folder",
        cfg(data=["clips"], output_dir="clips"),
        prep=local(("train_clips", "clips")),
        extra_inputs=("clips",),
    )
    config_case("flag-batch-size-abc", "error", "--batch-size abc", cfg(), "--batch-size", "abc")
    config_case(
        "flag-crop-scale-one", "error", "--frame-crop-scale with one value", cfg(), "--frame-crop-scale", "0.8"
    )
    config_case("flag-data-missing", "error", "--data names a missing folder", cfg(), "--data", "nowhere")

    # resuming: a real 1-step run copied into the case folder, tampered with
    def resume_case(
        case_id: str, why: str, tamper: Callable[[Path], None] | None, target: str, expect: str = "error", **kwargs
    ) -> None:
        def prep(case_dir: Path) -> None:
            copy(i.path("ckpt_run"), case_dir / "run")
            if tamper is not None:
                tamper(case_dir / "run")

        config_case(
            case_id,
            expect,
            why,
            cfg(max_train_steps=2),
            "--resume-from-checkpoint",
            target,
            prep=prep,
            needs=("ckpt",),
            **kwargs,
        )

    def evil(file_name: str, marker: Path) -> Callable[[Path], None]:
        def tamper(run: Path) -> None:
            import torch

            torch.save({"payload": Payload(marker)}, run / "checkpoint-1" / file_name)

        return tamper

    for file_name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin"):
        for target in ("run/checkpoint-1", "latest"):
            marker = i.marker(f"train-{file_name}-{target.replace('/', '-')}")
            resume_case(
                f"resume-evil-{file_name}-{target.split('/')[-1]}",
                f"checkpoint-1/{file_name} replaced by a malicious pickle (resume from {target})",
                evil(file_name, marker),
                target,
                checks=(no_marker(marker),),
            )
    resume_case("resume-not-a-checkpoint", "resume from a folder of holiday notes", None, i("not_a_checkpoint"))
    resume_case("resume-missing", "resume from a path that does not exist", None, "run/checkpoint-99")
    resume_case("resume-file", "resume from a file", None, "run/train_config.json")

    def junk_folder(run: Path) -> None:
        (run / "checkpoint-7").mkdir()
        (run / "checkpoint-7" / "model.safetensors").write_bytes(b"junk")

    resume_case(
        "resume-latest-junk-folder",
        "latest: a junk checkpoint-7 folder (no trainer_state.json) beside the real checkpoint-1",
        junk_folder,
        "latest",
        expect="either",
    )

    def junk_weights(run: Path) -> None:
        shutil.copytree(run / "checkpoint-1", run / "checkpoint-7")
        (run / "checkpoint-7" / "trainer_state.json").write_text(
            (run / "checkpoint-7" / "trainer_state.json").read_text().replace('"global_step": 1', '"global_step": 7')
        )
        for weights in (run / "checkpoint-7").glob("model*.safetensors"):
            weights.write_bytes(random.Random(4).randbytes(weights.stat().st_size))

    resume_case(
        "resume-latest-junk-weights",
        "latest: checkpoint-7 whose model weights are random bytes",
        junk_weights,
        "latest",
    )

    def truncate_model(run: Path) -> None:
        for weights in (run / "checkpoint-1").glob("model*.safetensors"):
            weights.write_bytes(weights.read_bytes()[:1000])

    resume_case("resume-truncated-model", "checkpoint-1's model weights cut to 1,000 bytes", truncate_model, "latest")

    def garbage_state(run: Path) -> None:
        (run / "checkpoint-1" / "trainer_state.json").write_text("{ not json")

    resume_case("resume-bad-trainer-state", "checkpoint-1/trainer_state.json is not JSON", garbage_state, "latest")

    # ---------------------------------------------------------------------------------------------- eval-davis
    def davis(root: str, *more: str, out: str = "out") -> list[str]:
        args = ["--davis-root", root, "--out", out]
        if "--resolution" not in more:
            args += ["--resolution", "240p"]
        if "--encoder" not in more and "--baselines" not in more:
            args += ["--baselines", "lab"]
        return args + list(more)

    add(
        "ok",
        "eval-davis",
        davis(i("davis_ok")),
        "ok",
        "control: 1 sequence x 4 frames at 240p, lab",
        outputs=("out/results.json", "out/results.csv"),
    )
    add(
        "ok-encoder",
        "eval-davis",
        davis(i("davis_ok"), "--encoder", i("enc_good")),
        "ok",
        "control: a saved encoder directory",
        outputs=("out/results.json",),
    )
    add(
        "ok-davis2017",
        "eval-davis",
        davis(i("davis2017"), "--resolution", "480p"),
        "either",
        "DAVIS 2017 tennis, 2 frames (none scored: first and last are left out)",
        outputs=("out/results.json",),
    )
    for name, why, expect in (
        ("davis_missing", "the root does not exist", "error"),
        ("text.mp4", "the root is a file", "error"),
        ("davis_no_jpeg", "no JPEGImages folder", "error"),
        ("davis_no_first", "no first-frame annotation", "error"),
        ("davis_empty_anno", "empty annotation folder", "error"),
        ("davis_no_anno_dir", "no Annotations folder", "error"),
        ("davis_big_mask", "first mask is 854x480, frames 427x240", "error"),
        ("davis_small_mask", "first mask is 120x100, frames 427x240", "error"),
        ("davis_anno_trunc", "first mask cut to 60 bytes", "error"),
        ("davis_anno_text", "first mask is a text file", "error"),
        ("davis_jpg_trunc", "third frame cut to 200 bytes", "error"),
        ("davis_frame_size", "third frame is 854x480, the others 427x240", "error"),
        ("davis_empty_seq", "the sequence's frame folder is empty", "error"),
        ("davis_blank_mask", "first mask has no object", "either"),
        ("davis_only_first", "only the first frame is annotated", "either"),
        ("davis_one_frame", "a 1-frame sequence", "either"),
    ):
        add(
            f"root-{name.replace('_', '-')}",
            "eval-davis",
            davis(i(name)),
            expect,
            why,
            outputs=("out/results.json",),
        )
    add(
        "resolution-wrong",
        "eval-davis",
        davis(i("davis_ok"), "--resolution", "480p"),
        "error",
        "--resolution 480p on a 240p root",
    )
    add(
        "sequence-unknown",
        "eval-davis",
        davis(i("davis_ok"), "--sequences", "nope"),
        "error",
        "--sequences names none there",
    )
    add(
        "out-nonempty",
        "eval-davis",
        davis(i("davis_ok"), out="busy"),
        "error",
        "--out is a non-empty folder",
        prep=write("busy/notes.txt", "my notes"),
    )
    add(
        "out-is-file",
        "eval-davis",
        davis(i("davis_ok"), out="f.txt"),
        "error",
        "--out is a file",
        prep=write("f.txt", "f"),
    )
    add(
        "out-under-file",
        "eval-davis",
        davis(i("davis_ok"), out="f.txt/out"),
        "error",
        "--out lies under a file",
        prep=write("f.txt", "f"),
    )
    add(
        "out-is-root",
        "eval-davis",
        davis("root", out="root"),
        "error",
        "--out is --davis-root",
        prep=local(("davis_ok", "root")),
    )
    add(
        "out-dot-root",
        "eval-davis",
        davis("root", out="./root/"),
        "error",
        "--out is ./DAVIS_ROOT/",
        prep=local(("davis_ok", "root")),
    )
    add(
        "fail-new-folders",
        "eval-davis",
        davis(i("davis_no_first"), out="new/deeper/out"),
        "error",
        "a bad root with --out in folders that do not exist yet",
    )
    add(
        "nothing-to-evaluate",
        "eval-davis",
        ["--davis-root", i("davis_ok"), "--resolution", "240p", "--out", "out"],
        "error",
        "neither --encoder nor --baselines",
    )
    for option, value in (
        ("--baselines", "vgg16"),
        ("--encoder", i("enc_junk_weights")),
        ("--encoder", i("enc_resnet50")),
        ("--encoder", "resnet50"),
        ("--top-k", "0"),
        ("--top-k", "-3"),
        ("--radius", "-1"),
        ("--radius", "nan"),
        ("--temperature", "0"),
        ("--temperature", "nan"),
        ("--num-context", "-1"),
        ("--chunk-size", "0"),
        ("--void", "maybe"),
        ("--implementation", "fast"),
        ("--device", "banana"),
        ("--device", "cuda:0"),
    ):
        label = value if not value.startswith("/") else Path(value).name
        add(f"{option[2:]}={label}", "eval-davis", davis(i("davis_ok"), option, value), "error", f"{option} {value}")

    # -------------------------------------------------------------------------------------------- convert-crw
    add(
        "ok",
        "convert-crw",
        [i("official.pth"), "enc"],
        "ok",
        "control: an official-layout checkpoint of the small trunk",
        outputs=("enc/config.json", "enc/model.safetensors"),
    )
    for name, why in (
        ("ckpt_zero.pth", "0 bytes"),
        ("ckpt_trunc.pth", "the first half of a checkpoint"),
        ("ckpt_text.pth", "a text file"),
        ("ckpt_foreign.pth", "a zip without torch's data.pkl"),
        ("ckpt_missing_keys.pth", "half of the keys"),
        ("ckpt_misshaped.pth", "a head of the wrong shape"),
        ("ckpt_extra_key.pth", "an extra unmapped key"),
        ("ckpt_list.pth", "a list, not a dict"),
        ("ckpt_safetensors.pth", "a safetensors file"),
        ("png.mp4", "a PNG image"),
        ("enc_good", "a folder"),
        ("missing.pth", "does not exist"),
    ):
        add(f"{name.split('.')[0].replace('_', '-')}", "convert-crw", [i(name), "enc"], "error", f"checkpoint: {why}")
    for name, marker in (("ckpt_evil.pkl", "convert-pickle"), ("ckpt_evil.pth", "convert-torch-zip")):
        add(
            name.replace("_", "-").replace(".", "-"),
            "convert-crw",
            [i(name), "enc"],
            "error",
            "a pickle whose __reduce__ runs os.makedirs",
            checks=(no_marker(i.marker(marker)),),
        )
    add(
        "out-nonempty",
        "convert-crw",
        [i("official.pth"), "busy"],
        "error",
        "out_dir is not empty",
        prep=write("busy/a.txt", "a"),
    )
    add(
        "out-is-file",
        "convert-crw",
        [i("official.pth"), "f.txt"],
        "error",
        "out_dir is a file",
        prep=write("f.txt", "f"),
    )
    add(
        "out-under-file",
        "convert-crw",
        [i("official.pth"), "f.txt/enc"],
        "error",
        "out_dir under a file",
        prep=write("f.txt", "f"),
    )
    add(
        "out-is-checkpoint",
        "convert-crw",
        ["c.pth", "./c.pth"],
        "error",
        "out_dir is the checkpoint",
        prep=local(("official.pth", "c.pth")),
    )
    add(
        "evil-new-folders",
        "convert-crw",
        [i("ckpt_evil.pth"), "new/deeper/enc"],
        "error",
        "a malicious checkpoint with out_dir in folders that do not exist yet",
    )

    # --------------------------------------------------------------------------------------------------- demo
    def demo(clip: str, *more: str, out: str = "out") -> list[str]:
        args = ["--clip", clip, "--out", out]
        if "--encoder" not in more:
            args += rgb
        if "--frames" not in more:
            args += ["--frames", "3"]
        return args + list(more)

    demo_files = ("side_by_side.mp4", "source.mp4", "per_frame_edit.mp4", "walkreg.mp4", "scores.json", "report.html")
    add(
        "ok",
        "demo",
        demo(i("src.mp4")),
        "ok",
        "control: 3 frames of cups, rgb features",
        outputs=tuple(f"out/{f}" for f in demo_files),
        checks=(keeps_size("out/walkreg.mp4", 240, 428, 3),),
    )
    add(
        "odd-size",
        "demo",
        demo(i("odd.mp4")),
        "ok",
        "a 427x239 clip",
        outputs=("out/walkreg.mp4",),
        checks=(keeps_size("out/walkreg.mp4", 239, 427, 3), keeps_size("out/source.mp4", 239, 427, 3)),
    )
    add(
        "tiny8",
        "demo",
        demo(i("tiny8.mp4")),
        "either",
        "an 8x8 clip",
        outputs=("out/walkreg.mp4",),
        checks=(keeps_size("out/walkreg.mp4", 8, 8, 3),),
    )
    for name, why in (
        ("zero.mp4", "0 bytes"),
        ("head.mp4", "the first 3,000 bytes of an .mp4"),
        ("text.mp4", "a text file named .mp4"),
        ("random.mp4", "random bytes"),
        ("missing.mp4", "does not exist"),
        ("folder.mp4", "an empty folder named .mp4"),
        ("frames_broken", "a frame folder with a broken third PNG"),
        ("frames_empty", "an empty frame folder"),
        ("one.mp4", "a 1-frame clip"),
    ):
        add(f"clip-{name}", "demo", demo(i(name)), "error", f"--clip: {why}")
    for value in ("0", "-1", "1", "x"):
        add(f"frames={value}", "demo", demo(i("src.mp4"), "--frames", value), "error", f"--frames {value}")
    add("out-is-file", "demo", demo(i("src.mp4"), out="f.txt"), "error", "--out is a file", prep=write("f.txt", "f"))
    add(
        "out-under-file",
        "demo",
        demo(i("src.mp4"), out="f.txt/out"),
        "error",
        "--out under a file",
        prep=write("f.txt", "f"),
    )
    add(
        "clip-in-out",
        "demo",
        demo("out/source.mp4"),
        "error",
        "--clip is OUT/source.mp4, which the demo writes",
        prep=local(("src.mp4", "out/source.mp4")),
    )
    add(
        "clip-in-out-symlink",
        "demo",
        demo("clip.mp4"),
        "error",
        "--clip is a symlink to OUT/walkreg.mp4, which the demo writes",
        prep=chain(local(("src.mp4", "out/walkreg.mp4")), symlink("clip.mp4", "out/walkreg.mp4")),
    )
    add("encoder-unknown", "demo", demo(i("src.mp4"), "--encoder", "resnet50"), "error", "unknown encoder")
    add(
        "encoder-junk",
        "demo",
        demo(i("src.mp4"), "--encoder", i("enc_junk_weights")),
        "error",
        "encoder with junk weights",
    )
    add(
        "fail-keeps-existing",
        "demo",
        demo(i("frames_broken")),
        "error",
        "a bad clip with an --out holding an earlier run",
        prep=write("out/scores.json", old),
        checks=(file_unchanged("out/scores.json", old),),
    )

    # ---------------------------------------------------------------------------------------------------- env
    add("ok", "env", [], "ok", "control")
    add("extra-argument", "env", ["please"], "error", "an unexpected argument")
    return cases


# ------------------------------------------------------------------------------------------------------ running


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WALKREG_DEBUG"}
    env.update(
        WALKREG_NO_PROGRESS="1",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def auto_inputs(case: Case, case_dir: Path) -> list[Path]:
    """Existing paths named on the command line, except the values of output options (and convert-crw's out_dir),
    plus the case's extra inputs."""
    found, positional = [], 0
    for k, arg in enumerate(case.args):
        is_output = k > 0 and case.args[k - 1] in OUTPUT_FLAGS
        if not arg.startswith("-"):
            if not (k > 0 and case.args[k - 1].startswith("-")):
                positional += 1
                if case.command == "convert-crw" and positional == 2:
                    is_output = True
        if is_output or not arg or arg.startswith("-"):
            continue
        path = Path(arg) if os.path.isabs(arg) else case_dir / arg
        if os.path.lexists(path):
            found.append(path)
    found += [Path(p) if os.path.isabs(p) else case_dir / p for p in case.extra_inputs]
    return found


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_case(case: Case, case_dir: Path, tmp: Path, env: dict[str, str]) -> Result:
    args = [a.replace("ABS/", str(case_dir) + "/", 1) if a.startswith("ABS/") else a for a in case.args]
    inputs = auto_inputs(case, case_dir)
    before_inputs = {str(p): fingerprint(p) for p in inputs}
    before_case = fingerprint(case_dir)
    command = [sys.executable, "-m", "walkreg", case.command, *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=case_dir, env=env, capture_output=True, timeout=case.timeout, check=False)
        code, stderr = done.returncode, done.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as err:
        code, stderr = None, (err.stderr or b"").decode("utf-8", "replace") + "\n[timed out]"
    seconds = time.perf_counter() - start

    promises: dict[str, bool] = {}
    failures: list[str] = []

    def promise(name: str, problem: str | None) -> None:
        promises[name] = problem is None
        if problem is not None:
            failures.append(f"{name}: {problem}")

    failed = code not in (0, None)
    if case.expect == "ok":
        promise("exit code", None if code == 0 else f"expected 0, got {code}")
    elif case.expect == "error":
        promise("exit code", None if code in (1, 2) else f"expected 1 or 2, got {code}")
    else:
        promise("exit code", None if code in (0, 1, 2) else f"expected 0, 1 or 2, got {code}")
    line = last_line(stderr)
    if failed:
        prefix = f"walkreg {case.command}: error:"
        if not line.startswith(prefix):
            problem = f"last line does not start with {prefix!r}"
        elif len(line) > MAX_LINE or not line.isprintable():
            problem = f"last line is not one readable line ({len(line)} characters)"
        else:
            problem = None
        promise("one-line error", problem)
    promise("no traceback", "stderr holds a Python traceback" if TRACEBACK in stderr else None)
    changed = [
        f"{path}: {describe_change(before, fingerprint(Path(path)))}"
        for path, before in before_inputs.items()
        if fingerprint(Path(path)) != before
    ]
    promise("inputs intact", "; ".join(changed) if changed else None)
    left = leftovers(case_dir) + [f"inputs/{p}" for p in leftovers(tmp / "inputs")]
    if failed or code is None:
        after_case = fingerprint(case_dir)
        problem = describe_change(before_case, after_case) if after_case != before_case else None
        if left:
            problem = f"temporaries {left[:4]}" + (f"; {problem}" if problem else "")
        promise("nothing left behind", problem)
    else:
        promise("no temporaries", f"temporaries {left[:4]}" if left else None)
        if case.outputs:
            missing = [o for o in case.outputs if not (case_dir / o).exists()]
            promise("outputs written", f"missing {missing}" if missing else None)
    for name, check in case.checks:
        promise(name, check(case_dir, code if code is not None else -1))
    shown = " ".join(shlex.quote(a) for a in ["walkreg", case.command, *args])
    return Result(
        id=case.id,
        command=shown,
        cwd=str(case_dir),
        expect=case.expect,
        why=case.why,
        exit_code=code,
        last_line=line,
        stderr_tail=stderr[-3000:],
        seconds=round(seconds, 2),
        promises=promises,
        failures=failures,
    )


def short_command(result: Result, tmp: Path, width: int = 100) -> str:
    text = result.command.replace(str(tmp / "inputs") + "/", "").replace(result.cwd + "/", "")
    text = text.replace("walkreg ", "", 1)
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown(results: list[Result], tmp: Path) -> str:
    rows = ["| id | command (in/ = inputs) | expected | exit | held | failed promise |", "|---|---|---|---|---|---|"]
    for r in results:
        cells = [
            r.id,
            "`" + short_command(r, tmp).replace("|", "\\|") + "`",
            r.expect,
            str(r.exit_code),
            "yes" if r.held else "**no**",
            "; ".join(r.failures).replace("|", "\\|")[:300],
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def code_version() -> str:
    """The repository's commit, with ``+dirty`` when the working tree differs from it (or ``unknown``)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="run only the cases whose id contains this substring")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--workers", type=int, default=2, help="parallel cases, at most 2 (default: 2)")
    args = parser.parse_args()
    workers = max(1, min(2, args.workers))

    tmp = Path(tempfile.mkdtemp(prefix="walkreg-bad-inputs-"))
    env = subprocess_env()
    version = code_version()
    try:
        started = time.perf_counter()
        inputs = Inputs(tmp)
        cases = build_cases(inputs)
        ids = [c.id for c in cases]
        duplicates = sorted({x for x in ids if ids.count(x) > 1})
        if duplicates:
            raise RuntimeError(f"duplicate case ids: {duplicates}")
        if args.only:
            cases = [c for c in cases if args.only in c.id]
        if not cases:
            print(f"no case id contains {args.only!r}", file=sys.stderr)
            return 2
        needs = {n for c in cases for n in c.needs}
        print(f"setting up {len(cases)} cases in {tmp} ...", file=sys.stderr)
        inputs.make_media()
        inputs.make_torch_inputs()
        inputs.make_davis()
        inputs.make_train_inputs()
        if "sd" in needs:
            inputs.make_sd()
        if "ckpt" in needs:
            inputs.make_checkpoint(env)
        before_inputs = fingerprint(inputs.root)
        case_dirs = {}
        for case in cases:
            case_dirs[case.id] = tmp / "cases" / case.id
            case_dirs[case.id].mkdir(parents=True)
            if case.prep is not None:
                case.prep(case_dirs[case.id])
        print(f"setup took {time.perf_counter() - started:.0f} s; running with {workers} workers", file=sys.stderr)

        def one(case: Case) -> Result:
            result = run_case(case, case_dirs[case.id], tmp, env)
            mark = "held" if result.held else "FAILED " + "; ".join(result.failures)[:200]
            print(f"[{result.seconds:6.1f} s] {case.id}: exit {result.exit_code}, {mark}", file=sys.stderr)
            return result

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, cases))
        after_inputs = fingerprint(inputs.root)
        shared_change = describe_change(before_inputs, after_inputs) if after_inputs != before_inputs else ""

        held = sum(r.held for r in results)
        print(markdown(results, tmp))
        if shared_change:
            print(f"\nshared inputs changed during the campaign: {shared_change}")
        changed_code = code_version() != version
        if changed_code:
            print(f"\nwalkreg changed during the run ({version} -> {code_version()}): the results mix both")
        print(f"\nwalkreg at {version}")
        print(f"held {held} of {len(results)} cases")
        if args.json:
            body = {
                "schema": "walkreg.bad-inputs/1",
                "python": sys.version.split()[0],
                "walkreg_commit": version,
                "walkreg_commit_at_end": code_version(),
                "held": held,
                "total": len(results),
                "shared_inputs_changed": shared_change,
                "seconds": round(time.perf_counter() - started, 1),
                "cases": [{**dataclasses.asdict(r), "held": r.held} for r in results],
            }
            Path(args.json).write_text(json.dumps(body, indent=2) + "\n")
        return 0 if held == len(results) and not shared_change else 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
