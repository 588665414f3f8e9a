import pytest
import torch
import torch.nn.functional as F
from reference_crw import reference_walk_loss
from testing_utils import assert_tensors_close

from walkreg import local_transitions, transition_matrix, walk_back_loss
from walkreg.walks import compose, local_transitions_both_ways, round_trip_confidence


def random_nodes(b=2, c=32, t=5, n=49, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, c, t, n, generator=g), dim=1)


def grid_distances(h, w):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    return torch.cdist(coords, coords)


@pytest.mark.parametrize("top_k", [None, 5])
def test_transition_rows_are_distributions(top_k):
    nodes = random_nodes()
    p = transition_matrix(nodes[:, :, 0], nodes[:, :, 1], temperature=0.07, top_k=top_k)
    assert (p >= 0).all()
    assert_tensors_close(p.sum(-1), torch.ones(2, 49))
    assert ((p > 0).sum(-1) == (top_k or 49)).all()


def test_small_temperature_becomes_argmax():
    nodes = random_nodes()
    p = transition_matrix(nodes[:, :, 0], nodes[:, :, 1], temperature=1e-4)
    aff = torch.einsum("bcn,bcm->bnm", nodes[:, :, 0], nodes[:, :, 1])
    assert torch.equal(p.argmax(-1), aff.argmax(-1))
    assert (p.max(-1).values > 0.99).float().mean() > 0.9  # rows concentrate on their argmax


@pytest.mark.parametrize(
    ("h", "w", "radius", "top_k"), [(9, 14, 3, None), (13, 21, 4.5, 6), (20, 20, 12, 10), (5, 7, 30, None)]
)
def test_local_transitions_equal_masked_dense(h, w, radius, top_k):
    g = torch.Generator().manual_seed(1)
    q, k = (F.normalize(torch.randn(2, 16, h, w, generator=g), dim=1) for _ in range(2))
    sparse = local_transitions(q, k, temperature=0.1, radius=radius, top_k=top_k)
    aff = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2))
    aff = aff.masked_fill(grid_distances(h, w) >= radius, float("-inf"))
    if top_k:
        kth = aff.topk(top_k, dim=-1).values[..., -1:]
        aff = aff.masked_fill(aff < kth, float("-inf"))
    expected = F.softmax(aff / 0.1, dim=-1)
    dense = sparse.to_dense()
    assert_tensors_close(dense, expected, atol=1e-6)
    assert_tensors_close(dense.sum(-1), torch.ones(2, h * w))
    values = torch.randn(2, 3, h * w, generator=g)
    assert_tensors_close(sparse.apply(values), torch.einsum("bnm,blm->bln", expected, values), atol=1e-5)


@pytest.mark.parametrize(("h", "w", "radius", "top_k"), [(9, 14, 3, None), (13, 21, 4.5, 6), (17, 30, 6, 8)])
def test_both_ways_equal_two_steps(h, w, radius, top_k):
    g = torch.Generator().manual_seed(2)
    a, b = (F.normalize(torch.randn(2, 16, h, w, generator=g), dim=1) for _ in range(2))
    there, back = local_transitions_both_ways(a, b, 0.1, radius, top_k)
    assert_tensors_close(there.to_dense(), local_transitions(a, b, 0.1, radius, top_k).to_dense(), atol=1e-6)
    assert_tensors_close(back.to_dense(), local_transitions(b, a, 0.1, radius, top_k).to_dense(), atol=1e-6)


@pytest.mark.parametrize("t", [3, 4, 6])
def test_walk_back_loss_matches_reference(t):
    nodes = random_nodes(t=t, seed=t)
    out = walk_back_loss(nodes, temperature=0.05)
    loss, losses, accs = reference_walk_loss(nodes.clone(), temperature=0.05)
    assert out.cycle_losses.shape == (t - 2,)
    assert abs(out.loss.item() - loss.item()) < 1e-5
    assert_tensors_close(out.cycle_losses, torch.stack(losses), atol=1e-5)
    assert_tensors_close(out.cycle_accuracies, torch.stack(accs))


def test_walk_back_loss_with_edge_dropout_matches_reference_draw_for_draw():
    nodes = random_nodes(t=4, seed=3)
    torch.manual_seed(123)
    out = walk_back_loss(nodes, temperature=0.05, edge_dropout=0.1)
    torch.manual_seed(123)
    loss, losses, _ = reference_walk_loss(nodes.clone(), temperature=0.05, edge_dropout=0.1)
    assert abs(out.loss.item() - loss.item()) < 1e-5
    assert_tensors_close(out.cycle_losses, torch.stack(losses), atol=1e-5)
    torch.manual_seed(124)  # a different draw gives a different loss: dropout really acts
    assert abs(walk_back_loss(nodes, temperature=0.05, edge_dropout=0.1).loss.item() - loss.item()) > 1e-4


