"""Shared fixtures: small synthetic focal stacks written in the on-disk dataset format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from deepaf_focus.synthetic import make_focal_stack_dataset


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread, and CI machines are often oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def focal_dataset(tmp_path_factory) -> Path:
    return make_focal_stack_dataset(tmp_path_factory.mktemp("ds") / "train", glass_stacks=1)


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory) -> Path:
    return make_focal_stack_dataset(
        tmp_path_factory.mktemp("ds") / "bigtrain",
        n_stacks=12,
        zs_um=tuple(np.arange(-4, 4.01, 0.5)),
        size=40,
        seed=1,
    )
