"""Shared pytest fixtures: the repository root, the shared folder and its real fixture sequences."""
from pathlib import Path

import pytest

from dst.core import fixtures_dir, repo_root


@pytest.fixture(scope="session")
def root() -> Path:
    return repo_root()


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """The real sequences in ../shared/fixtures; tests that need them skip when the folder is absent."""
    f = fixtures_dir()
    if f is None:
        pytest.skip("../shared/fixtures is absent (a clone without the shared folder beside it)")
    return f


def pytest_collection_modifyitems(session, config, items):
    "The tiny pipeline's file first: under `pytest -n 2 --dist loadfile` one worker starts the longest file at once."
    items.sort(key=lambda it: it.nodeid.split("::")[0] != "tests/test_pipeline.py")   # a stable sort: the rest keep their order
