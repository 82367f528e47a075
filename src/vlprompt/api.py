"""Train, evaluate and use prompt-learning runs from Python.

    import vlprompt
    run = vlprompt.train("rpo", "oxford_pets", root="~/data", shots=16, seed=1,
                         output_dir="runs/rpo_pets")
    print(vlprompt.evaluate(run, subsample="all")["accuracy"])
    run = vlprompt.load_run("runs/rpo_pets")
    run.predict(["cat.jpg"], topk=3)   # [[("abyssinian", 0.91), ...]]

A run folder holds (docs/architecture.md, "The run folder"; vlprompt.run_folder names and writes
every file): `config.json` (the resolved `RunConfig`), the learned prompts (`prompts.safetensors`
+ `method.json`), `results.jsonl` (one line per evaluation), `log.txt`, `checkpoints/` and
`status.json` (written last: the run finished).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from vlprompt._version import code_version
from vlprompt.config import (
    CROP_MIN_SCALE_DEFAULT,
    DEFAULT_BACKBONE,
    DEFAULT_PRETRAINED,
    RUNTIME_ENGINE_KEYS,
    EngineSettings,
    RunConfig,
    config_differences,
    method_runtime_settings,
    read_run_config,
    split_train_kwargs,
)
from vlprompt.console import ensure_visible_logging
from vlprompt.distributed import Dist, init_distributed, resolve_device
from vlprompt.engine import EpochStats, fit
from vlprompt.errors import DataError, RunError
from vlprompt.methods.saving import load_learned, read_method_info
from vlprompt.precision import effective_precision
from vlprompt.presets import MINI_PRESET
from vlprompt.run_folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_FILE,
    PROMPTS_FILE,
    append_log,
    append_result,
    claim_folder,
    clear_run,
    folder_lock,
    has_config,
    is_run_finished,
    not_writable,
    read_calibration,
    read_results,
    read_status,
    remove_stale_temps_of_run,
    require_ours,
    undo_unstarted_run,
    write_calibration,
    write_config,
    write_splits,
    write_status,
)
from vlprompt.run_folder import RUN_FILES as RUN_FILES
from vlprompt.seeding import seed_everything
from vlprompt.train_state import latest_checkpoint

log = logging.getLogger("vlprompt")
# decoded training images kept in memory across epochs (per data-loader process)
KEEP_DECODED_TRAIN_BYTES = 256 * 2**20
# predict decodes a larger image at a short side of this many times the model's input size
PREDICT_SIDE_FACTOR = 4


class EvaluationRecord(dict):
    """An evaluation's result record (a dict, as `results.jsonl` stores it); `reused` says that
    it was read back from the run's results, not recomputed."""

    def __init__(self, record: dict[str, Any], reused: bool = False) -> None:
        super().__init__(record)
        self.reused = reused


