"""Where a sweep's runs execute: one after another in this process (`local`), or as Ray tasks
spread over the cores and GPUs of one machine or a cluster (`ray`).

The sweep's driver (`vlprompt.protocols.run_bench`) plans the runs, hands each one as a `Job` to
an executor, and is the only writer of the sweep's `results.jsonl`, summary and plots: an
executor gives back each job's records as a `JobOutcome`, in the order the jobs finish.

Under Ray each job is one task with `cpus_per_run` CPUs and `gpus_per_run` GPUs (fractional
GPUs pack several small runs on one device). A task whose worker dies (killed process, lost
node) is retried up to `max_retries` times by Ray, and the retry resumes the run from its last
checkpoint (run folders must be on a file system every worker sees). An error the run itself
raises (bad data, a diverged loss) is not retried: it comes back as that job's error, once,
and the other jobs go on.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlprompt.errors import ExecutorError

EXECUTORS = ("local", "ray")
ADDRESS_TIMEOUT_S = 5.0  # how long an address may take to answer before Ray joins it
RAY_INSTALL_HINT = "pip install 'vlprompt[ray]' (or: pip install ray)"


@dataclass(frozen=True)
class Job:
    """One run of a sweep and the evaluations it still lacks."""

    spec: Any  # vlprompt.protocols.RunSpec
    evaluations: tuple[Any, ...]  # vlprompt.protocols.Evaluation, those not yet recorded
    run_dir: Path
    train_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobOutcome:
    """What a job gave back: the sweep's records of its evaluations, or its error."""

    job: Job
    records: list[dict[str, Any]]
    error: str | None = None
    wall_s: float = 0.0


Work = Callable[[Job], list[dict[str, Any]]]


def run_locally(jobs: Sequence[Job], work: Work, keep_going: bool) -> Iterator[JobOutcome]:
    """Each job in turn, in this process. An error stops the sweep unless `keep_going`."""
    for job in jobs:
        started = time.perf_counter()
        try:
            records = work(job)
        except Exception as exc:
            if not keep_going:
                raise
            yield JobOutcome(job, [], f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
            continue
        yield JobOutcome(job, records, None, time.perf_counter() - started)


@dataclass
class RayOptions:
    """How a sweep runs on Ray."""

    address: str | None = None  # None: start a local Ray instance; "auto" or HOST:PORT: join
    cpus_per_run: float = 1.0  # CPUs reserved for each run (also its torch threads)
    gpus_per_run: float = 0.0  # GPUs per run; fractional packs runs on a GPU (0.25: four)
    max_retries: int = 2  # retries of a run whose worker died; each resumes its checkpoint
    verbose: bool = False  # show the workers' output (per-epoch lines) in the driver

    def __post_init__(self) -> None:
        if not (isinstance(self.cpus_per_run, (int, float)) and self.cpus_per_run > 0):
            raise ExecutorError(f"cpus_per_run must be > 0, got {self.cpus_per_run!r}")
        if not (isinstance(self.gpus_per_run, (int, float)) and self.gpus_per_run >= 0):
            raise ExecutorError(f"gpus_per_run must be >= 0, got {self.gpus_per_run!r}")
        if self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run):
            raise ExecutorError(
                f"gpus_per_run above 1 must be a whole number (Ray's rule), got {self.gpus_per_run}"
            )
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or (self.max_retries < 0)
        ):
            raise ExecutorError(
                f"max_retries must be a whole number >= 0, got {self.max_retries!r}"
            )


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}"
        ) from None
    return ray


def _check_address(address: str) -> None:
    """A HOST:PORT address must answer before Ray is asked to join it: Ray itself retries for
    minutes against an address where nothing listens."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(
            f"--ray-address {address!r}: expected auto or HOST:PORT (e.g. 10.0.0.5:6379, the "
            "address `ray start --head` prints)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ExecutorError(
            f"--ray-address {address}: nothing answers there ({reason}); start the cluster "
            "with `ray start --head` on that machine, or leave out --ray-address to start a "
            "local Ray"
        ) from None


def _check_resources(ray: Any, options: RayOptions) -> None:
    """Refuse a run size the cluster can never schedule (Ray would wait for it forever)."""
    total = ray.cluster_resources()
    for what, flag, want in (("GPU", "--gpus-per-run", options.gpus_per_run),
                             ("CPU", "--cpus-per-run", options.cpus_per_run)):  # fmt: skip
        have = float(total.get(what, 0))
        if want > have:
            raise ExecutorError(
                f"{flag} {want:g}: the Ray cluster has {have:g} {what}(s) in all, so no run "
                f"could ever start; lower {flag}" + (" (0 runs on CPUs)" if what == "GPU" else "")
            )


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Ray started or joined as `options` say, its resources checked against one run's, and shut
    down at the end if it was started here. A Ray instance already started in this process
    (`ray.init(...)`) is used as it is."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if options.address not in (None, "auto"):
            _check_address(options.address)
        try:
            ray.init(
                address=options.address,
                include_dashboard=False,
                log_to_driver=options.verbose,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "running on this machine" if options.address == "auto" else "reachable"
            raise ExecutorError(
                f"--ray-address {options.address}: no Ray cluster is {where} "
                f"({_first_line(exc)}); start one with `ray start --head`, or leave out "
                "--ray-address to start a local Ray"
            ) from None
    try:
        _check_resources(ray, options)
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def run_on_ray(jobs: Sequence[Job], options: RayOptions, work: Work) -> Iterator[JobOutcome]:
    """Every job as a Ray task running `work(job)` (a module-level function, which Ray sends
    to its workers by reference), outcomes in the order they finish, in a `ray_session`.
    Ctrl-C cancels the jobs not finished."""
    with ray_session(options) as ray:
        task = ray.remote(_ray_task).options(
            num_cpus=options.cpus_per_run,
            num_gpus=options.gpus_per_run,
            max_retries=options.max_retries,
            retry_exceptions=False,
        )
        threads = max(1, int(options.cpus_per_run))
        pending = {task.remote(job, work, threads, options.verbose): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayError as exc:  # the worker died more often than allowed
                    reason = " ".join(str(exc).split())[:500]
                    yield JobOutcome(job, [], f"{type(exc).__name__}: {reason}")
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def _ray_task(job: Job, work: Work, threads: int, verbose: bool) -> JobOutcome:
    """A job in a Ray worker. Its own errors come back as the outcome's error (no retry); only
    a dying worker makes Ray retry it."""
    import torch

    torch.set_num_threads(threads)
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    try:
        records = work(job)
    except Exception as exc:  # noqa: BLE001  (reported by the driver, with the run's key)
        return JobOutcome(job, [], f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    return JobOutcome(job, records, None, time.perf_counter() - started)
