import pytest
import torch
import torch.nn.functional as F
from testing_utils import DAVIS_RESOLUTION, DAVIS_ROOT, assert_tensors_close, shift_frame, tiny_encoder

from walkreg import PropagationConfig, propagate
from walkreg.video import read_annotation, read_image


def random_features(t, b=2, c=16, h=13, w=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(b, c, h, w, generator=g), dim=1) for _ in range(t)]


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_context": 3, "radius": 4},
        {"num_context": 0, "radius": 2.5, "top_k": 3},
        {"num_context": 5, "radius": 6, "restrict_first": True, "top_k": 1},
        {"num_context": 2, "radius": 3, "max_tiles": 1},
    ],
)
def test_windowed_equals_dense(overrides):
    feats = random_features(6)
    first = torch.rand(2, 3, 13, 21)
    windowed = list(propagate(feats, first, implementation="windowed", **overrides))
    dense = list(propagate(feats, first, implementation="dense", **overrides))
    assert len(windowed) == 6 and torch.equal(windowed[0], first)
    for a, b in zip(windowed, dense, strict=True):
        assert_tensors_close(a, b, atol=1e-5)


def test_soft_labels_stay_distributions():
    feats = random_features(5)
    onehot = F.one_hot(torch.randint(0, 4, (2, 13, 21)), 4).permute(0, 3, 1, 2).float()
    for out in propagate(feats, onehot, radius=5):
        assert (out >= 0).all()
        assert_tensors_close(out.sum(1), torch.ones(2, 13, 21), atol=1e-5)


def test_identical_frames_copy_the_labels():
    feats = random_features(1) * 4
    values = torch.randn(2, 5, 13, 21)
    for out in propagate(feats, values, temperature=1e-3, top_k=1):
        assert_tensors_close(out, values, atol=1e-5)


def test_known_translation_of_a_real_frame_is_recovered():
    """A real DAVIS frame shifted by (8, 16) px = (1, 2) feature cells: each cell must point back to its source."""
    frame = read_image(DAVIS_ROOT / "JPEGImages" / DAVIS_RESOLUTION / "blackswan" / "00000.jpg")
    clip = torch.stack([frame, shift_frame(frame, 8, 16)])
    feats = tiny_encoder()(clip[None])[0]  # (C, 2, h, w)
    h, w = feats.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    coords = torch.stack([ys, xs])[None]
    mask = torch.from_numpy(
        read_annotation(DAVIS_ROOT / "Annotations" / DAVIS_RESOLUTION / "blackswan" / "00000.png")
    ).float()
    mask = F.interpolate(mask[None, None], size=(h, w), mode="bilinear")[0]
    values = torch.cat([coords, mask[None]], dim=1)
    frames = [feats[:, i][None] for i in range(2)]
    predicted = list(propagate(frames, values, temperature=0.01))[1][0]
    interior = (slice(2, h - 2), slice(3, w - 3))
    error_y = (predicted[0] - (ys - 1))[interior].abs()
    error_x = (predicted[1] - (xs - 2))[interior].abs()
    assert error_y.median() < 0.25 and error_x.median() < 0.25
    assert ((error_y < 0.5) & (error_x < 0.5)).float().mean() > 0.8
    shifted_mask = shift_frame(mask[None], 1, 2)[0] > 0.5
    got = predicted[2] > 0.5
    iou = (got & shifted_mask).sum() / (got | shifted_mask).sum()
    assert iou > 0.8


def test_streams_lazily():
    """Frame t's prediction is yielded before frame t + 1 is read: memory never depends on clip length."""
    feats = random_features(4)
    read = []

    def source():
        for i, f in enumerate(feats):
            read.append(i)
            yield f

    stream = propagate(source(), torch.rand(2, 1, 13, 21), radius=3)
    for t in range(4):
        next(stream)
        assert read == list(range(t + 1))


def test_latents_with_many_channels_and_batch_independence():
    feats = random_features(4, b=2)
    latents = torch.randn(2, 16, 13, 21)
    both = list(propagate(feats, latents, radius=4))
    single = list(propagate([f[1:] for f in feats], latents[1:], radius=4))
    for a, b in zip(both, single, strict=True):
        assert_tensors_close(a[1:], b, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "`top_k` must be >= 1"),
        ({"radius": -1}, "`radius` must be > 0"),
        ({"temperature": 0}, "`temperature` must be > 0"),
        ({"num_context": -2}, "`num_context` must be >= 0"),
        ({"implementation": "fast"}, "`implementation` must be"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PropagationConfig(**kwargs)


def test_bad_inputs():
    feats = random_features(3)
    with pytest.raises(ValueError, match="`first_values` must have shape"):
        next(propagate(feats, torch.rand(2, 3, 10, 21)))
    with pytest.raises(ValueError, match="`features` is empty"):
        next(propagate([], torch.rand(2, 3, 13, 21)))
    stream = propagate(feats[:1] + random_features(1, h=7), torch.rand(2, 3, 13, 21))
    next(stream)
    with pytest.raises(ValueError, match="Features of frame 1 have shape"):
        next(stream)