# ---- the run object ---------------------------------------------------------------------------
@dataclass
class Run:
    """A finished training run loaded from its folder: the method (on its frozen CLIP) and the
    config it was trained with."""

    run_dir: Path
    config: RunConfig
    method: Any  # a vlprompt.methods.PromptMethod
    status: dict[str, Any] = field(default_factory=dict)
    # calibration.json: temperature and conformal thresholds fitted on the validation split
    calibration: dict[str, Any] | None = None

    @property
    def temperature(self) -> float:
        """The temperature predicted probabilities use: the one fitted on the validation split
        (1.0 when the run has none, or when the fit hit its search bound: a validation split
        the model gets all right cannot pin it down)."""
        cal = self.calibration or {}
        if not cal or cal.get("temperature_at_bound"):
            return 1.0
        return float(cal["temperature"])

    @property
    def classnames(self) -> list[str]:
        return list(self.method.classnames)

    @property
    def clip(self) -> Any:
        return self.method.clip

    def results(self) -> list[dict[str, Any]]:
        """The evaluations recorded in the run's `results.jsonl`."""
        return read_results(self.run_dir, RunError)

    def evaluate(self, **kwargs: Any) -> dict[str, Any]:
        """`vlprompt.evaluate(self, **kwargs)`."""
        return evaluate(self, **kwargs)

    def export(self, output_dir: str | Path, format: str = "onnx", **kwargs: Any) -> Path:
        """`vlprompt.export.export_run(self, output_dir, format, **kwargs)`: the run as an ONNX or
        TorchScript classifier with its labels and preprocessing (docs/deploy.md)."""
        from vlprompt.export import export_run

        return export_run(self, output_dir, format, **kwargs)

    def predict(
        self, images: Sequence[Any], topk: int = 5, batch_size: int = 32
    ) -> list[list[tuple[str, float]]]:
        """Top-k (class name, probability) for each image (a path or a PIL image), in order.
        An unreadable image raises DataError naming the file. Images are decoded one batch at
        a time (see `iter_predictions`)."""
        return [preds for _, preds, _ in self.iter_predictions(images, topk, batch_size)]

    def prediction_sets(
        self, images: Sequence[Any], coverage: float = 0.9, score: str = "lac",
        batch_size: int = 32,
    ) -> list[list[tuple[str, float]]]:  # fmt: skip
        """For each image, the set of classes (most probable first, with probabilities) that
        holds the true class with probability `coverage` on images exchangeable with the
        validation split (split-conformal, `score` "lac" or "aps", calibrated when the run was
        trained; vlprompt.calibration says how loose a small validation split makes it)."""
        from vlprompt.calibration import named_sets, prediction_sets

        threshold = self._conformal_threshold(coverage, score)
        fitted = float(self.calibration["temperature"])  # the thresholds' own probabilities
        rows = [p for _, p, _ in self._iter_probabilities(images, batch_size, fitted)]
        if not rows:
            return []
        probs = torch.stack(rows).numpy()
        return named_sets(probs, prediction_sets(probs, threshold, score), self.classnames)

    def _conformal_threshold(self, coverage: float, score: str) -> Any:
        from vlprompt.calibration import Calibration

        if not self.calibration:
            raise RunError(
                f"{self.run_dir} has no calibration.json (trained with --no-calibrate, without "
                "validation images, or by an older vlprompt): prediction sets need one; train "
                "the run again"
            )
        calibration = Calibration.from_dict(self.calibration)
        for threshold in calibration.conformal:
            if threshold.score == score and abs(threshold.coverage - coverage) < 1e-9:
                return threshold
        known = sorted({f"{t.score} {t.coverage:g}" for t in calibration.conformal})
        raise RunError(
            f"coverage {coverage:g} with score {score!r} was not calibrated for this run "
            f"(calibrated: {', '.join(known)}); use one of those"
        )

    @torch.no_grad()
    def iter_predictions(
        self,
        images: Iterable[Any],
        topk: int = 5,
        batch_size: int = 32,
        *,
        skip_unreadable: bool = False,
    ) -> Iterator[tuple[Any, list[tuple[str, float]] | None, str | None]]:
        """`(image, top-k predictions, None)` for each image, in order, decoded and classified
        one batch at a time, so memory is bounded by the batch, not by the number of images.
        A file is opened only if it is a regular file and decoded at a bounded size
        (`open_image_bounded`: the short side at most PREDICT_SIDE_FACTOR times the model's
        input; smaller images are decoded exactly). With `skip_unreadable` an unreadable file
        yields `(image, None, reason)` at once instead of raising DataError."""
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        k = min(topk, len(self.classnames))
        yield from self._iter_outputs(images, k, batch_size, skip_unreadable)

    def _iter_outputs(self, images, k, batch_size, skip_unreadable, temperature=None):
        """Top-k predictions (or, k None, probability rows) per image, one batch at a time,
        the class side held for all batches."""
        from vlprompt.data import transform_for

        transform = transform_for(self.clip, train=False)
        bound = PREDICT_SIDE_FACTOR * self.clip.image_size
        self.method.eval()
        with self.method.holding_class_side():  # the class side once for all batches
            yield from self._predict_batches(images, transform, bound, k, batch_size,
                                             skip_unreadable, temperature)  # fmt: skip

    def _predict_batches(self, images, transform, bound, k, batch_size, skip_unreadable,
                         temperature=None):  # fmt: skip
        from PIL import Image

        from vlprompt.data import open_image_bounded, to_rgb
        from vlprompt.errors import DataError

        pending: list[tuple[Any, torch.Tensor]] = []
        for image in images:
            try:
                if isinstance(image, Image.Image):
                    pixels = to_rgb(image)
                else:
                    pixels = open_image_bounded(str(image), bound)
            except DataError as exc:
                if not skip_unreadable:
                    raise
                yield image, None, str(exc)
                continue
            pending.append((image, transform(pixels)))
            del pixels
            if len(pending) == batch_size:
                yield from self._batch_output(pending, k, temperature)
                pending = []
        if pending:
            yield from self._batch_output(pending, k, temperature)

    def _batch_output(self, batch: list[tuple[Any, torch.Tensor]], k: int | None, temperature):
        """Top-k predictions, or (k None) the whole probability rows."""
        if k is not None:
            yield from self._classify(batch, k)
        else:
            for image, probs in self._probabilities(batch, temperature):
                yield image, probs, None

    @torch.no_grad()
    def _classify(self, batch: list[tuple[Any, torch.Tensor]], k: int):
        for image, probs in self._probabilities(batch):
            values, indices = probs.topk(k)
            yield image, [(self.classnames[i], float(v)) for v, i in zip(values, indices)], None

    @torch.no_grad()
    def _probabilities(self, batch: list[tuple[Any, torch.Tensor]], temperature=None):
        """(image, class probabilities at `temperature`, default the run's) for a batch."""
        temperature = self.temperature if temperature is None else temperature
        logits = self.method(torch.stack([t for _, t in batch]).to(self.clip.device)).float()
        probs = (logits / temperature).softmax(dim=-1).cpu()
        yield from zip((image for image, _ in batch), probs)

    def _iter_probabilities(self, images: Iterable[Any], batch_size: int, temperature=None):
        """(image, probabilities, None) per image, decoded one batch at a time."""
        return self._iter_outputs(images, None, batch_size, False, temperature)


def _read_status(run_dir: Path) -> dict[str, Any]:
    return read_status(run_dir)


