"""Shared fixtures: small generated signature sets and the optional real data folder."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sigest.datasets import make_signatures

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sigcomp2011-dutch"


def pytest_configure(config):
    """One torch thread per xdist worker: two workers each running a thread per core on a 2-core machine
    oversubscribe it (the suite took 216-229 s so, 44 s with OMP_NUM_THREADS=1)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_signatures():
    """6 writers x (5 genuine + 3 forged) procedural signatures, 60x120 pixels."""
    return make_signatures(n_writers=6, n_genuine=5, n_forged=3, image_size=(60, 120), random_state=0)


@pytest.fixture
def ink_page():
    """A 60x120 page with a dark stroke: the smallest image that has ink."""
    page = np.full((60, 120), 245, dtype=np.uint8)
    page[25:32, 10:110] = 30
    page[10:50, 50:55] = 40
    return page


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


_SCAN_NUMBER = iter(range(10**9))


def write_scan(path, page):
    """Write ``page`` with one corner pixel changed, so that no two scans are byte-identical copies."""
    page = page.copy()
    number = next(_SCAN_NUMBER)
    page[0, 0], page[0, 1] = number % 256, number // 256 % 256
    return write_png(path, page)


@pytest.fixture(scope="session")
def real_data():
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder {REAL_DATA} is absent")
    return REAL_DATA
