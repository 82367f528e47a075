"""The field's evaluation protocols as resumable sweeps over methods, data sets, shots and seeds.

`run_bench(protocol, methods, datasets, ...)` trains one run per (data set, shots, seed, method),
evaluates it as the protocol says, appends one line per evaluation to `<output_dir>/results.jsonl`
and rewrites the summary tables and plots (`vlprompt.report`) after every run, so a killed sweep
always leaves a summary of what finished.

Protocols (as the CoOp / CoCoOp / RPO evaluation scripts run them; docs/reproduce.md):

- ``base2new``: train on the base half of the classes, test on base and on new classes;
  H = 2BN/(B+N).
- ``fewshot``: train and test on all classes, for each number of shots (1, 2, 4, 8, 16).
- ``xd`` (cross-data set): train on a source (all classes), test on the source and on each target
  data set with the target's class names.
- ``dg`` (domain generalisation): train on a source, test on the source and on its registered
  variants (e.g. ImageNet -> ImageNet-V2/Sketch/A/R).

The sweep folder is claimed and locked as vlprompt.run_folder says: a folder of the user's is
refused untouched, and a second sweep into the same folder stops at once with the holder's PID.
Methods are named by their label (`vlprompt.methods.labels`): a registered method, or one with
the rules it runs with, e.g. ``coop,coop+dept`` sweeps CoOp with and without DePT's head in one
folder, so the summary compares them seed by seed. A run's label is that of its resolved config,
so ``coop`` with a preset that sets feature_rule=dept is recorded as ``coop+dept`` too.
Run folders are ``<output_dir>/<protocol>/<data set>/<label>/shots<k>_seed<s>/`` (xd and dg share
``transfer/...``: both test the same source-trained run, as in CoCoOp). Resuming: an
evaluation whose key is already in the sweep's `results.jsonl` is never repeated; a finished run
that lacks some evaluations is loaded and evaluated; an unfinished run is resumed by the engine
from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlprompt.errors import BenchError, VlpromptError
from vlprompt.executors import (
    EXECUTORS,
    Job,
    JobOutcome,
    RayOptions,
    import_ray,
    ray_session,
    run_locally,
    run_on_ray,
)
from vlprompt.io import read_jsonl
from vlprompt.run_folder import (
    RESULTS_FILE,
    append_result,
    claim_folder,
    folder_lock,
    has_config,
    holds_lock,
    refuse_links_below,
    write_file,
)

log = logging.getLogger(__name__)

PROTOCOLS = ("base2new", "fewshot", "xd", "dg")
DEFAULT_SHOTS: dict[str, tuple[int, ...]] = {
    "base2new": (16,),
    "fewshot": (1, 2, 4, 8, 16),
    "xd": (16,),
    "dg": (16,),
}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a trained run: which data set, which classes, which split."""

    dataset: str  # data set to test on (the run's own, or a target for xd / dg)
    subsample: str  # "all", "base" or "new" classes
    split: str = "test"


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep and the evaluations the protocol asks of it."""

    protocol: str
    method: str
    dataset: str  # the training (source) data set
    shots: int
    seed: int
    subsample: str  # training classes: "base" (base2new) or "all"
    evaluations: tuple[Evaluation, ...]
    # the registered method trained when `method` is a label with rules ("coop" of "coop+dept");
    # "" when `method` is the registered name itself
    base_method: str = ""

    @property
    def trained_method(self) -> str:
        """The registered method the run trains."""
        return self.base_method or self.method

    @property
    def key(self) -> str:
        """The run's identity within a sweep's results (protocol included)."""
        return f"{self.protocol}/{self.dataset}/{self.method}/shots{self.shots}_seed{self.seed}"

    @property
    def folder(self) -> str:
        """The run folder relative to the output folder. xd and dg train the same run (all
        classes of the source, e.g. ImageNet 16 shots), so they share it: `transfer/...`."""
        group = "transfer" if self.protocol in ("xd", "dg") else self.protocol
        return f"{group}/{self.dataset}/{self.method}/shots{self.shots}_seed{self.seed}"

    def eval_key(self, evaluation: Evaluation) -> str:
        e = evaluation
        return f"{self.key}|{e.dataset}:{e.subsample}:{e.split}"

    def run_dir(self, output_dir: str | Path) -> Path:
        return Path(output_dir) / self.folder


@dataclass
class Backend:
    """The functions a sweep calls; the real engine by default, fakes in tests.

    `train(method, dataset, *, output_dir, resume, echo, progress, ...) -> run`, `evaluate(run, dataset=...,
    subsample=..., split=...) -> dict`, `load_run(run_dir) -> run`, `is_finished(run_dir) -> bool`.
    `load_run(run_dir, device=...) -> run`, `is_finished(run_dir) -> bool`.
    Optional: `check(methods, datasets)` raises for unknown names before any training starts;
    `check_run(run_dir, method, dataset, train_kwargs)` raises when a run folder holds a run of
    another config than the sweep would train; `variants_of(source)` lists dg targets;
    `label_of(method, dataset, train_kwargs)` gives the label of the run those settings train
    (default: from the rules the settings name, `_label_of_settings`).
    """

    train: Callable[..., Any]
    evaluate: Callable[..., dict[str, Any]]
    load_run: Callable[..., Any]
    is_finished: Callable[[Path], bool]
    check: Callable[[Sequence[str], Sequence[str]], None] | None = None
    check_run: Callable[[Path, str, str, dict[str, Any]], None] | None = None
    variants_of: Callable[[str], list[str]] | None = None
    label_of: Callable[[str, str, dict[str, Any]], str] | None = None


def default_backend() -> Backend:
    """The real engine (imported lazily so that this module loads without it)."""
    from vlprompt import api, run_status

    return Backend(
        train=api.train,
        evaluate=api.evaluate,
        # a sweep's runs have the sweep's backbone (check_run compares their configs with it)
        load_run=functools.partial(api.load_run, allow_remote_weights=True),
        is_finished=run_status.is_run_finished,
        check=_check_names,
        check_run=_check_saved_config,
        variants_of=registered_variants,
        label_of=_label_of_config,
    )


def _check_names(methods: Sequence[str], datasets: Sequence[str]) -> None:
    from vlprompt.data import get_dataset_info
    from vlprompt.methods import get_method_class

    try:
        for name in methods:
            get_method_class(name)
        for name in datasets:
            get_dataset_info(name)
    except VlpromptError:
        raise
    except (KeyError, ValueError) as exc:
        raise BenchError(str(exc).strip("'\"")) from exc


def _refuse_closed_set_methods(methods: Sequence[str]) -> None:
    """base2new tests on new classes: a method that classifies only its fitted classes cannot
    be in it (a clear error before any work, not a crash after training)."""
    from vlprompt.errors import MethodError
    from vlprompt.methods import get_method_class

    for name in methods:
        try:
            cls = get_method_class(name)
        except MethodError:
            continue  # unknown names: the backend's check says so
        if not cls.classifies_new_classes:
            raise BenchError(
                f"method {name!r} classifies only the classes it was fitted on, so it has no "
                "new-class accuracy for the base2new protocol; run it with fewshot, xd or dg"
            )


def _check_saved_config(run_dir: Path, method: str, dataset: str, kwargs: dict[str, Any]) -> None:
    """Refuse to reuse a run folder trained with another config than this sweep asks for
    (otherwise a sweep re-run with new settings would silently report the old runs)."""
    from vlprompt.config import config_differences, read_run_config

    if not has_config(run_dir):
        return
    wanted = _resolved_config(method, dataset, kwargs)
    diffs = config_differences(read_run_config(run_dir), wanted)
    if diffs:
        raise BenchError(
            f"{run_dir} holds a run with another config than this sweep's ({'; '.join(diffs)}); "
            "use another output folder for the new settings, or delete that run folder and its "
            "lines in results.jsonl to train it again"
        )


def _resolved_config(method: str, dataset: str, kwargs: dict[str, Any]) -> Any:
    """The RunConfig a train call of `method` on `dataset` with `kwargs` would make."""
    from vlprompt import api
    from vlprompt.config import EngineSettings, split_train_kwargs

    named, engine, _, overrides = split_train_kwargs(kwargs)
    return api.resolve_config(
        method, dataset, engine=EngineSettings(**engine), overrides=overrides, **named
    )


def _label_of_config(method: str, dataset: str, kwargs: dict[str, Any]) -> str:
    """The label of the run's resolved method config (presets and overrides included)."""
    from vlprompt.methods.labels import method_label

    config = _resolved_config(method, dataset, kwargs).method_config
    return method_label(method, config.get("feature_rule", "none"), config.get("gradient_rule"))