def load_run(
    run_dir: str | Path | Run,
    device: str = "cpu",
    *,
    trust_torchscript: bool = False,
    allow_remote_weights: bool = False,
    pretrained: str | Path | None = None,
) -> Run:
    """Load a finished run: its backbone (from the config's name + pretrained tag/path) and the
    learned prompts. A folder that is not a finished run raises RunError. Loading only reads.

    `run_dir` may also be a bundle written by `vlprompt pack` (vlprompt.pack): it is unpacked
    into a temporary folder; a run trained on a local weight file then needs `pretrained`, the
    path of that file here (checked by its sha256). `pretrained` also points a run folder at
    its weights when they moved.

    A run's config.json may come from someone else: a backbone it names as `hf-hub:org/repo` or
    `local-dir:/path` (open_clip downloads or reads those weights itself) loads only with
    `allow_remote_weights=True` (CLI: --allow-remote-weights); a local `pretrained` file is
    read with vlprompt's own checks (no pickle code, TorchScript only if trusted)."""
    if isinstance(run_dir, Run):
        return run_dir
    from vlprompt.backbone import load_clip

    run_dir = Path(run_dir)
    keep = None
    if run_dir.is_file():
        from vlprompt.pack import is_bundle, resolve_weights, unpack

        if not is_bundle(run_dir):
            raise RunError(f"{run_dir} is a file but not a vlprompt bundle (`vlprompt pack`)")
        keep = tempfile.TemporaryDirectory(prefix="vlprompt-bundle-")
        manifest = unpack(run_dir, keep.name)
        pretrained = resolve_weights(manifest, pretrained, run_dir)
        run_dir = Path(keep.name)
    config = read_run_config(run_dir)
    if pretrained is not None:
        config = replace(config, pretrained=str(Path(pretrained).expanduser()))
    elif config.pretrained and os.sep in config.pretrained and not Path(config.pretrained).exists():
        raise RunError(
            f"the weight file this run was trained on, {config.pretrained}, is not there any "
            "more; pass its new path with --pretrained PATH (load_run(..., pretrained=PATH))"
        )
    device = str(resolve_device(device, Dist()))  # CUDA asked for on a machine without: one line
    check_weights_source(config.backbone, run_dir, allow_remote_weights)
    if not is_run_finished(run_dir):
        ckpt = latest_checkpoint(run_dir) if (run_dir / CHECKPOINT_DIR).is_dir() else None
        where = f"its last checkpoint is {ckpt.name}" if ckpt else "it has no checkpoint yet"
        raise RunError(
            f"{run_dir} holds a run that has not finished training ({where}); continue it with "
            f"`vlprompt train --resume --output-dir {run_dir}`"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # a run on random weights gets the same random backbone
        clip = load_clip(
            config.backbone, config.pretrained, device=device, trust_torchscript=trust_torchscript
        )
    method = _load_method(run_dir, clip)
    method.eval()
    run = Run(run_dir, config, method, _read_status(run_dir), read_calibration(run_dir))
    run._bundle_dir = keep  # the unpacked bundle lives as long as the run
    return run


def check_weights_source(
    backbone: str, run_dir: Path, allowed: bool, *, training: bool = False
) -> None:
    """RunError when a run's config names a backbone with its own weights source and the caller
    did not allow it (a shared run folder must not make vlprompt download a repository).
    `training`: the advice for `train --resume`, which names a backbone with --backbone."""
    from vlprompt.backbone import external_source

    where = external_source(backbone)
    if where is None or allowed:
        return
    remedy = (
        f"name it yourself: --backbone {backbone} (backbone=...)"
        if training
        else "pass --allow-remote-weights (allow_remote_weights=True)"
    )
    raise RunError(
        f"{run_dir / CONFIG_FILE} names the backbone {backbone!r}, whose weights open_clip would "
        f"take from {where} without vlprompt's checks of weight files; a run folder does not "
        f"choose that on its own: if you trust this run, {remedy}"
    )


def _load_method(run_dir: Path, clip: Any) -> Any:
    """The saved method through its own class's `load` (Tip-Adapter's sizes its cache from the
    saved tensors first); an unknown method name gets `load_learned`'s clear error."""
    from vlprompt.methods import get_method_class

    try:
        cls = get_method_class(read_method_info(run_dir)["method"])
    except ValueError:
        return load_learned(run_dir, clip)
    return cls.load(run_dir, clip)


# ---- configuration ----------------------------------------------------------------------------
def _default_backbone(
    dataset: str, backbone: str | None, pretrained: str | Path | None
) -> tuple[str, str | Path | None]:
    """No backbone named: the papers' ViT-B/16, or the shipped tiny CLIP for a mini-world data
    set (ViT-B/16 would be a download that has never seen that world). The tiny CLIP with the
    default tag (`openai`, which it has no weights for) loads its shipped weights."""
    from vlprompt.mini.tiny_clip import MODEL_NAME, checkpoint_path

    if backbone is None:
        backbone = MODEL_NAME if dataset.startswith("mini_") else DEFAULT_BACKBONE
    if backbone == MODEL_NAME and pretrained == DEFAULT_PRETRAINED:
        pretrained = checkpoint_path()
    return backbone, pretrained


def resolve_config(
    method: str,
    dataset: str,
    *,
    root: str | Path | None = None,
    backbone: str | None = None,
    pretrained: str | Path | None = DEFAULT_PRETRAINED,
    shots: int = 16,
    seed: int = 1,
    subsample: str = "all",
    engine: EngineSettings | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
    split: str | None = None,
    classnames_file: str | Path | None = None,
    skip_bad_images: bool = False,
) -> RunConfig:
    """The full config of a run; unknown method/data-set names and settings fail here, before
    anything is loaded. The method config is the method's defaults, then `preset`'s values for
    (`dataset`, `shots`) (vlprompt.presets), then `overrides`: named settings win. No preset
    named: `mini` with the shipped tiny CLIP (vlprompt.presets.default_preset). A preset's engine
    values (the mini world's crop) replace the engine's defaults, never a value named in
    `engine` (vlprompt.config.EngineDefault)."""
    from vlprompt.data import get_dataset_info
    from vlprompt.methods import get_method_class, make_config
    from vlprompt.presets import default_preset, preset_engine, resolve_preset

    try:
        cls = get_method_class(method)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    info = get_dataset_info(dataset)  # DataError listing the choices
    backbone, pretrained = _default_backbone(dataset, backbone, pretrained)
    preset = default_preset(backbone) if preset is None else preset
    asked = dict(overrides or {})
    overrides = {**cls.dataset_settings(dataset), **resolve_preset(preset, method, dataset, shots),
                 **asked}  # fmt: skip
    template = cls.template_for(dataset, info.template)
    if "template" not in overrides and template is not None:
        overrides["template"] = template
    _refuse_ignored_epochs(method, cls, asked, overrides)
    try:
        method_config = make_config(method, **overrides).to_dict()
    except (TypeError, ValueError) as exc:
        raise RunError(f"method {method!r}: {exc}") from None
    pretrained = str(pretrained) if pretrained is not None else None
    if pretrained is not None and Path(pretrained).expanduser().exists():
        pretrained = str(Path(pretrained).expanduser().resolve())
    return RunConfig(
        method=method,
        dataset=dataset,
        method_config=json.loads(json.dumps(method_config)),
        root=str(Path(root).expanduser().resolve()) if root is not None else None,
        backbone=backbone,
        pretrained=pretrained,
        shots=shots,
        seed=seed,
        subsample=subsample,
        engine=_engine_with_preset(engine or EngineSettings(), preset_engine(preset)),
        preset=preset,
        split=split,
        classnames_file=(
            str(Path(classnames_file).expanduser().resolve())
            if classnames_file is not None
            else None
        ),
        skip_bad_images=skip_bad_images,
    )


def _engine_with_preset(engine: EngineSettings, values: dict[str, Any]) -> EngineSettings:
    """`engine` with each setting left at its default (an EngineDefault) set to the preset's
    value, or to the plain default: config.json records what the run used."""
    from vlprompt.config import EngineDefault

    unnamed = {k: v for k, v in vars(engine).items() if isinstance(v, EngineDefault)}
    return replace(engine, **{k: values.get(k, float(v)) for k, v in unnamed.items()})


def _refuse_ignored_epochs(
    method: str, cls: Any, asked: dict[str, Any], overrides: dict[str, Any]
) -> None:
    """A recipe counted in optimizer steps (`iterations`, e.g. CLIP-LoRA's) ignores `epochs`.
    Epochs asked for where the recipe's (or a preset's) iterations rule are refused, never
    silently dropped; asked for beside iterations, they are said to be unused."""
    if "epochs" not in asked:
        return
    iterations = overrides.get("iterations", getattr(cls.config_class(), "iterations", 0))
    if not iterations or iterations <= 0:
        return
    if "iterations" not in asked:
        raise RunError(
            f"method {method!r} trains for iterations={iterations} optimizer steps, so epochs="
            f"{asked['epochs']} would be ignored; set --iterations N instead (or "
            "--iterations 0 to train by epochs)"
        )
    log.warning("%s: iterations=%s sets the length; epochs=%s is unused", method, iterations,
                asked["epochs"])  # fmt: skip


def _prepare_run_dir_on_main(
    run_dir: Path,
    wanted: RunConfig,
    *,
    resume: bool,
    overwrite: bool,
    ctx: Dist,
    stack: contextlib.ExitStack,
    tensorboard: bool = False,
) -> tuple[RunConfig, bool]:
    """`_prepare_run_dir` decided by rank 0 alone and shared with every rank (with its error,
    if any, so that no rank waits forever): the others reading the folder while rank 0 writes
    it would race. Rank 0 claims the folder (vlprompt.run_folder: a user's folder is refused
    untouched) and holds its lock until `stack` closes; a `tensorboard` folder it cannot
    write is refused before anything is written."""
    outcome: tuple[RunConfig, bool] | None = None
    error: Exception | None = None
    if ctx.is_main:
        try:
            claim_folder(run_dir, "run")
            if tensorboard:  # before the lock file is written
                from vlprompt.tracking import summary_writer_class, writable_log_folder

                summary_writer_class()
                writable_log_folder(run_dir)
            stack.enter_context(folder_lock(run_dir))
            _write_or_refuse(run_dir, lambda: remove_stale_temps_of_run(run_dir))
            outcome = _prepare_run_dir(run_dir, wanted, resume=resume, overwrite=overwrite)
            if not outcome[1]:
                _write_or_refuse(run_dir, lambda: write_config(run_dir, outcome[0].to_dict()))
        except Exception as e:  # noqa: BLE001  (re-raised below, on every rank)
            error = e
    shared = ctx.from_main(outcome if error is None else str(error))
    if error is not None:
        raise error
    if isinstance(shared, str):
        raise RunError(shared)
    return shared


def _write_or_refuse(run_dir: Path, write: Callable[[], None]) -> None:
    """Run `write`; an OSError (read-only folder, full disk) becomes one clear RunError."""
    try:
        write()
    except OSError as exc:
        raise not_writable(run_dir, exc, "run folder") from None


def _prepare_run_dir(
    run_dir: Path, wanted: RunConfig, *, resume: bool, overwrite: bool
) -> tuple[RunConfig, bool]:
    """Check a claimed and locked run folder against the wanted config. Returns the config to
    use and whether the folder holds that run, finished."""
    if overwrite:
        _write_or_refuse(run_dir, lambda: _clear_run(run_dir))
    if not has_config(run_dir):
        return wanted, False
    saved = read_run_config(run_dir)
    diffs = config_differences(saved, wanted)
    if diffs and not resume:
        raise RunError(
            f"output folder {run_dir} holds a run with another config ({'; '.join(diffs)}). "
            "Choose another --output-dir, pass --resume to continue the saved run with its own "
            "config, or --overwrite to replace it"
        )
    # resuming loads the saved config's backbone, which the caller did not name
    check_weights_source(saved.backbone, run_dir, saved.backbone == wanted.backbone,
                         training=True)  # fmt: skip
    if diffs:
        log.warning("resuming %s with its saved config; ignoring: %s", run_dir, "; ".join(diffs))
    # the saved run's identity, this call's runtime settings (device, workers, ...)
    runtime = {k: getattr(wanted.engine, k) for k in RUNTIME_ENGINE_KEYS}
    speed_only = {
        k: wanted.method_config[k]
        for k in method_runtime_settings(saved.method)
        if k in wanted.method_config
    }
    config = replace(
        saved, engine=replace(saved.engine, **runtime), root=wanted.root or saved.root,
        method_config={**saved.method_config, **speed_only},
    )  # fmt: skip
    finished = is_run_finished(run_dir)
    if not finished and not resume and latest_checkpoint(run_dir) is not None:
        raise RunError(
            f"output folder {run_dir} holds an unfinished run of this config; pass --resume to "
            "continue it from its last checkpoint or --overwrite to start again"
        )
    return config, finished


def _clear_run(run_dir: Path) -> None:
    """Remove what a run writes in its (marked) folder; other files in it stay."""
    clear_run(run_dir)


class _RunLog:
    """Lines to `log.txt` (rank 0, `to_file`) and to the `vlprompt` logger (at INFO with
    `echo`, else DEBUG: a sweep keeps its runs' lines in their log files)."""

    def __init__(self, run_dir: Path, ctx: Dist, to_file: bool = True, echo: bool = True) -> None:
        self.path = run_dir / LOG_FILE
        self.run_dir = run_dir
        self.ctx = ctx
        self.to_file = to_file
        self.echo = echo

    def __call__(self, message: str) -> None:
        if self.ctx.is_main:
            log.log(logging.INFO if self.echo else logging.DEBUG, message)
            if not self.to_file:
                return
            _write_or_refuse(self.run_dir, lambda: append_log(self.run_dir, message))


# ---- training ---------------------------------------------------------------------------------
def train(
    method: str,
    dataset: str,
    *,
    output_dir: str | Path,
    root: str | Path | None = None,
    backbone: str | None = None,
    pretrained: str | Path | None = DEFAULT_PRETRAINED,
    shots: int = 16,
    seed: int = 1,
    subsample: str = "all",
    split: str | None = None,
    classnames_file: str | Path | None = None,
    skip_bad_images: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    precision: str = "auto",
    deterministic: bool = False,
    num_workers: int | None = None,
    eval_batch_size: int = 100,
    keep_checkpoints: int = 1,
    view_pool: int = 0,
    crop_min_scale: float = CROP_MIN_SCALE_DEFAULT,
    batches: str = "mixed",
    select_on: str = "last",
    evaluate: bool = True,
    calibrate: bool = True,
    progress: bool | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    trust_torchscript: bool = False,
    echo: bool = True,
    tensorboard: bool = False,
    preset: str | None = None,
    **config_overrides: Any,
) -> Run:
    """Train `method` on `dataset` (few-shot: `shots` per class, sampled with `seed`) into
    `output_dir`, evaluate the last epoch on the test split (`evaluate=True`) and return the run.

    `config_overrides` set the method's config (e.g. ``lr=0.005, epochs=5, K=4``); the
    rest defaults to the method's paper recipe, or to `preset`'s official values for this
    (data set, shots) (e.g. ``preset="rpo_dg"``; `vlprompt.presets` lists them). Named
    settings win over the preset; `config.json` records the preset's name. `view_pool=N`
    (N > 0) trains on N augmented views per image pre-computed once (faster, not the papers'
    augmentation; see vlprompt.view_pool).
    `crop_min_scale`: the smallest area fraction of a training crop (default 0.08, the papers',
    or the preset's: 1 = no crop under `mini`, the default preset with the tiny CLIP;
    ``preset="paper"`` is the papers' recipes there). `batches="one_class"`: each training batch
    holds one class's images (Skip Tuning's official loader; vlprompt.batching). `backbone=None` is the papers' ViT-B/16,
    or the shipped tiny CLIP for a mini-world data set. `trust_torchscript`: allow a
    TorchScript archive as `pretrained` (it can run code).
    `echo=False` keeps the run's lines in its `log.txt` (the logger gets them at DEBUG).
    `tensorboard=True` writes per-epoch loss, learning rate and accuracy and the final
    evaluations under `output_dir/tensorboard/` (needs the `tensorboard` package).
    An `output_dir` holding a finished run of the same config returns that run at once; one
    holding another config is refused unless `resume` (continue the saved run with its saved
    config) or `overwrite` (start again; only the run's own files are removed). vlprompt writes
    only into a new or empty folder or one it created (see vlprompt.run_folder), and one process
    at a time. Under `torchrun`, every process calls this; rank 0 writes.
    """
    # the keywords above are the train options (vlprompt.config.TrainOptions and EngineSettings;
    # tests/test_train_options.py checks that they stay so), the rest are the method's settings
    options = {
        k: v for k, v in locals().items() if k not in ("method", "dataset", "config_overrides")
    }
    run, engine, call, _ = split_train_kwargs(options)
    ensure_visible_logging()
    wanted = resolve_config(
        method, dataset, **run, engine=EngineSettings(**engine), overrides=config_overrides
    )
    return train_config(wanted, **call)


def train_config(
    wanted: RunConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    evaluate: bool = True,
    calibrate: bool = True,
    progress: bool | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    trust_torchscript: bool = False,
    echo: bool = True,
    tensorboard: bool = False,
) -> Run:
    """`train` from a resolved `RunConfig` (e.g. a saved run's)."""
    run_dir = Path(output_dir).expanduser()
    ctx = init_distributed(wanted.engine.device)
    # a precision the device cannot run is refused before anything is written
    effective_precision(resolve_device(wanted.engine.device, ctx), wanted.engine.precision)
    created = not run_dir.exists()  # else: marked by this call when it is empty now
    marked = created or (run_dir.is_dir() and not any(run_dir.iterdir()))
    fresh = not has_config(run_dir)
    claimed: list[bool] = []  # set once this call holds the folder (never another process's)
    try:
        return _train_in_folder(
            wanted, run_dir, ctx, resume=resume, overwrite=overwrite, evaluate=evaluate,
            calibrate=calibrate, progress=progress, on_epoch_end=on_epoch_end,
            trust_torchscript=trust_torchscript, echo=echo, tensorboard=tensorboard,
            on_claimed=lambda: claimed.append(True),
        )  # fmt: skip
    except BaseException:
        if ctx.is_main and fresh and claimed:  # refused before its first saved epoch
            undo_unstarted_run(run_dir, marked=marked, created=created)
        raise


def _train_in_folder(wanted, run_dir, ctx, *, resume, overwrite, evaluate, calibrate, progress,
                     on_epoch_end, trust_torchscript, echo, tensorboard, on_claimed) -> Run:  # fmt: skip
    """`train_config` inside the claimed, locked run folder."""
    with contextlib.ExitStack() as stack:  # rank 0 holds the run folder's lock throughout
        config, finished = _prepare_run_dir_on_main(
            run_dir, wanted, resume=resume, overwrite=overwrite, ctx=ctx, stack=stack,
            tensorboard=tensorboard,
        )  # fmt: skip
        on_claimed()
        if finished:
            log.info("%s: finished earlier with the same config; loading it", run_dir)
            device = str(resolve_device(config.engine.device, ctx))
            # the backbone is the caller's (checked by _prepare_run_dir)
            return load_run(run_dir, device, trust_torchscript=trust_torchscript,
                            allow_remote_weights=True)  # fmt: skip
        board = None
        if tensorboard and ctx.is_main:
            from vlprompt.tracking import TensorBoardLog

            board = TensorBoardLog(run_dir)
            stack.callback(board.close)
            on_epoch_end = _also(board.epoch, on_epoch_end)
        return _train_and_evaluate(
            config, run_dir, resume=resume, evaluate=evaluate, progress=progress,
            on_epoch_end=on_epoch_end, ctx=ctx, say=_RunLog(run_dir, ctx, echo=echo),
            board=board, trust_torchscript=trust_torchscript, calibrate=calibrate,
        )  # fmt: skip


def _also(first: Callable[[EpochStats], None], then: Callable[[EpochStats], None] | None):
    def both(stats: EpochStats) -> None:
        first(stats)
        if then is not None:
            then(stats)

    return both


def _train_and_evaluate(config, run_dir, *, resume, evaluate, progress, on_epoch_end, ctx, say,
                        board, trust_torchscript, calibrate=True) -> Run:  # fmt: skip
    from vlprompt.seeding import deterministic_mode

    with deterministic_mode(config.engine.deterministic):
        method, splits, wall_s, epochs = _train(
            config, run_dir, resume, progress, on_epoch_end, ctx, say, trust_torchscript
        )
    calibration = _calibrate(method, splits, config, ctx, say) if calibrate else None
    if ctx.is_main:
        method.save(run_dir)
        if calibration is not None:
            write_calibration(run_dir, calibration)
        status = {
            "finished": True,
            "epochs": epochs,  # as run: an `iterations` training's epochs follow from its steps
            "iterations": getattr(method.config, "iterations", 0) if method.needs_training else 0,
            "train_wall_s": wall_s,
            "selected_epoch": getattr(method, "selected_epoch", None),  # --select-on val
            "n_train_images": len(splits.train),
            "n_classes": len(splits.classnames),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_status(run_dir, status)
        say(f"saved the learned prompts to {run_dir} ({wall_s:.1f} s of training)")
    ctx.barrier()
    run = Run(run_dir, config, method, _read_status(run_dir), calibration)
    if evaluate:  # beside zero-shot CLIP on the same images (cached features: cheap)
        record = _evaluate_run(run, splits, split="test", ctx=ctx, say=say,
                               compare_zero_shot=config.method != "zsclip")  # fmt: skip
        _say_below_zero_shot(record, config, say)
        if board is not None:
            board.evaluation(record)
    return run


def _say_below_zero_shot(record: dict[str, Any], config: RunConfig, say) -> None:
    from vlprompt.zero_shot_check import zero_shot_note

    note = zero_shot_note(record, config, _read_status(Path(record["run_dir"])))
    if note and "BELOW" in note:
        say(f"warning: test accuracy {record['accuracy']:.2f}%, {note}")


def _calibrate(method: Any, splits: Any, config: RunConfig, ctx: Dist, say) -> dict | None:
    """Temperature and conformal thresholds fitted on the validation split (never the test
    split): `calibration.json`. None when there are no validation images."""
    from vlprompt.calibration import fit_calibration
    from vlprompt.evaluation import compute_logits

    if not splits.val:
        say("no validation images: the probabilities stay uncalibrated")
        return None
    logits, _ = compute_logits(
        method, splits.val, batch_size=config.engine.eval_batch_size,
        num_workers=config.engine.workers(), precision=config.engine.precision, ctx=ctx,
        feature_cache=_feature_cache(config),
    )  # fmt: skip
    labels = torch.tensor([d.label for d in splits.val], dtype=torch.long)
    calibration = fit_calibration(logits, labels).to_dict()
    temperature, before, after = (
        calibration[k] for k in ("temperature", "ece_before", "ece_after")
    )
    line = (
        f"calibration on the {len(labels)} validation images: temperature {temperature:.3g}, "
        f"expected calibration error {100 * before:.1f}% -> {100 * after:.1f}%"
    )
    if calibration.get("temperature_at_bound"):
        line += (
            " (at the search's bound: the validation split cannot pin the temperature down, "
            "so predictions use the model's own probabilities)"
        )
    say(line)
    return calibration


def _data_moved_hint(exc: DataError, saved_root: str | None) -> DataError:
    """`exc`, saying how to point at the data when the run's saved root no longer exists."""
    if saved_root is None or Path(saved_root).expanduser().exists():
        return exc
    return DataError(
        f"{exc} The run's data root {saved_root} no longer exists; if the data moved, pass "
        "its new place with --root PATH (evaluate(..., root=PATH))"
    )


def _build_splits(config: RunConfig, dataset: str | None = None, subsample: str | None = None,
                  shots: int | None = None, root: str | None = None,
                  whole_val: bool = False) -> Any:  # fmt: skip
    from vlprompt.data import build_dataset

    own = dataset is None or dataset == config.dataset
    loader = {}  # the run's own data options apply to its own data set only
    if own and config.split is not None:
        loader["split"] = tuple(float(x) for x in config.split.split(","))
    if own and config.classnames_file is not None:
        loader["classnames_file"] = config.classnames_file
    return build_dataset(
        dataset or config.dataset,
        root if root is not None else config.root,
        shots=config.shots if shots is None else shots,
        seed=config.seed,
        subsample=subsample or config.subsample,
        skip_bad_images=config.skip_bad_images and own,
        whole_val=whole_val,
        **loader,
    )


def _train(config, run_dir, resume, progress, on_epoch_end, ctx, say, trust_torchscript=False):
    from vlprompt.backbone import load_clip
    from vlprompt.data import ImageListDataset, transform_for
    from vlprompt.methods import create_method

    if config.preset == MINI_PRESET:  # first: these are not the papers' recipes
        say(mini_preset_line(config.method))
    device = resolve_device(config.engine.device, ctx)
    # the data first: a missing folder is not a slow download; a method whose searches score
    # every validation image (val_split "whole") gets the whole val split
    splits = _build_splits(config, whole_val=config.method_config.get("val_split") == "whole")
    if ctx.is_main:
        write_splits(run_dir, _splits_record(config, splits))
    seed_everything(config.seed)
    clip = load_clip(
        config.backbone, config.pretrained, device=device, trust_torchscript=trust_torchscript
    )
    method = create_method(config.method, clip, splits.classnames, **config.method_config)
    method.to(device)
    say(
        f"{config.method} on {config.dataset} ({config.subsample} classes: {len(splits.classnames)}, "
        f"{len(splits.train)} training images, shots {config.shots}, seed {config.seed}) with "
        f"{config.backbone} ({config.pretrained or 'random weights'}) on {device}; "
        f"{method.num_trainable_parameters()} trainable parameters"
    )
    say(_split_sizes(splits))
    skipped = splits.extra.get("skipped_images", [])
    if skipped:
        say(f"skipped {len(skipped)} unreadable image(s) (listed in splits.json): "
            + ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))  # fmt: skip
    if config.pretrained is None:
        say("note: random backbone weights (no pretrained tag or checkpoint given)")
    started = time.perf_counter()
    if not method.needs_training:  # prepared without gradient steps (e.g. the linear probe)
        method.fit(
            splits.train, splits.val, feature_cache=_feature_cache(config),
            batch_size=config.engine.eval_batch_size, num_workers=config.engine.workers(), log=say,
        )  # fmt: skip
        return method, splits, time.perf_counter() - started, 0
    dataset = ImageListDataset(
        splits.train,
        transform_for(clip, train=True, crop_min_scale=config.engine.crop_min_scale),
        keep_decoded_bytes=KEEP_DECODED_TRAIN_BYTES,
    )
    if config.engine.select_on == "val" and not splits.val:
        raise RunError("--select-on val needs validation images, and this split has none; "
                       "give the split a validation share (e.g. --split 0.6,0.2,0.2)")  # fmt: skip
    if method.changes_clip_at_init and splits.val and not resume and ctx.is_main:
        say(_initial_accuracy_line(method, clip, config, splits))
    result = fit(
        method, dataset, settings=config.engine, seed=config.seed, run_dir=run_dir,
        resume=resume, progress=progress, ctx=ctx, on_epoch_end=on_epoch_end, logger=say,
        val_items=splits.val if config.engine.select_on == "val" else None,
    )  # fmt: skip
    if result.selected_epoch is not None:
        method.selected_epoch = result.selected_epoch
    return method, splits, result.wall_s, result.epochs


def _split_sizes(splits: Any) -> str:
    """ "images per class: train 16 (16-16), val 4 (2-4), test 300 (30-30)": totals and the
    smallest and largest class, so a lopsided split shows at once."""
    parts = []
    for name in ("train", "val", "test"):
        items = getattr(splits, name)
        counts = [0] * len(splits.classnames)
        for d in items:
            counts[d.label] += 1
        spread = f"{min(counts)}-{max(counts)} per class" if counts else "no classes"
        parts.append(f"{name} {len(items)} ({spread})")
    return "images: " + ", ".join(parts)


def mini_preset_line(method: str | None = None) -> str:
    """What a run under the `mini` preset is told first: the mini world's settings, not the
    papers' recipes, and how to get those. `method` None: a sweep's line for all its methods."""
    from vlprompt.presets import EVERY_METHOD, PAPER_PRESET

    mini = EVERY_METHOD[MINI_PRESET]
    values = {**(mini.resolve_for(method) if method else {}), **mini.engine}
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
    whose = f"{method}'s other settings are" if method else "each method's other settings:"
    per_method = "" if method else " and epochs, batch sizes and learning rates per method"
    return (
        f"preset {MINI_PRESET} (the default with the tiny CLIP): the mini world's settings, "
        f"{shown}{per_method} (no random "
        f"crop), as in docs/mini-world.md; {whose} its paper's. The papers' recipes: "
        f"--preset {PAPER_PRESET} (Python: preset={PAPER_PRESET!r})"
    )


def _splits_record(config: RunConfig, splits: Any) -> dict[str, Any]:
    """`splits.json`: every image of the run's splits (paths relative to the data root when
    inside it) and what each split was read for: the test split only for the final
    evaluation, after the weights are final."""

    def rel(path: str) -> str:
        if config.root and Path(path).is_relative_to(config.root):
            return str(Path(path).relative_to(config.root))
        return path

    return {
        "dataset": splits.name,
        "root": config.root,
        "classnames": list(splits.classnames),
        "read_for": {
            "train": "training",
            "val": "calibration (temperature, conformal thresholds) and any model selection",
            "test": "the final evaluation only, after training and calibration",
        },
        **{part: [[rel(d.path), d.label] for d in getattr(splits, part)]
           for part in ("train", "val", "test")},
        "skipped_images": [rel(p) for p in splits.extra.get("skipped_images", [])],
    }  # fmt: skip


def _feature_cache(config: RunConfig) -> Any:
    from vlprompt.evaluation import default_feature_cache_dir
    from vlprompt.feature_cache import FeatureCache

    return FeatureCache(default_feature_cache_dir())


# ---- evaluation -------------------------------------------------------------------------------
def _prompts_digest(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / PROMPTS_FILE).read_bytes()).hexdigest()


