"""bench/correspondence.py's scoring: known transitions give known errors, exact walks match dense products."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from walkreg.walks import SparseTransitions, local_transitions


BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("correspondence")
    finally:
        sys.path.remove(str(BENCH))


def one_hot(cells: torch.Tensor) -> SparseTransitions:
    """Batch-1 transitions sending cell ``i`` to ``cells[i]`` with probability 1."""
    return SparseTransitions(cells.view(1, -1, 1), torch.ones(1, cells.numel(), 1), cells.numel())


def test_a_walk_one_cell_right_scores_its_known_error(bench):
    flow = torch.tensor([8.0, 3.0]).view(2, 1, 1).expand(2, 40, 64).clone()  # one cell right, 3 pixels down
    visible = torch.ones(40, 64, dtype=torch.bool)
    visible[0, 0] = False  # hides cell 0
    cells = torch.arange(40)
    right = torch.where(cells % 8 < 7, cells + 1, cells)
    scores = bench.score_transitions(one_hot(right), flow, visible)
    assert scores["cells"] == 5 * 7 - 1  # the last column lands outside the frame; cell 0 is hidden
    assert scores["argmax"] == {"mean": 3.0, "median": 3.0, "within_8px": 100.0, "cell": 100.0}
    still = bench.score_transitions(one_hot(cells), flow, visible)["argmax"]
    assert still["mean"] == pytest.approx(8.544, abs=1e-3) and still["cell"] == 0.0 and still["within_8px"] == 0.0


def test_partial_blocks_are_not_scored(bench):
    truth = bench.cell_truth(torch.zeros(2, 20, 30), torch.ones(20, 30, dtype=torch.bool))
    assert truth.grid == (3, 4) and truth.scored.view(3, 4)[:2, :3].all() and truth.scored.sum() == 6


def test_exact_walks_match_the_dense_product_and_duplicates_merge(bench):
    torch.manual_seed(0)
    query = F.normalize(torch.randn(1, 8, 5, 8), dim=1)
    steps = [local_transitions(query, F.normalize(query + torch.randn_like(query), dim=1), 0.1, 3.0, 4) for _ in "abc"]
    argmax, soft = bench.walk_targets(steps, (5, 8))
    dense = steps[0].to_dense()[0] @ steps[1].to_dense()[0] @ steps[2].to_dense()[0]
    assert argmax.equal(dense.argmax(1))
    assert torch.allclose(soft, dense @ bench.cell_centres((5, 8)) / dense.sum(1, keepdim=True), atol=1e-3)
    merged = bench.merged_argmax(torch.tensor([[3, 5, 3, 7]]), torch.tensor([[0.2, 0.35, 0.2, 0.25]]))
    assert merged.tolist() == [3]


def test_flo_files_round_trip_and_a_covered_background_is_not_visible(bench, tmp_path):
    flow = np.random.default_rng(0).normal(size=(6, 5, 2)).astype(np.float32)
    path = tmp_path / "x.flo"
    path.write_bytes(np.float32(202021.25).tobytes() + np.int32([5, 6]).tobytes() + flow.tobytes())
    assert bench.read_flo(path).equal(torch.from_numpy(flow).permute(2, 0, 1))
    first = torch.zeros(3, 24, 24)
    first[:, 8:16, 4:12] = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))  # a textured square
    second = torch.zeros(3, 24, 24)
    second[:, 8:16, 8:16] = first[:, 8:16, 4:12]  # ... moved 4 pixels right over a still black background
    moving = torch.zeros(2, 24, 24)
    moving[0, 8:16, 4:12] = 4
    visible = bench.splat_visibility(first, second, moving)
    assert visible[8:16, 4:12].all() and not visible[8:16, 12:16].any() and visible[:8].all()
