"""Test tiers: the default tier runs everything not marked ``slow``; ``WALKREG_RUN_SLOW=1`` runs the slow tier too."""

import os

import pytest
import torch


os.environ.setdefault("WALKREG_NO_PROGRESS", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def fresh_accelerate_state():
    """Each training run builds its own Accelerator; one thread avoids oversubscribing the shared CPU."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    torch.set_num_threads(threads)


def run_slow() -> bool:
    value = os.environ.get("WALKREG_RUN_SLOW", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"`WALKREG_RUN_SLOW` must be 0 or 1, but is {value!r}.")
    return value == "1"


def pytest_collection_modifyitems(config, items):
    if run_slow():
        return
    skip = pytest.mark.skip(reason="slow tier: set WALKREG_RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