def evaluate(
    run: Run | str | Path,
    dataset: str | None = None,
    *,
    subsample: str | None = None,
    split: str = "test",
    root: str | Path | None = None,
    device: str = "cpu",
    record: bool = True,
    reuse: bool = True,
    trust_torchscript: bool = False,
    allow_remote_weights: bool = False,
    report: bool = False,
    whole_split: bool = False,
) -> dict[str, Any]:
    """Evaluate a finished run on `split` of `dataset` (default: the run's own data set) with
    the `subsample` classes (default: the run's own for its data set, else "all"). The train
    and val splits of the run's own data set are its few-shot sample (val: `min(shots, 4)` per
    class, what the method's searches saw); `whole_split=True` takes every image of the split
    instead (a validation set large enough to decide between recipes). Returns the
    result record (accuracy in percent) and, with `record=True`, appends it to the run's
    `results.jsonl`. With `reuse=True` an identical evaluation already recorded for the same
    learned prompts is returned without recomputing. Recording needs a run folder vlprompt
    created (`record=False` evaluates any run read-only). `allow_remote_weights`: see load_run.
    A record returned from `results.jsonl` without recomputing has `.reused` True.

    `report=True` also writes the evaluation's diagnosis into the run's
    `eval/<data set>-<classes>-<split>/` (vlprompt.diagnosis: per-class accuracy, confusion
    matrix, errors.csv, the most confident mistakes, zero-shot CLIP's accuracy on the same
    images beside the trained one; vlprompt.calibration: the reliability diagram before and
    after the run's temperature) and returns its folder as `record["report_dir"]`."""
    ensure_visible_logging()
    if record:  # checked before anything is loaded
        run_dir = run.run_dir if isinstance(run, Run) else Path(run)
        read_run_config(run_dir)  # a folder that is no run at all says so first
        require_ours(run_dir, "run", action="record results (evaluate without recording: "
                     "--no-record, or record=False)")  # fmt: skip
    run = load_run(run, device=device, trust_torchscript=trust_torchscript,
                   allow_remote_weights=allow_remote_weights)  # fmt: skip
    ctx = init_distributed(run.config.engine.device)
    say = _RunLog(run.run_dir, ctx, to_file=record, echo=False)  # the caller shows the result
    own = dataset is None or dataset == run.config.dataset
    dataset = dataset or run.config.dataset
    subsample = subsample or (run.config.subsample if own else "all")
    if split not in ("train", "val", "test"):
        raise RunError(f"split must be train, val or test, got {split!r}")
    whole_split = whole_split and split != "test"  # the test split is never sampled
    digest = _prompts_digest(run.run_dir)
    if reuse and not report:
        for rec in reversed(run.results()):
            if (rec.get("dataset"), rec.get("subsample"), rec.get("split"),
                    bool(rec.get("whole_split"))) == (
                dataset, subsample, split, whole_split,
            ) and rec.get("prompts_sha256") == digest:  # fmt: skip
                return EvaluationRecord(rec, reused=True)
    shots = run.config.shots if (own and split != "test" and not whole_split) else 0
    try:
        splits = _build_splits(
            run.config, dataset, subsample, shots,
            str(Path(root).expanduser().resolve()) if root is not None else None,
        )  # fmt: skip
    except DataError as exc:
        raise _data_moved_hint(exc, run.config.root if root is None else None) from None
    return _evaluate_run(run, splits, split=split, ctx=ctx, say=say, record=record, digest=digest,
                         report=report, whole_split=whole_split)  # fmt: skip


