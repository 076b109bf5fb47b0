"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module of tiny-volume tests (intra-op threads only add hand-off
    cost there on a loaded 2-core machine); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
