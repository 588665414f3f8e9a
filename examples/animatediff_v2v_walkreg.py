"""AnimateDiff video-to-video with walkreg -- given local model directories (no downloads).

    python examples/animatediff_v2v_walkreg.py clip.mp4 --model path/to/stable-diffusion-v1-5 \
        --motion-adapter path/to/animatediff-motion-adapter-v1-5-2 --encoder path/to/walkreg-crw-r18 \
        --prompt "a van gogh painting" --out edited.mp4

AnimateDiff does not read ``callback.tensor_inputs`` on its own: pass ``callback_on_step_end_tensor_inputs``.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AnimateDiffVideoToVideoPipeline, DDIMScheduler, MotionAdapter

from walkreg import CRWEncoder
from walkreg.pipelines import WalkRegCallback
from walkreg.scoring import score_clip
from walkreg.video import probe_video, read_video, write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--model", required=True)
    parser.add_argument("--motion-adapter", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = read_video(args.source, max_frames=args.max_frames, size=tuple(args.size))
    adapter = MotionAdapter.from_pretrained(args.motion_adapter)
    pipe = AnimateDiffVideoToVideoPipeline.from_pretrained(args.model, motion_adapter=adapter).to(device)
    pipe.scheduler = DDIMScheduler.from_config(
        pipe.scheduler.config, beta_schedule="linear", clip_sample=False, steps_offset=1
    )
    encoder = CRWEncoder.from_pretrained(args.encoder)
    callback = WalkRegCallback(encoder, frames, weight=args.weight)
    pil = pipe.video_processor.numpy_to_pil(frames.permute(0, 2, 3, 1).numpy())  # AnimateDiff has no image_processor
    with callback.attach(pipe):
        edited = (
            pipe(
                video=[pil],
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
    print(score_clip(edited, encoder, source=frames).overall)


if __name__ == "__main__":
    main()
