"""Per-frame Stable Diffusion img2img with walkreg, given local model directories (no downloads).

    python examples/sd_img2img_walkreg.py clip.mp4 --model path/to/stable-diffusion-v1-5 \
        --encoder path/to/walkreg-crw-r18 --prompt "a watercolor painting" --out edited.mp4

The plain pipeline is untouched: walkreg enters through ``callback_on_step_end`` (propagation) and an optional
``WalkBackGuidance`` context. ``--compare`` also renders the plain edit with the same seeds and prints both scores.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import StableDiffusionImg2ImgPipeline

from walkreg import CRWEncoder
from walkreg.pipelines import WalkBackGuidance, WalkRegCallback
from walkreg.scoring import score_clip
from walkreg.video import probe_video, read_video, write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--model", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--weight", type=float, default=0.5, help="WalkRegCallback weight")
    parser.add_argument("--guidance-weight", type=float, default=0.0, help="WalkBackGuidance weight (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = read_video(args.source, max_frames=args.max_frames, size=tuple(args.size))
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        args.model, safety_checker=None, requires_safety_checker=False
    ).to(device)
    encoder = CRWEncoder.from_pretrained(args.encoder)
    callback = WalkRegCallback(encoder, frames, weight=args.weight)
    guidance = WalkBackGuidance(weight=args.guidance_weight, cache=callback.cache)

    def edit(cb):
        generators = [torch.Generator().manual_seed(args.seed) for _ in range(len(frames))]  # same noise per frame
        return (
            pipe(
                prompt=[args.prompt] * len(frames),
                image=frames,
                strength=args.strength,
                num_inference_steps=args.steps,
                generator=generators,
                output_type="pt",
                callback_on_step_end=cb,
            )
            .images.float()
            .cpu()
        )

    with callback.attach(pipe), guidance.attach(pipe):
        edited = edit(callback)
    write_video(args.out, edited, fps=probe_video(args.source).fps or 24)
    print("walkreg:", score_clip(edited, encoder, source=frames).overall)
    if args.compare:
        print("plain:  ", score_clip(edit(None), encoder, source=frames).overall)


if __name__ == "__main__":
    main()