def _evaluate_run(run: Run, splits: Any, *, split: str, ctx: Dist, say: Callable[[str], None],
                  record: bool = True, digest: str | None = None, report: bool = False,
                  compare_zero_shot: bool = False, whole_split: bool = False,
                  ) -> dict[str, Any]:  # fmt: skip
    from vlprompt.evaluation import evaluate_items

    config = run.config
    method = run.method
    items = getattr(splits, split)
    saved_names = list(method.classnames)
    if list(splits.classnames) != saved_names:
        if not type(method).classifies_new_classes:
            raise RunError(
                f"{run.run_dir}: method {config.method!r} classifies only the "
                f"{len(saved_names)} classes it was trained on, not the {len(splits.classnames)} "
                f"classes of {splits.name} ({splits.extra.get('subsample', 'all')}); evaluate it "
                f"on its own classes (--subsample {config.subsample}) or train a prompt method "
                "for new classes"
            )
        method.set_classnames(list(splits.classnames))
    try:
        result = evaluate_items(
            method,
            items,
            batch_size=config.engine.eval_batch_size,
            num_workers=config.engine.workers(),
            precision=config.engine.precision,
            ctx=ctx,
            feature_cache=_feature_cache(config),
            split=split,
            dataset=splits.name,
            keep_logits=report,
        )
        zero_shot = _zeroshot_accuracy(run, splits, items) if report or compare_zero_shot else None
    finally:
        if list(method.classnames) != saved_names:
            method.set_classnames(saved_names)
    subsample = splits.extra.get("subsample", "all")
    status = run.status or _read_status(run.run_dir)
    rec = {
        "method": config.method,
        "dataset": splits.name,
        "source": config.dataset,
        "backbone": config.backbone,
        "pretrained": config.pretrained,
        "shots": config.shots,
        "seed": config.seed,
        "subsample": subsample,
        "train_subsample": config.subsample,
        "split": split,
        "accuracy": result.accuracy,
        "macro_accuracy": result.macro_accuracy,
        "per_class_accuracy": result.per_class,
        "n_images": result.n_images,
        "n_classes": len(splits.classnames),
        "epochs": status.get("epochs", config.method_config.get("epochs")),
        "wall_s": status.get("train_wall_s"),
        "eval_wall_s": result.wall_s,
        "from_features": result.used_features,
        "prompts_sha256": digest or _prompts_digest(run.run_dir),
        "run_dir": str(run.run_dir),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "vlprompt_version": code_version(),
    }
    if zero_shot is not None:
        rec["zero_shot_accuracy"] = zero_shot
    if whole_split:  # every image of a train/val split, not the run's few-shot sample
        rec["whole_split"] = True
    if report:
        if ctx.is_main:
            rec["report_dir"] = str(_write_report(run, splits, split, items, result, zero_shot))
    say(
        f"{split} accuracy on {splits.name} ({subsample} classes, {result.n_images} images): "
        f"{result.accuracy:.2f}% (macro {result.macro_accuracy:.2f}%)"
    )
    if record and ctx.is_main:
        with folder_lock(run.run_dir):
            _write_or_refuse(run.run_dir, lambda: append_result(run.run_dir, rec))
    return rec


