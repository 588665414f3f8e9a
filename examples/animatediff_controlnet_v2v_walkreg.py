"""AnimateDiff ControlNet video-to-video with walkreg -- given local model directories (no downloads).

    python examples/animatediff_controlnet_v2v_walkreg.py clip.mp4 --model path/to/stable-diffusion-v1-5 \
        --motion-adapter path/to/animatediff-motion-adapter-v1-5-2 --controlnet path/to/sd-controlnet-canny \
        --encoder path/to/walkreg-crw-r18 --prompt "a bronze statue" --out edited.mp4

The control frames come from ``--control`` (a video of depth, pose or edge maps made beforehand, read at the same
size and frame count) or, by default, from edge maps of the source (for an edge / Canny ControlNet). The latents are
``(B, C, F, h, w)``; AnimateDiff does not read ``callback.tensor_inputs`` on its own, so it is passed as
``callback_on_step_end_tensor_inputs``. Unlike AnimateDiff video-to-video, this pipeline takes one video as a flat
list of frames.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from diffusers import AnimateDiffVideoToVideoControlNetPipeline, ControlNetModel, DDIMScheduler, MotionAdapter

from walkreg import CRWEncoder
from walkreg.pipelines import WalkRegCallback
from walkreg.scoring import score_clip
from walkreg.video import probe_video, read_video, write_video


def edge_maps(frames: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """``(T, 3, H, W)`` in [0, 1] -> binary Sobel edge maps as ``(T, 3, H, W)`` in {0, 1} (the control frames)."""
    grey = frames.mean(1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    gradient = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels).norm(dim=1, keepdim=True)
    return (gradient > threshold).float().expand(-1, 3, -1, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--model", required=True)
    parser.add_argument("--motion-adapter", required=True)
    parser.add_argument("--controlnet", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--control", default=None, help="a control video (default: edge maps of the source)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--strength", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = read_video(args.source, max_frames=args.max_frames, size=tuple(args.size))
    control = (
        read_video(args.control, max_frames=len(frames), size=tuple(args.size)) if args.control else edge_maps(frames)
    )
    if len(control) != len(frames):
        raise ValueError(f"`--control` must have at least {len(frames)} frames, but has {len(control)}.")
    adapter = MotionAdapter.from_pretrained(args.motion_adapter)
    controlnet = ControlNetModel.from_pretrained(args.controlnet)
    pipe = AnimateDiffVideoToVideoControlNetPipeline.from_pretrained(
        args.model, motion_adapter=adapter, controlnet=controlnet
    ).to(device)
    pipe.scheduler = DDIMScheduler.from_config(
        pipe.scheduler.config, beta_schedule="linear", clip_sample=False, steps_offset=1
    )
    encoder = CRWEncoder.from_pretrained(args.encoder)
    callback = WalkRegCallback(encoder, frames, weight=args.weight)
    to_pil = lambda video: pipe.video_processor.numpy_to_pil(video.permute(0, 2, 3, 1).numpy())  # noqa: E731
    with callback.attach(pipe):
        edited = (
            pipe(
                video=to_pil(frames),
                conditioning_frames=to_pil(control),
                prompt=args.prompt,
                height=args.size[0],
                width=args.size[1],
                strength=args.strength,
                num_inference_steps=args.steps,
                generator=torch.Generator().manual_seed(args.seed),
                output_type="pt",
                callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=callback.tensor_inputs,
            )
            .frames[0]
            .float()
            .cpu()
        )
    write_video(args.out, edited, fps=probe_video(args.source).fps or 24)
    print("walkreg:", score_clip(edited, encoder, source=frames).overall)


if __name__ == "__main__":
    main()
