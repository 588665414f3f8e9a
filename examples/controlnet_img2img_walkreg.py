"""ControlNet (Canny) img2img, frame by frame, with walkreg -- given local model directories (no downloads).

    python examples/controlnet_img2img_walkreg.py clip.mp4 --model path/to/stable-diffusion-v1-5 \
        --controlnet path/to/sd-controlnet-canny --encoder path/to/walkreg-crw-r18 \
        --prompt "a bronze statue" --out edited.mp4
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline

from walkreg import CRWEncoder
from walkreg.pipelines import WalkRegCallback
from walkreg.scoring import score_clip
from walkreg.video import probe_video, read_video, write_video


def canny(frames: torch.Tensor) -> torch.Tensor:
    """``(T, 3, H, W)`` in [0, 1] -> Canny edge maps as ``(T, 3, H, W)`` in [0, 1] (the control images)."""
    edges = []
    for frame in frames:
        grey = cv2.cvtColor((frame.permute(1, 2, 0).numpy() * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        edges.append(torch.from_numpy(cv2.Canny(grey, 100, 200)).float().div(255).expand(3, -1, -1))
    return torch.stack(edges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--model", required=True)
    parser.add_argument("--controlnet", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--strength", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = read_video(args.source, max_frames=args.max_frames, size=tuple(args.size))
    controlnet = ControlNetModel.from_pretrained(args.controlnet)
    pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
        args.model, controlnet=controlnet, safety_checker=None, requires_safety_checker=False
    ).to(device)
    encoder = CRWEncoder.from_pretrained(args.encoder)
    callback = WalkRegCallback(encoder, frames, weight=args.weight)
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(len(frames))]
    with callback.attach(pipe):
        edited = (
            pipe(
                prompt=[args.prompt] * len(frames),
                image=frames,
                control_image=canny(frames),
                strength=args.strength,
                num_inference_steps=args.steps,
                generator=generators,
                output_type="pt",
                callback_on_step_end=callback,
            )
            .images.float()
            .cpu()
        )
    write_video(args.out, edited, fps=probe_video(args.source).fps or 24)
    print(score_clip(edited, encoder, source=frames).overall)


if __name__ == "__main__":
    main()