def _label_of_settings(method: str, dataset: str, kwargs: dict[str, Any]) -> str:
    """The label of the rules `kwargs` name (a backend that resolves no configs)."""
    from vlprompt.methods.labels import method_label

    return method_label(method, kwargs.get("feature_rule", "none"), kwargs.get("gradient_rule"))


# the papers' column order of the ImageNet variants; other variants follow, sorted
_VARIANT_ORDER = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def registered_variants(source: str) -> list[str]:
    """Registered data sets whose `variant_of` is `source` (e.g. the ImageNet variants)."""
    from vlprompt.data import get_dataset_info, list_datasets

    names = [n for n in list_datasets() if get_dataset_info(n).variant_of == source]
    rank = {name: i for i, name in enumerate(_VARIANT_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


@dataclass
class BenchResult:
    """What a sweep did: run keys trained, skipped (already recorded) and failed."""

    output_dir: Path
    planned: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    summary: Any = None  # vlprompt.report.SummaryFiles, or None when report=False

    @property
    def ok(self) -> bool:
        return not self.failed


def _as_list(value: Any, what: str) -> list:
    if isinstance(value, (str, int)):
        value = [value]
    items = list(value)
    if not items:
        raise BenchError(f"no {what} given: name at least one")
    if len(set(items)) != len(items):
        raise BenchError(f"{what} {items} repeat a value; name each once")
    return items


def _as_ints(value: Any, what: str, minimum: int) -> list[int]:
    out = []
    for item in _as_list(value, what):
        is_int = isinstance(item, int) and not isinstance(item, bool)
        if not is_int and not (isinstance(item, str) and item.strip().isdigit()):
            raise BenchError(f"{what} must be whole numbers, got {item!r}")
        number = int(item)
        if number < minimum:
            raise BenchError(f"{what} must be >= {minimum}, got {number}")
        out.append(number)
    return out


def plan_bench(
    protocol: str,
    methods: Iterable[str] | str,
    datasets: Iterable[str] | str,
    *,
    seeds: Iterable[int] | int = (1, 2, 3),
    shots: Iterable[int] | int | None = None,
    targets: Iterable[str] | str | None = None,
    variants_of: Callable[[str], list[str]] | None = None,
) -> list[RunSpec]:
    """The runs of a sweep, in the order they run: data set, shots, seed, then method (so a
    half-done sweep already compares every method on the same seeds).

    `targets` are the test data sets of `xd` (required) and `dg` (default: the registered
    variants of each source, found with `variants_of`).
    """
    if protocol not in PROTOCOLS:
        raise BenchError(f"unknown protocol {protocol!r}; choices: {', '.join(PROTOCOLS)}")
    methods = _as_list(methods, "methods")
    datasets = _as_list(datasets, "datasets")
    seeds = _as_ints(seeds, "seeds", 0)
    shots_list = _as_ints(DEFAULT_SHOTS[protocol] if shots is None else shots, "shots", 1)
    target_list = None if targets is None else _as_list(targets, "targets")
    if target_list is not None and protocol in ("base2new", "fewshot"):
        raise BenchError(f"protocol {protocol!r} takes no targets (only xd and dg do)")

    specs = []
    for dataset in datasets:
        evaluations = _evaluations(protocol, dataset, target_list, variants_of)
        subsample = "base" if protocol == "base2new" else "all"
        for k in shots_list:
            for seed in seeds:
                for method in methods:
                    specs.append(
                        RunSpec(protocol, method, dataset, k, seed, subsample, evaluations)
                    )
    return specs


def _evaluations(
    protocol: str,
    dataset: str,
    targets: list[str] | None,
    variants_of: Callable[[str], list[str]] | None,
) -> tuple[Evaluation, ...]:
    if protocol == "base2new":
        return (Evaluation(dataset, "base"), Evaluation(dataset, "new"))
    if protocol == "fewshot":
        return (Evaluation(dataset, "all"),)
    if protocol == "xd":
        if not targets:
            raise BenchError(
                "protocol 'xd' needs target data sets (e.g. targets=['caltech101', 'oxford_pets'] "
                "or --targets); the sources are the data sets trained on"
            )
    elif targets is None:  # dg
        targets = variants_of(dataset) if variants_of is not None else []
        if not targets:
            raise BenchError(
                f"protocol 'dg': data set {dataset!r} has no registered variants "
                "(a data set whose `variant_of` names it); pass the targets explicitly"
            )
    others = [t for t in targets if t != dataset]
    return tuple(Evaluation(name, "all") for name in [dataset, *others])


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a sweep's results file (`vlprompt.io.read_jsonl`; BenchError for a
    broken line that is not the last)."""
    return read_jsonl(path, BenchError)


def _repair_tail(path: Path) -> None:
    """Drop a truncated last line so that the next append starts on a line of its own."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    if not text or text.endswith("\n"):
        return
    head, _, last = text.rpartition("\n")
    try:
        json.loads(last)
        write_file(path.parent, path.name, text + "\n")
    except json.JSONDecodeError:
        log.warning("%s: removing a truncated last line", path)
        write_file(path.parent, path.name, head + "\n" if head else "")


def _record(spec: RunSpec, evaluation: Evaluation, result: dict[str, Any]) -> dict[str, Any]:
    """The sweep's line for one evaluation: the engine's result plus the sweep's identity of it
    (the sweep's values win where both name a field, so the report can trust them)."""
    if "accuracy" not in result:
        raise BenchError(f"evaluation of {spec.key} returned no 'accuracy': {sorted(result)}")
    accuracy = float(result["accuracy"])
    if not math.isfinite(accuracy):
        raise BenchError(f"evaluation of {spec.key} returned accuracy {accuracy}")
    record = dict(result)
    if spec.trained_method != spec.method:
        record["base_method"] = spec.trained_method
    record.update(
        protocol=spec.protocol,
        method=spec.method,
        source=spec.dataset,
        train_subsample=spec.subsample,
        dataset=evaluation.dataset,
        subsample=evaluation.subsample,
        split=evaluation.split,
        shots=spec.shots,
        seed=spec.seed,
        accuracy=accuracy,
        run=spec.folder,
        key=spec.eval_key(evaluation),
    )
    return record


def _train_or_load(
    spec: RunSpec, run_dir: Path, backend: Backend, train_kwargs: dict[str, Any]
) -> Any:
    if backend.is_finished(run_dir):
        log.debug("%s: finished earlier, loading it", spec.key)
        load_kwargs = {k: train_kwargs[k] for k in ("trust_torchscript",) if k in train_kwargs}
        return backend.load_run(run_dir, device=train_kwargs.get("device", "cpu"), **load_kwargs)
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    log.debug("%s: %s", spec.key, "resuming" if resume else "training")
    return backend.train(
        spec.trained_method,
        spec.dataset,
        shots=spec.shots,
        seed=spec.seed,
        subsample=spec.subsample,
        output_dir=run_dir,
        resume=resume,
        **train_kwargs,
    )


def run_job(job: Job, backend: Backend) -> list[dict[str, Any]]:
    """Train (or resume, or load) one run and evaluate what the sweep lacks; return the sweep's
    records. Runs in the driver (local executor) or in a worker (Ray); writes only the run's
    own folder."""
    spec = job.spec
    run = _train_or_load(spec, job.run_dir, backend, job.train_kwargs)
    records = []
    for evaluation in job.evaluations:
        result = backend.evaluate(
            run,
            dataset=None if evaluation.dataset == spec.dataset else evaluation.dataset,
            subsample=evaluation.subsample,
            split=evaluation.split,
        )
        records.append(_record(spec, evaluation, result))
    if job.train_kwargs.get("tensorboard"):  # training logged its own test evaluation
        from vlprompt.tracking import log_evaluations

        own = (spec.dataset, spec.subsample, "test")
        log_evaluations(
            job.run_dir, [r for r in records if (r["dataset"], r["subsample"], r["split"]) != own]
        )
    return records


def run_engine_job(job: Job) -> list[dict[str, Any]]:
    """`run_job` on the real engine: what a Ray worker runs for each job."""
    return run_job(job, default_backend())


def run_bench(
    protocol: str,
    methods: Iterable[str] | str,
    datasets: Iterable[str] | str,
    *,
    seeds: Iterable[int] | int = (1, 2, 3),
    shots: Iterable[int] | int | None = None,
    targets: Iterable[str] | str | None = None,
    root: str | Path | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    output_dir: str | Path,
    config_overrides: dict[str, Any] | None = None,
    method_overrides: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
    keep_going: bool = False,
    report: bool = True,
    plots: bool = True,
    backend: Backend | None = None,
    train_kwargs: dict[str, Any] | None = None,
    executor: str = "local",
    ray: RayOptions | None = None,
    progress: bool | None = None,
    verbose: bool = False,
    preset: str | Iterable[str] | None = None,
) -> BenchResult:
    """Run (or resume) a protocol sweep; return what it did. See the module docstring.

    `backbone`/`pretrained`/`root` left as None take the engine's defaults. `config_overrides`
    apply to every method, `method_overrides[name]` to one method only (e.g. ``{"rpo":
    {"K": 4}}``). `keep_going`: a run that raises is recorded in the result's `failed`
    and the sweep goes on (KeyboardInterrupt always stops it). `report`/`plots`: rewrite the
    summary tables / plots after every run. `train_kwargs` pass more
    keyword arguments to the engine's train as is. `preset`: a paper preset's name, or several
    (one per method), each applied to its own method's runs with the official values for each
    run's (data set, shots) (vlprompt.presets); `config_overrides` and `method_overrides` win.

    `executor="ray"` runs each run as a Ray task (vlprompt.executors; `ray` sets the address,
    the resources per run and the retries); a failing run then never stops the others. The
    view is the same for both: a progress bar over the runs (`progress`, default: when stderr
    is a terminal), one line per finished run, and the runs' per-epoch lines only in each
    run's `log.txt` unless `verbose`.
    """
    from vlprompt.console import ensure_visible_logging

    ensure_visible_logging()
    if executor not in EXECUTORS:
        raise BenchError(f"unknown executor {executor!r}; choices: {', '.join(EXECUTORS)}")
    if executor == "ray":
        import_ray()  # says how to install it, before anything is planned or written
        if backend is not None:
            raise BenchError("executor 'ray' runs the real engine in its workers; no backend")
        ray = ray or RayOptions(verbose=verbose)
    backend = backend or default_backend()
    specs = plan_bench(
        protocol,
        methods,
        datasets,
        seeds=seeds,
        shots=shots,
        targets=targets,
        variants_of=backend.variants_of,
    )
    bases = _label_bases(sorted({s.method for s in specs}))
    if protocol == "base2new":
        _refuse_closed_set_methods(sorted(set(bases.values())))
    if backend.check is not None:
        evaluated = {e.dataset for s in specs for e in s.evaluations}
        backend.check(sorted(set(bases.values())), sorted(evaluated))
    from vlprompt.presets import presets_for_methods, resolve_preset

    by_label = presets_for_methods(preset, sorted(bases))
    for spec in specs:  # a preset without values for a run's shots fails before any work
        resolve_preset(by_label.get(spec.method), bases[spec.method], spec.dataset, spec.shots)
    _say_mini_preset(specs, by_label, backbone)
    common: dict[str, Any] = {"device": device, **(train_kwargs or {})}
    common.setdefault("echo", verbose)  # per-epoch lines: the run's log.txt, live with -v
    common.setdefault("progress", False)  # no per-epoch bars under the sweep's bar
    for name, value in (("root", root), ("backbone", backbone), ("pretrained", pretrained)):
        if value is not None:
            common[name] = value

    def kwargs_of(spec: RunSpec) -> dict[str, Any]:
        from vlprompt.methods.labels import parse_label

        base = bases[spec.method]
        own = (method_overrides or {}).get(spec.method, {}) if spec.method != base else {}
        return {
            **common,
            **({"preset": by_label[spec.method]} if spec.method in by_label else {}),
            **(config_overrides or {}),
            **(method_overrides or {}).get(base, {}),
            **own,
            **parse_label(spec.method)[1],
        }

    planned = _labelled(specs, bases, kwargs_of, backend.label_of or _label_of_settings)
    specs = [spec for spec, _ in planned]
    # Ray is started (or joined) and its resources checked before the sweep folder is touched
    session = ray_session(ray) if executor == "ray" else contextlib.nullcontext()
    with session:
        output_dir = claim_folder(output_dir, "sweep", what="sweep folder")
        with folder_lock(output_dir):  # one sweep per folder: it is the only writer of its results
            for spec in specs:  # a run folder reached through a link would write outside the sweep
                refuse_links_below(output_dir, spec.run_dir(output_dir))
            if backend.check_run is not None:  # before any work: a run folder of other settings
                for spec, kwargs in planned:
                    identity = dict(shots=spec.shots, seed=spec.seed, subsample=spec.subsample)
                    backend.check_run(spec.run_dir(output_dir), spec.trained_method, spec.dataset,
                                      {**kwargs, **identity})  # fmt: skip
            results_path = output_dir / RESULTS_FILE
            _repair_tail(results_path)
            recorded = {r.get("key") for r in read_records(results_path)}
            outcome = BenchResult(output_dir=output_dir, planned=[s.key for s in specs])
            jobs = []
            for spec, kwargs in planned:
                missing = tuple(e for e in spec.evaluations if spec.eval_key(e) not in recorded)
                if missing:
                    jobs.append(Job(spec, missing, spec.run_dir(output_dir), kwargs))
                else:
                    outcome.skipped.append(spec.key)
            if executor == "ray":
                outcomes = run_on_ray(jobs, ray, run_engine_job)
            else:
                outcomes = run_locally(jobs, lambda job: run_job(job, backend), keep_going)
            _collect(outcomes, outcome, len(specs), results_path, report, plots, progress)
    return outcome


def _label_bases(labels: Sequence[str]) -> dict[str, str]:
    """{label: its registered method} for a sweep's method names (BenchError for a bad one)."""
    from vlprompt.methods.labels import parse_label

    try:
        return {label: parse_label(label)[0] for label in labels}
    except VlpromptError as exc:
        raise BenchError(str(exc)) from None


def _labelled(
    specs: Sequence[RunSpec],
    bases: dict[str, str],
    kwargs_of: Callable[[RunSpec], dict[str, Any]],
    label_of: Callable[[str, str, dict[str, Any]], str],
) -> list[tuple[RunSpec, dict[str, Any]]]:
    """Each run named by the label of what it trains (`label_of` its settings), with its train
    keywords; BenchError when two method names of the sweep train the same runs."""
    from dataclasses import replace

    labels: dict[tuple[str, str, int], str] = {}  # a label depends on method, data set, shots
    planned, named = [], {}
    for spec in specs:
        kwargs = kwargs_of(spec)
        base = bases[spec.method]
        key = (spec.method, spec.dataset, spec.shots)
        if key not in labels:
            labels[key] = label_of(base, spec.dataset, {**kwargs, "shots": spec.shots})
        label = labels[key]
        run = replace(spec, method=label, base_method=base if base != label else "")
        if named.setdefault(run.key, spec.method) != spec.method:
            raise BenchError(
                f"methods {named[run.key]!r} and {spec.method!r} of the sweep train the same "
                f"runs ({label!r} with these settings); name each variant once"
            )
        planned.append((run, kwargs))
    return planned


def _say_mini_preset(specs: Sequence[RunSpec], by_method: dict[str, str],
                     backbone: str | None) -> None:  # fmt: skip
    """The sweep's first line, when its runs get the mini world's settings (the `mini` preset,
    the default with the tiny CLIP): which, and how to get the papers' recipes."""
    from vlprompt.api import _default_backbone, mini_preset_line
    from vlprompt.presets import MINI_PRESET, default_preset

    def preset_of(spec: RunSpec) -> str | None:
        named = by_method.get(spec.method)  # keyed by the sweep's method names (labels)
        return named or default_preset(_default_backbone(spec.dataset, backbone, None)[0])

    if any(preset_of(spec) == MINI_PRESET for spec in specs):
        log.info("%s", mini_preset_line())


def _collect(outcomes, result: BenchResult, n_runs: int, results_path: Path, report: bool,
             plots: bool, progress: bool | None) -> None:  # fmt: skip
    """The driver's side: append each finished run's records, say one line for it, keep the
    summary current, and show one progress bar over the sweep."""

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    output_dir = results_path.parent
    from vlprompt.console import interactive

    show = interactive() if progress is None else progress
    done = len(result.skipped)
    bar = tqdm(total=n_runs, initial=done, desc="sweep", unit="run", disable=not show,
               dynamic_ncols=True)  # fmt: skip
    with bar, logging_redirect_tqdm(loggers=[logging.getLogger("vlprompt")]):
        for item in outcomes:
            done += 1
            key = item.job.spec.key
            if item.error is not None:
                log.error("[%d/%d] %s failed: %s", done, n_runs, key, item.error)
                result.failed[key] = item.error
            else:
                for record in item.records:
                    _append_record(results_path, record)
                result.trained.append(key)
                log.info("[%d/%d] %s", done, n_runs, _run_line(key, item))
                if report:
                    result.summary = _write_summary(output_dir, plots)
            bar.update(1)
    if report and result.summary is None and results_path.is_file():
        result.summary = _write_summary(output_dir, plots)


def _run_line(key: str, item: JobOutcome) -> str:
    """The line "KEY: base 76.00 (zero-shot 74.67)  new 70.00  (12 s)": each evaluation, zero-shot
    beside the run's own (and a warning with the likely cause when below it)."""
    from vlprompt.zero_shot_check import note_of_run_dir

    def score(r: dict[str, Any]) -> str:
        name = r["subsample"] if r["dataset"] == item.job.spec.dataset else r["dataset"]
        note = note_of_run_dir(r, percent="")
        return f"{name} {r['accuracy']:.2f}{f' ({note})' if note else ''}"

    return f"{key}: {'  '.join(score(r) for r in item.records)}  ({item.wall_s:.0f} s)"


def _append_record(results_path: Path, record: dict[str, Any]) -> None:
    """The sweep's results are written by the process that holds the sweep folder's lock, and
    by no other (a Ray worker returns its records instead)."""
    if not holds_lock(results_path.parent):
        raise BenchError(
            f"{results_path} is written only by the sweep's driver, which holds the lock of "
            f"{results_path.parent}; this process does not"
        )
    append_result(results_path.parent, record)


def _write_summary(output_dir: Path, plots: bool) -> Any:
    from vlprompt.report import write_summary

    return write_summary(output_dir, plots=plots)
