"""WalkBackGuidance on every latent layout (tiny offline pipelines), and its sparse loss against a dense reference."""

from __future__ import annotations

import pytest
import torch


pytest.importorskip("diffusers")

from test_pipelines import (  # noqa: E402
    run_animatediff,
    run_sd,
    run_wan,
    tiny_animatediff,
    tiny_cogvideox,
    tiny_sd_img2img,
    tiny_wan,
    video,
)
from testing_utils import assert_tensors_close, tiny_encoder  # noqa: E402

from walkreg.pipelines import LatentLayout, SourceCorrespondences, WalkBackGuidance  # noqa: E402
from walkreg.pipelines.guidance import decode_frames, walk_back_against_source  # noqa: E402
from walkreg.walks import transition_matrix  # noqa: E402


# layout -> (pipeline, runner, source frames, frame size, denoised latents' shape in the pipeline's layout)
LAYOUTS = {
    "sd-FCHW": (tiny_sd_img2img, run_sd, 3, 32, (3, 4, 16, 16)),
    "animatediff-BCFHW": (tiny_animatediff, run_animatediff, 3, 32, (1, 4, 3, 16, 16)),
    "wan-BCFHW-x4": (tiny_wan, run_wan, 9, 32, (1, 16, 3, 4, 4)),
    "cogvideox-BFCHW-x4": (tiny_cogvideox, run_wan, 9, 16, (1, 3, 4, 2, 2)),
}


@pytest.mark.parametrize("features", ["crw", "latent"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_walk_back_guidance_step_lowers_the_loss_and_changes_the_edit(name, features):
    make, run, num_frames, size, shape = LAYOUTS[name]
    pipe, frames = make(), video(num_frames, size)
    guidance = WalkBackGuidance(tiny_encoder(), frames, weight=0.01, end=1.0, features=features)
    denoised = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    stepped, before = guidance.step(pipe, denoised)
    with torch.no_grad():
        after = float(guidance.loss(pipe, stepped))
    assert after < before, f"{name}: loss {before:.5f} -> {after:.5f}"

    final = {}

    def keep_latents(pipeline, step_index, timestep, kwargs):
        final["latents"] = kwargs["latents"]
        return {}

    plain = run(pipe, frames, keep_latents, steps=3)
    layout = guidance.layout(pipe)
    with torch.no_grad():  # the guidance decodes as the pipeline does: the frames standing for each latent frame
        decoded = decode_frames(pipe, layout.to_frames(final["latents"]), layout)[0]
    kept = [layout.source_frame(j) for j in range(decoded.shape[0])]
    assert_tensors_close(decoded, plain.reshape(-1, *plain.shape[-3:])[kept], atol=1e-5)
    with WalkBackGuidance(weight=0.0, end=1.0, cache=guidance.cache, features=features).attach(pipe):
        assert torch.equal(run(pipe, frames, steps=3), plain), f"{name}: weight 0 changed the output"
    with guidance.attach(pipe):
        guided = run(pipe, frames, steps=3)
    assert guided.shape == plain.shape
    assert (guided - plain).abs().max() > 1e-4, f"{name}: guidance did not change the output"


def dense_walk_back(features: torch.Tensor, correspondences: SourceCorrespondences, temperature: float):
    """The loss with the full ``N x N`` edited transition matrix (the reference the sparse loss must equal)."""
    b, _, f, h, w = features.shape
    nodes = features.flatten(3)
    home = torch.arange(h * w).view(h * w, 1)
    total = weight_sum = 0.0
    for i in range(1, f):
        edited = transition_matrix(nodes[:, :, i - 1], nodes[:, :, i], temperature)  # (B, N, N): f-1 -> f
        source = correspondences.previous[i]
        returned = (source.weights[0] * edited[:, source.indices[0], home]).sum(-1)
        confidence = correspondences.previous_confidence[i]
        total = total + (-torch.log(returned + 1e-20) * confidence).sum()
        weight_sum = weight_sum + confidence.sum() * b
    return total / weight_sum.clamp_min(1e-12)


@pytest.mark.parametrize("layout", [LatentLayout("FCHW"), LatentLayout("BCFHW", 4, causal=True)])
def test_sparse_loss_and_gradient_equal_the_dense_reference(layout):
    encoder, frames = tiny_encoder(), video(9, 48)
    corr = SourceCorrespondences.compute(encoder, frames, (6, 6), layout, show_progress=False)
    g = torch.Generator().manual_seed(0)
    edited = torch.randn(2, 16, corr.num_latent_frames, 6, 6, generator=g)
    edited = torch.nn.functional.normalize(edited, dim=1).requires_grad_(True)
    dense = dense_walk_back(edited, corr, 0.05)
    (dense_grad,) = torch.autograd.grad(dense, edited)
    for chunk_size in (7, 36, 1024):  # 7 does not divide N = 36: uneven blocks
        sparse = walk_back_against_source(edited, corr, 0.05, chunk_size=chunk_size)
        (sparse_grad,) = torch.autograd.grad(sparse, edited)
        assert_tensors_close(sparse.detach(), dense.detach(), atol=1e-5, rtol=1e-5)
        assert_tensors_close(sparse_grad, dense_grad, atol=1e-5, rtol=1e-4)
    assert dense_grad.abs().max() > 0
    with pytest.raises(ValueError, match="`chunk_size` must be >= 1, but is 0"):
        walk_back_against_source(edited, corr, 0.05, chunk_size=0)


def test_the_layout_override_carries_time_compression():
    guidance = WalkBackGuidance(tiny_encoder(), video(9, 16), latent_layout="BCFHW", temporal_compression=4)
    assert guidance.layout(object()) == LatentLayout("BCFHW", 4, causal=True)