def _zeroshot_accuracy(run: Run, splits: Any, items: Sequence[Any]) -> float:
    """Zero-shot CLIP's accuracy (the data set's template) on the same images and classes: the
    baseline a trained run must beat (frozen image features: cached, cheap)."""
    return _zero_shot_on(run.clip, run.config, splits.classnames, items)


def _zero_shot_on(clip: Any, config: RunConfig, classnames: Sequence[str], items: Any) -> float:
    from vlprompt.data import get_dataset_info
    from vlprompt.evaluation import evaluate_items
    from vlprompt.methods import create_method

    template = get_dataset_info(config.dataset).template
    zsclip = create_method("zsclip", clip, list(classnames), template=template)
    result = evaluate_items(
        zsclip, items, batch_size=config.engine.eval_batch_size,
        num_workers=config.engine.workers(), feature_cache=_feature_cache(config),
    )  # fmt: skip
    return result.accuracy


def _initial_accuracy_line(method: Any, clip: Any, config: RunConfig, splits: Any) -> str:
    """The validation accuracy of the untrained method beside zero-shot CLIP's. The random
    state is restored afterwards (a data loader draws a seed), so training runs exactly as it
    would without this line."""
    import torch

    from vlprompt.evaluation import evaluate_items

    with torch.random.fork_rng(devices=[]):
        initial = evaluate_items(
            method, splits.val, batch_size=config.engine.eval_batch_size,
            num_workers=config.engine.workers(), precision=config.engine.precision, split="val",
        ).accuracy  # fmt: skip
        zero_shot = _zero_shot_on(clip, config, splits.classnames, splits.val)
    method.train()
    line = (f"before training, on the validation split ({len(splits.val)} images): "
            f"{initial:.2f}% with the initial {config.method} tokens, zero-shot CLIP "
            f"{zero_shot:.2f}%")  # fmt: skip
    if initial < zero_shot - 10:
        line += ("; the fresh tokens inside the towers start far below zero-shot CLIP (fewer "
                 "prompted blocks may help: see docs/mini-world.md on prompt depth)")  # fmt: skip
    return line


