"""Video InstructPix2Pix with walkreg, frame by frame -- given local model directories (no downloads).

    python examples/instruct_pix2pix_walkreg.py clip.mp4 --model path/to/instruct-pix2pix \
        --encoder path/to/walkreg-crw-r18 --prompt "make it look like winter" --out edited.mp4

The frames are the batch: each frame is its own image condition and the instruction is the same for all. IP2P has
no img2img strength -- every frame starts from noise, conditioned on its source frame by --image-guidance-scale --
so the latents walkreg propagates are the ``(F, 4, h, w)`` noisy latents (its UNet's 8 input channels add the image
latents). ``--ddim`` swaps the model's scheduler (Euler ancestral for timbrooks/instruct-pix2pix) for DDIM.
``walkreg edit SOURCE --model DIR --pipeline instruct-pix2pix ...`` does the same from the command line.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline

from walkreg import CRWEncoder
from walkreg.pipelines import WalkRegCallback
from walkreg.scoring import score_clip
from walkreg.video import probe_video, read_video, write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--model", required=True, help="a local InstructPix2Pix directory")
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--prompt", required=True, help="the edit instruction, the same for every frame")
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="text guidance")
    parser.add_argument("--image-guidance-scale", type=float, default=1.5, help="how closely frames keep the source")
    parser.add_argument("--weight", type=float, default=0.5, help="WalkRegCallback weight")
    parser.add_argument("--ddim", action="store_true", help="use DDIM instead of the model's scheduler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true", help="also render the plain edit and print its score")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = read_video(args.source, max_frames=args.max_frames, size=tuple(args.size))
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        args.model, safety_checker=None, requires_safety_checker=False
    ).to(device)
    if args.ddim:
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    encoder = CRWEncoder.from_pretrained(args.encoder)
    callback = WalkRegCallback(encoder, frames, weight=args.weight)

    def edit(cb):
        generators = [torch.Generator().manual_seed(args.seed) for _ in range(len(frames))]  # same noise per frame
        return (
            pipe(
                prompt=[args.prompt] * len(frames),
                image=frames,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                image_guidance_scale=args.image_guidance_scale,
                generator=generators,
                output_type="pt",
                callback_on_step_end=cb,
            )
            .images.float()
            .cpu()
        )

    with callback.attach(pipe):
        edited = edit(callback)
    write_video(args.out, edited, fps=probe_video(args.source).fps or 24)
    print("walkreg:", score_clip(edited, encoder, source=frames).overall)
    if args.compare:
        print("plain:  ", score_clip(edit(None), encoder, source=frames).overall)


if __name__ == "__main__":
    main()
