"""A Ray sweep that could never run is refused at once with one line, before Ray is asked
to join an address where nothing listens (it retries for minutes) or to schedule a run size
the cluster does not have (it waits forever)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from vlprompt.errors import ExecutorError
from vlprompt.executors import RayOptions, _check_address, _check_resources


def _cluster(**resources):
    return SimpleNamespace(cluster_resources=lambda: resources)


@pytest.mark.parametrize("gpus", [1, 0.25])
def test_gpus_the_cluster_lacks_are_refused(gpus):
    with pytest.raises(ExecutorError, match=rf"--gpus-per-run {gpus:g}: the Ray cluster has 0 GPU"):
        _check_resources(_cluster(CPU=2.0), RayOptions(gpus_per_run=gpus))


def test_more_cpus_per_run_than_the_cluster_has_are_refused():
    with pytest.raises(ExecutorError, match="--cpus-per-run 4: the Ray cluster has 2 CPU"):
        _check_resources(_cluster(CPU=2.0), RayOptions(cpus_per_run=4))


@pytest.mark.parametrize(("cpus", "gpus"), [(2, 0.5), (2, 1), (0.5, 0)])
def test_a_run_size_the_cluster_has_passes(cpus, gpus):
    """Up to the cluster's whole CPU and GPU count (the bound itself included) is accepted."""
    cluster = _cluster(CPU=2.0, GPU=1.0)
    assert _check_resources(cluster, RayOptions(cpus_per_run=cpus, gpus_per_run=gpus)) is None


def test_an_address_where_nothing_listens_is_refused_quickly():
    started = time.perf_counter()
    with pytest.raises(ExecutorError, match="127.0.0.1:1: nothing answers there"):
        _check_address("127.0.0.1:1")
    assert time.perf_counter() - started < 10


def test_an_address_without_a_port_says_what_is_expected():
    with pytest.raises(ExecutorError, match="expected auto or HOST:PORT"):
        _check_address("head-node")