def _write_report(run: Run, splits: Any, split: str, items: Sequence[Any], result: Any,
                  zero_shot: float) -> Path:  # fmt: skip
    """The diagnosis and reliability diagram of one evaluation in `eval/<name>/`."""
    import io as bytes_io

    from vlprompt.calibration import reliability_bins, reliability_diagram, softmax
    from vlprompt.diagnosis import write_report
    from vlprompt.run_folder import eval_report_dir, write_file

    name = f"{splits.name}-{splits.extra.get('subsample', 'all')}-{split}"
    folder = eval_report_dir(run.run_dir, name)
    root = Path(run.config.root) if run.config.root else None
    paths = [
        str(Path(d.path).relative_to(root)) if root and Path(d.path).is_relative_to(root)
        else d.path for d in items
    ]  # fmt: skip
    logits, labels = result.logits.numpy(), result.labels.numpy()
    with folder_lock(run.run_dir):
        write_report(folder, logits, labels, list(splits.classnames), paths, image_root=root,
                     zero_shot_accuracy=zero_shot, temperature=run.temperature)  # fmt: skip
        figure = reliability_diagram(
            reliability_bins(softmax(logits), labels),
            reliability_bins(softmax(logits, run.temperature), labels),
            run.temperature,
        )
        buffer = bytes_io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        write_file(folder, "reliability.png", buffer.getvalue(), owner=run.run_dir)
    return folder
