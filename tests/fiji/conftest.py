"""Fixtures of the Java door's tests: one headless ImageJ 1.53t per test process (a JVM starts once), and a
crop of the bundled sample with its experts' masks."""

from __future__ import annotations

import pytest

from fiji_consensus import datasets, fiji

from ._common import CROP


@pytest.fixture(scope="session")
def ij(ij_jar):
    return fiji.connect(ij_jar=ij_jar, headless=True)


@pytest.fixture(scope="module")
def sample_crop():
    s = datasets.load_sample()
    i, ys, xs = CROP
    return s.experts, s.image(i)[ys, xs], s.masks(i)[:, ys, xs]