def test_backward_edges_inherit_forward_drops():
    """About 1 - 0.9^2 = 19% of backward edges are dropped when 10% of forward edges are (reference notes §4)."""
    nodes = random_nodes(b=4, t=3, n=200, seed=5)
    out = walk_back_loss(nodes, temperature=10.0, edge_dropout=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    g = torch.Generator().manual_seed(0)
    from walkreg.walks import drop_edges

    aff = torch.zeros(4, 200, 200)
    forward = drop_edges(aff, 0.1, g)
    backward = drop_edges(forward, 0.1, g).transpose(-1, -2)
    assert abs((forward < -1).float().mean().item() - 0.10) < 0.01
    assert abs((backward < -1).float().mean().item() - 0.19) < 0.01


def test_identical_frames_walk_home():
    nodes = random_nodes(t=1, n=49).expand(-1, -1, 5, -1).contiguous()
    out = walk_back_loss(nodes, temperature=0.05)
    assert torch.equal(out.cycle_accuracies, torch.ones(3))
    assert out.loss.item() < 0.05


def test_random_nodes_are_near_chance():
    out = walk_back_loss(random_nodes(c=128, t=4, n=49), temperature=1.0)
    assert abs(out.loss.item() - torch.log(torch.tensor(49.0)).item()) < 0.1


def test_loss_is_differentiable():
    nodes = random_nodes(t=4).requires_grad_()
    walk_back_loss(F.normalize(nodes, dim=1), edge_dropout=0.1).loss.backward()
    assert nodes.grad is not None and torch.isfinite(nodes.grad).all() and nodes.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": torch.zeros(2, 8, 2, 4)}, "at least 3 frames"),
        ({"nodes": torch.zeros(8, 3, 4)}, "shape \\(B, C, T, N\\)"),
        ({"nodes": torch.zeros(1, 8, 3, 4), "temperature": 0.0}, "`temperature` must be > 0"),
        ({"nodes": torch.zeros(1, 8, 3, 4), "edge_dropout": 1.0}, "`edge_dropout` must be in \\[0, 1\\)"),
    ],
)
def test_walk_back_loss_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        walk_back_loss(**kwargs)


def test_local_transitions_rejects_mismatched_grids():
    with pytest.raises(ValueError, match="`query` and `key`"):
        local_transitions(torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 5, 6))
    with pytest.raises(ValueError, match="`radius` must be > 0"):
        local_transitions(torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 5, 5), radius=0)


def test_compose_equals_the_dense_product_exactly_or_truncated():
    g = torch.Generator().manual_seed(0)
    a, b, c = (F.normalize(torch.randn(1, 6, 5, 5, generator=g), dim=1) for _ in range(3))
    first, second = (
        local_transitions(a, b, 0.1, radius=2.5, top_k=6),
        local_transitions(b, c, 0.1, radius=2.5, top_k=6),
    )
    product = first.to_dense() @ second.to_dense()
    every_path = compose(first, second)
    assert every_path.indices.shape[-1] == 36
    torch.testing.assert_close(every_path.to_dense(), product)
    torch.testing.assert_close(compose(first, second, top_k=36).to_dense(), product)
    truncated = compose(first, second, top_k=4)
    assert truncated.indices.shape[-1] == 4
    torch.testing.assert_close(truncated.weights.sum(-1), torch.ones(1, 25))
    top = product.topk(4, dim=-1).values  # the kept entries are the strongest of the exact product
    torch.testing.assert_close(truncated.weights, top / top.sum(-1, keepdim=True))


def test_apply_carries_values_like_the_dense_matrix():
    g = torch.Generator().manual_seed(1)
    a, b = (F.normalize(torch.randn(2, 6, 4, 7, generator=g), dim=1) for _ in range(2))
    step = local_transitions(a, b, 0.1, radius=3, top_k=5)
    values = torch.randn(2, 3, 28, generator=g)
    torch.testing.assert_close(step.apply(values), (step.to_dense() @ values.transpose(1, 2)).transpose(1, 2))


def test_round_trip_confidence_is_one_on_a_static_video_and_lower_for_ambiguous_cells():
    g = torch.Generator().manual_seed(0)
    frame = F.normalize(torch.randn(1, 8, 6, 6, generator=g), dim=1)
    there = local_transitions(frame, frame, 0.05, radius=3, top_k=5)
    torch.testing.assert_close(round_trip_confidence(there, there, 6, home_radius=1.5, full_mass=0.5), torch.ones(36))
    flat = F.normalize(torch.ones(1, 8, 6, 6), dim=1)  # every cell looks the same: the walk wanders off
    uniform = local_transitions(flat, flat, 0.05, radius=3, top_k=5)
    assert round_trip_confidence(uniform, uniform, 6, home_radius=1.5, full_mass=1.0).mean() < 0.9
    with pytest.raises(ValueError, match="full_mass"):
        round_trip_confidence(there, there, 6, home_radius=1.5, full_mass=0)
