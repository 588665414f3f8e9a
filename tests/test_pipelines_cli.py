"""The one-call pipeline class and ``walkreg edit``, with a tiny SD directory saved offline (byte-level tokenizer)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch


pytest.importorskip("diffusers")

from diffusers import StableDiffusionImg2ImgPipeline  # noqa: E402
from test_pipelines import EMBED, embeds, run_sd, tiny_sd_components, video  # noqa: E402
from testing_utils import CLIPS, tiny_encoder  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from walkreg.cli import main  # noqa: E402
from walkreg.flow import flow_warp_error  # noqa: E402
from walkreg.pipelines import WalkRegVideoEditPipeline  # noqa: E402
from walkreg.video import probe_video, read_video  # noqa: E402


def byte_tokenizer(folder) -> CLIPTokenizer:
    """A character-level CLIP tokenizer written offline: the 256 byte symbols, their word-final forms, two specials."""
    symbols = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + [chr(c) for c in range(174, 256)]
    symbols += [chr(256 + i) for i in range(256 - len(symbols))]  # GPT-2's byte-to-unicode map covers 256 symbols
    vocab = {
        s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16}))
    return CLIPTokenizer.from_pretrained(folder)


def tiny_text_config() -> CLIPTextConfig:
    """A tiny CLIP text encoder config whose width is the tiny UNet's cross-attention width (``EMBED``)."""
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=EMBED,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        max_position_embeddings=16,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny SD directory with text encoder and tokenizer, and the CRW encoder in ``crw_encoder/``."""
    root = tmp_path_factory.mktemp("tiny-sd")
    components = tiny_sd_components()
    torch.manual_seed(0)
    components["text_encoder"] = CLIPTextModel(tiny_text_config())
    components["tokenizer"] = byte_tokenizer(root / "tok")
    pipe = WalkRegVideoEditPipeline(
        **components, safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False
    )
    pipe.crw_encoder = tiny_encoder()
    pipe.save_pretrained(root / "model")
    return root / "model"


def test_pipeline_weight_zero_equals_plain_img2img_and_loads_from_a_directory(model_dir):
    pipe = WalkRegVideoEditPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.crw_encoder is not None
    frames = video(3, 32)
    e = embeds(1)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    common = {"strength": 0.8, "num_inference_steps": 3, "guidance_scale": 2.0}
    out = pipe(video=frames, walkreg_weight=0.0, generator=gens(), score=False, **common, **e)
    plain = StableDiffusionImg2ImgPipeline(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    assert torch.equal(out.frames, run_sd(plain, frames, steps=3).float())
    edited, scores = pipe(
        video=frames,
        walkreg_weight=0.8,
        walkreg_range=(0.0, 1.0),
        generator=gens(),
        output_type="np",
        return_dict=False,
        **common,
        **e,
    )
    assert edited.shape == (3, 32, 32, 3)
    assert abs(edited - out.frames.permute(0, 2, 3, 1).numpy()).max() > 1e-3
    assert 0.0 <= scores["consistency"] <= 1.0 and "walk_back" in scores
    with pytest.raises(ValueError, match="`walkreg_weight` must be in"):
        pipe(video=frames, walkreg_weight=2.0, **e)
    with pytest.raises(ValueError, match="divisible by 2"):
        pipe(video=torch.rand(3, 3, 33, 32), **e)


def test_walkreg_edit_cli_writes_the_video_and_its_score(model_dir, tmp_path, capsys):
    out, report = tmp_path / "edited.mp4", tmp_path / "scores.json"
    code = main(
        [
            "edit",
            str(CLIPS / "carphone.mp4"),
            "--model",
            str(model_dir),
            "--prompt",
            "a cartoon",
            "--out",
            str(out),
            "--size",
            "32x40",
            "--max-frames",
            "3",
            "--steps",
            "3",
            "--strength",
            "0.7",
            "--seed",
            "1",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    assert probe_video(out).num_frames == 3 and (probe_video(out).height, probe_video(out).width) == (32, 40)
    scores = json.loads(report.read_text())
    assert scores["seed"] == 1 and 0.0 <= scores["consistency"] <= 1.0
    assert "consistency" in capsys.readouterr().out


def test_walkreg_edit_cli_errors_are_one_line_and_leave_no_output(model_dir, tmp_path, capsys):
    out = tmp_path / "edited.mp4"
    base = ["edit", str(CLIPS / "carphone.mp4"), "--prompt", "x", "--out", str(out)]
    assert main([*base, "--model", str(tmp_path)]) == 1
    assert "model_index.json" in capsys.readouterr().err
    assert main([*base, "--model", str(model_dir), "--size", "30x40"]) == 1
    err = capsys.readouterr().err
    assert "`--size` must be positive multiples of 8" in err and len(err.strip().splitlines()) == 1
    assert (
        main(["edit", str(tmp_path / "missing.mp4"), "--model", str(model_dir), "--prompt", "x", "--out", str(out)])
        == 1
    )
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.mp4"))


# Stable Diffusion 1.5's own scheduler_config.json: what `walkreg edit` gets from a stock SD-1.5 directory
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def test_walkreg_edit_with_sd15s_stock_pndm_scheduler_cuts_flicker(model_dir, tmp_path):
    stock = tmp_path / "sd15-like"
    shutil.copytree(model_dir, stock)
    (stock / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))
    index = json.loads((stock / "model_index.json").read_text())
    (stock / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "PNDMScheduler"]}))
    source = read_video(CLIPS / "carphone.mp4", max_frames=6, size=(32, 40))
    flickers = {}
    for weight in ("0", "1"):
        out = tmp_path / f"edited-{weight}.mp4"
        args = ["edit", str(CLIPS / "carphone.mp4"), "--model", str(stock), "--prompt", "a cartoon", "--out", str(out)]
        options = ["--size", "32x40", "--max-frames", "6", "--steps", "10", "--walkreg-weight", weight]
        assert main([*args, *options]) == 0
        edited = read_video(out)
        flickers[weight] = np.mean([flow_warp_error(source[t : t + 2], edited[t : t + 2]) for t in range(5)])
    assert WalkRegVideoEditPipeline.from_pretrained(stock).scheduler.config.skip_prk_steps
    print(f"flicker of the edit with SD-1.5's PNDM: plain {flickers['0']:.4f}, walkreg {flickers['1']:.4f}")
    assert flickers["1"] < 0.7 * flickers["0"]
