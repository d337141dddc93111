"""Shared across test files: the `slurm` marker, the marker guard, and one tiny local run of the
real DAG per session."""

import pytest

import e2e_helpers
from e2e_helpers import make_study_repo, snakemake

TINY = ("--configfile", ".test/params.yaml")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slurm: runs the tiny DAG on a real single-node SLURM cluster it installs and starts (root, apt)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # e2e_helpers.snakemake refuses to start Snakemake for a test without e2e/dag/slurm, so
    # `-m "not e2e and not dag and not slurm"` (the fast unit suite) really starts none
    e2e_helpers.RUNNING_TEST_MARKERS = {mark.name for mark in item.iter_markers()}


def pytest_runtest_teardown(item):
    e2e_helpers.RUNNING_TEST_MARKERS = None


@pytest.fixture
def one_torch_thread():
    """Small convolutions: one intra-op thread is faster, and immune to a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The tiny configuration run as `make study` runs it (`snakemake --cores 2` in a git + DVC
    checkout whose params.yaml is the tiny configuration), once per session; read-only for users:
    copy it (``shutil.copytree(tiny_study, dest, symlinks=True)``) to change anything."""
    workdir = make_study_repo(tmp_path_factory.mktemp("tiny_study"))
    snakemake(workdir)
    return workdir
