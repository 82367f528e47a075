"""The resolved configuration of a training run, as saved in `<run>/config.json`.

A run is identified by its `RunConfig`: method and method settings, data set, backbone, shots,
seed, class subsample and the engine settings that change numbers (precision, determinism).
Settings that only change where or how fast a run computes (device, workers, evaluation batch
size, data root) are recorded but do not make two runs different, so a run started on one machine
can be resumed on another.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vlprompt._version import code_version
from vlprompt.errors import ConfigError, VlpromptError
from vlprompt.errors import RunError as RunError  # importable from its old home
from vlprompt.errors import TrainingDivergedError as TrainingDivergedError  # its old home
from vlprompt.run_folder import CONFIG_FILE, read_config_data

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
MAX_SEED = 2**32 - 1  # numpy's limit (np.random.seed)
DEVICE_EXAMPLES = "cpu, cuda, cuda:1, mps"
SUBSAMPLE_CHOICES = ("all", "base", "new")
SELECT_CHOICES = ("last", "val")  # which epoch's weights a run keeps
BATCH_MODES = ("mixed", "one_class")  # how training batches are drawn (vlprompt.batching)
DEFAULT_BACKBONE = "ViT-B-16"  # the papers' backbone
DEFAULT_PRETRAINED = "openai"  # OpenAI weights (QuickGELU is chosen by vlprompt.load_clip)

SPLIT_NAMES = ("train", "val", "test")
# upper bounds of the engine's sizes, refused before anything starts (each names why)
MAX_WORKERS = 256
WORKERS_WHY = "each DataLoader worker is a process; torch suggests at most the CPU count"
MAX_EVAL_BATCH = 65_536
EVAL_BATCH_WHY = "a batch of images is held in memory at once; Dassl evaluates 100"
MAX_VIEW_POOL = 1_000
VIEW_POOL_WHY = (
    "each epoch draws one view per image, so views beyond the epochs are never used; the "
    "longest official recipe trains 300 epochs"
)
# a field's verbs: the commands that offer it as a flag (vlprompt.cli makes them from the fields)
TRAIN_ONLY = ("train",)
TRAIN_AND_BENCH = ("train", "bench")


class EngineDefault(float):
    """An engine setting's default that a preset may replace (e.g. the `mini` preset's crop):
    equal to the value, but told apart by its type from the same value named by a caller, so
    that a named value always wins. `vlprompt.api.resolve_config` turns it into a plain float."""

    def __repr__(self) -> str:
        return float.__repr__(self)


CROP_MIN_SCALE_DEFAULT = EngineDefault(0.08)  # the papers' random resized crop (CoOp / Dassl)


@dataclass
class EngineSettings:
    """How the engine runs. Only `precision`, `deterministic`, `view_pool`, `crop_min_scale` and
    `batches` can change the numbers."""

    # Each field is a train option (see TrainOptions): its "help" is its `--FIELD-NAME` flag's
    # help on `vlprompt train` and `bench` ("verbs"); "runtime" marks a setting that is not part
    # of the run's identity. vlprompt.precision.effective_precision decides what a precision
    # runs as.
    device: str = field(
        default="cpu",
        metadata={"help": "cpu, cuda, cuda:1, ... (default cpu; under DDP each process picks "
                  "cuda:LOCAL_RANK itself)", "runtime": True,
                  "verbs": ("train", "bench", "quickstart")},
    )  # fmt: skip
    precision: str = field(
        default="auto",
        metadata={"help": "autocast dtype. CUDA: auto = fp16 (with a grad scaler, the papers), "
                  "fp16, bf16, fp32. CPU: auto = fp32; bf16 runs CPU autocast, slow on most "
                  "CPUs, for checking the mixed-precision path; fp16 needs CUDA",
                  "choices": PRECISION_CHOICES},
    )  # fmt: skip
    deterministic: bool = field(
        default=False,
        metadata={"help": "deterministic algorithms (torch.use_deterministic_algorithms) and "
                  "seeded loader workers"},
    )  # fmt: skip
    num_workers: int | None = field(
        default=None,
        metadata={"help": "DataLoader workers (default 0 on CPU, 4 on CUDA)", "runtime": True},
    )
    eval_batch_size: int = field(
        default=100,
        metadata={"help": "images per evaluation batch (default 100, Dassl's test batch size)",
                  "runtime": True},
    )  # fmt: skip
    keep_checkpoints: int = field(
        default=1,
        metadata={"help": "per-epoch checkpoints kept, the latest ones (default 1)",
                  "runtime": True},
    )  # fmt: skip
    view_pool: int = field(
        default=0,
        metadata={"help": "pre-compute N augmented views per training image once and reuse them "
                  "across epochs (vlprompt.view_pool; faster, but NOT the papers' fresh "
                  "augmentations, so accuracy may change; default 0 = off)", "metavar": "N"},
    )  # fmt: skip
    crop_min_scale: float = field(
        default=CROP_MIN_SCALE_DEFAULT,
        metadata={"help": "smallest area fraction of a training crop (default 0.08 as the "
                  "papers, CoOp / Dassl; raise it for small objects in the frame; 1 = no crop, "
                  "flips only)", "metavar": "F"},
    )  # fmt: skip
    batches: str = field(
        default="mixed",
        metadata={"help": "how training batches are drawn: mixed (default: shuffled over all "
                  "classes, as the papers) or one_class (each batch one class's images, as Skip "
                  "Tuning's official loader for 4+ shots; vlprompt.batching)",
                  "choices": BATCH_MODES},
    )  # fmt: skip

    select_on: str = field(
        default="last",
        metadata={"help": "which epoch's weights the run keeps: last (the papers') or val (the "
                  "epoch of the best validation accuracy, earliest on ties: early stopping that "
                  "never reads the test split)", "choices": SELECT_CHOICES},
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.device = check_device(self.device)
        if self.batches not in BATCH_MODES:
            raise ConfigError(
                f"batches must be one of {', '.join(BATCH_MODES)}, got {self.batches!r}"
            )
        if self.select_on not in SELECT_CHOICES:
            raise ConfigError(
                f"select_on must be one of {', '.join(SELECT_CHOICES)}, got {self.select_on!r}"
            )
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}"
            )
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"deterministic must be true or false, got {self.deterministic!r}")
        if self.num_workers is not None:
            _check_whole("num_workers", self.num_workers)
            if self.num_workers < 0:
                raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
            _check_at_most("num_workers", self.num_workers, MAX_WORKERS, WORKERS_WHY)
        _check_whole("eval_batch_size", self.eval_batch_size)
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _check_at_most("eval_batch_size", self.eval_batch_size, MAX_EVAL_BATCH, EVAL_BATCH_WHY)
        _check_whole("keep_checkpoints", self.keep_checkpoints)
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if isinstance(self.view_pool, bool) or not isinstance(self.view_pool, int):
            raise ConfigError(f"view_pool must be a whole number >= 0, got {self.view_pool!r}")
        if self.view_pool < 0:
            raise ConfigError(f"view_pool must be >= 0 (0 = off), got {self.view_pool}")
        _check_at_most("view_pool", self.view_pool, MAX_VIEW_POOL, VIEW_POOL_WHY)
        if isinstance(self.crop_min_scale, bool) or not (
            isinstance(self.crop_min_scale, (int, float)) and 0 < self.crop_min_scale <= 1
        ):
            raise ConfigError(
                f"crop_min_scale must be a number in (0, 1] (0.08 = the papers, 1 = no crop), "
                f"got {self.crop_min_scale!r}"
            )

    def workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return 4 if str(self.device).startswith("cuda") else 0


# the engine settings' names: api.train's keywords, the CLI's flags, config.json's "engine" keys
ENGINE_KEYS = tuple(f.name for f in fields(EngineSettings))


PRESET_HELP = (
    "a paper preset: the official settings for the run's data set and shots (`vlprompt presets` "
    "lists them); or, for every method, mini (the mini world's settings, the default with the "
    "tiny CLIP) or paper (each method's own recipe); --set and method flags win over it"
)
TRUST_HELP = (
    "allow a TorchScript archive (OpenAI's original .pt) as --pretrained; such an archive can run "
    "code when loaded, so pass this only for a file from a source you trust"
)


def _option(default: Any, help: str = "", *, run: bool = False, identity: bool = True,
            verbs: tuple[str, ...] = TRAIN_ONLY, **cli: Any) -> Any:  # fmt: skip
    """A TrainOptions field. `run`: a RunConfig field (saved in config.json), part of the run's
    identity unless `identity=False`; otherwise an option of this call only. `verbs`: the
    commands that offer it as a flag (none: Python only); `cli`: the flag's own argparse
    settings (flags, choices, metavar)."""
    return field(default=default, metadata={"help": help, "run": run,
                                            "identity": run and identity, "verbs": verbs, **cli})  # fmt: skip


@dataclass
class TrainOptions:
    """The options of one training call besides the method, the data set and the method's own
    settings, declared once (with EngineSettings' fields): `vlprompt.train`'s keywords, the
    flags of `vlprompt train`, `bench` and `quickstart`, a sweep's per-run settings and which
    keys `config_differences` compares all come from these fields
    (tests/test_train_options.py checks each of them)."""

    # ---- what the run is: RunConfig fields, saved in config.json ----
    root: str | None = _option(
        None, "data root (benchmarks) or your folder/CSV", run=True, identity=False,
        verbs=TRAIN_AND_BENCH,
    )  # fmt: skip
    backbone: str | None = _option(
        None, f"open_clip model name (default {DEFAULT_BACKBONE}; vlprompt-mini-vit, the shipped "
        "tiny CLIP, for a mini_* data set)", run=True, verbs=TRAIN_AND_BENCH,
    )  # fmt: skip
    pretrained: str | None = _option(
        DEFAULT_PRETRAINED, f"pretrained tag or local checkpoint (default {DEFAULT_PRETRAINED}; "
        "the shipped weights for the mini world's vlprompt-mini-vit)", run=True,
        verbs=TRAIN_AND_BENCH,
    )  # fmt: skip
    shots: int = _option(16, "training images per class (default 16; 0 = all)", run=True)
    seed: int = _option(1, "few-shot sampling/training seed (default 1)", run=True)
    subsample: str = _option(
        "all", "classes to train on (default all)", run=True, choices=SUBSAMPLE_CHOICES
    )
    # provenance only: the resolved method_config is what identifies the run
    preset: str | None = _option(None, PRESET_HELP, run=True, identity=False, metavar="NAME")
    # your own images (imagefolder, csv)
    split: str | None = _option(
        None, "imagefolder without train/val/test sub-folders: each class's images are shuffled "
        "(fixed seed) and cut into these train,val,test fractions (default 0.5,0.2,0.3)",
        run=True, metavar="TRAIN,VAL,TEST",
    )  # fmt: skip
    classnames_file: str | None = _option(
        None, "the class names CLIP reads, per folder or label: a JSON object, or lines "
        "'folder class name' (default: folder names, '_' as spaces)", run=True, metavar="FILE",
    )  # fmt: skip
    skip_bad_images: bool = _option(
        False, "open every selected image first and leave out (and list) the unreadable ones "
        "instead of stopping at the first", run=True,
    )  # fmt: skip
    # ---- how this call runs ----
    output_dir: str | None = _option(None, "run folder", flags=("-o", "--output-dir"))
    resume: bool = _option(False, "continue from the last checkpoint")
    overwrite: bool = _option(False, "replace a run in the folder")
    evaluate: bool = _option(
        True, "do not evaluate the last epoch on the test split", flags=("--no-eval",)
    )
    calibrate: bool = _option(
        True, "do not fit a temperature (and conformal thresholds) on the validation split after "
        "training; predicted probabilities then stay the model's own", flags=("--no-calibrate",),
        verbs=TRAIN_AND_BENCH,
    )  # fmt: skip
    trust_torchscript: bool = _option(False, TRUST_HELP, verbs=TRAIN_AND_BENCH)
    tensorboard: bool = _option(
        False, "write per-epoch loss, lr and accuracy and the final evaluations under "
        "RUN/tensorboard/ (pip install 'vlprompt[tensorboard]')",
        verbs=("train", "bench", "quickstart"),
    )  # fmt: skip
    progress: bool | None = _option(None, "a progress bar (default: when stderr is a terminal)",
                                    verbs=())  # fmt: skip
    echo: bool = _option(True, "the run's lines also to the `vlprompt` logger", verbs=())
    on_epoch_end: Any = _option(None, "called with each epoch's EpochStats", verbs=())


@dataclass(frozen=True)
class TrainOption:
    """One train option as the CLI, the API and the sweeps see it."""

    name: str
    owner: str  # "run" (RunConfig), "engine" (EngineSettings) or "call" (this call only)
    default: Any
    annotation: Any
    metadata: Any

    @property
    def identity(self) -> bool:
        """Part of the run's identity: another value is another run."""
        if self.owner == "engine":
            return not self.metadata.get("runtime", False)
        return bool(self.metadata.get("identity"))

    @property
    def verbs(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("verbs", TRAIN_AND_BENCH))


def train_options() -> list[TrainOption]:
    """Every train option: TrainOptions' fields, then EngineSettings'."""
    import typing

    out = []
    for cls in (TrainOptions, EngineSettings):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            owner = "engine" if cls is EngineSettings else ("run" if f.metadata["run"] else "call")
            out.append(TrainOption(f.name, owner, f.default, hints[f.name], f.metadata))
    return out


def split_train_kwargs(
    kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A train call's keywords as (run fields, engine settings, call options, method settings):
    whatever is not a train option is a setting of the method."""
    owner = {o.name: o.owner for o in train_options()}
    parts: dict[str, dict[str, Any]] = {"run": {}, "engine": {}, "call": {}, "method": {}}
    for key, value in kwargs.items():
        parts[owner.get(key, "method")][key] = value
    return parts["run"], parts["engine"], parts["call"], parts["method"]


def non_identity_keys() -> frozenset[str]:
    """config.json's keys (dotted) that may differ between two invocations of the same run."""
    keys = {"vlprompt_version"}
    for option in train_options():
        if option.owner != "call" and not option.identity:
            keys.add(f"engine.{option.name}" if option.owner == "engine" else option.name)
    return frozenset(keys)


RUNTIME_ENGINE_KEYS = tuple(
    f.name for f in fields(EngineSettings) if f.metadata.get("runtime", False)
)


def _check_at_most(name: str, value: int, bound: int, why: str) -> None:
    if value > bound:
        raise ConfigError(f"{name} must be at most {bound} ({why}), got {value}")


def _check_whole(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")


def check_device(device: Any) -> str:
    """`device` as a string torch understands ("cpu", "cuda", "cuda:1", "mps", ...), else
    ConfigError. Whether that device exists is checked when a run starts."""
    import torch

    if isinstance(device, torch.device):
        return str(device)
    if not isinstance(device, str):
        raise ConfigError(f"device must be a device name such as {DEVICE_EXAMPLES}, got {device!r}")
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device {device!r} is not a device name torch understands ({exc}); use one such as "
            f"{DEVICE_EXAMPLES}"
        ) from None
    return device


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: what `config.json` holds."""

    method: str  # registered method name
    dataset: str  # registered data-set name
    method_config: dict[str, Any]  # the method's resolved config (its paper defaults + overrides)
    root: str | None = None  # data root (benchmarks) or the user's folder/CSV (imagefolder/csv)
    backbone: str = DEFAULT_BACKBONE  # open_clip architecture name
    pretrained: str | None = DEFAULT_PRETRAINED  # pretrained tag or local checkpoint path
    shots: int = 16  # training images per class (0 = all)
    seed: int = 1  # few-shot sampling and training seed
    subsample: str = "all"  # classes trained on: "all", "base" or "new"
    engine: EngineSettings = field(default_factory=EngineSettings)
    # the paper preset whose values method_config starts from (vlprompt.presets), or None
    preset: str | None = None
    # your own images: the train,val,test fractions of a folder, a class-name file, skipping
    # unreadable images (None / False: the loader's defaults)
    split: str | None = None
    classnames_file: str | None = None
    skip_bad_images: bool = False
    vlprompt_version: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.engine, dict):
            self.engine = engine_settings(self.engine)
        if not isinstance(self.engine, EngineSettings):
            raise ConfigError(f"engine must be a mapping of engine settings, got {self.engine!r}")
        if self.subsample not in SUBSAMPLE_CHOICES:
            raise ConfigError(
                f"subsample must be one of {', '.join(SUBSAMPLE_CHOICES)}, got {self.subsample!r}"
            )
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 0:
            raise ConfigError(f"shots must be a whole number >= 0, got {self.shots!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be a whole number, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(
                f"seed must be in 0..{MAX_SEED} (2**32 - 1, numpy's limit), got {self.seed}"
            )
        if self.preset is not None and not isinstance(self.preset, str):
            raise ConfigError(f"preset must be a preset name or null, got {self.preset!r}")
        if not isinstance(self.method_config, dict):
            raise ConfigError(
                f"method_config must be a mapping of the method's settings, got "
                f"{self.method_config!r}"
            )
        if self.split is not None:
            self.split = _check_split(self.split)
        if not isinstance(self.skip_bad_images, bool):
            raise ConfigError(
                f"skip_bad_images must be true or false, got {self.skip_bad_images!r}"
            )
        if not self.vlprompt_version:
            self.vlprompt_version = code_version()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        missing = [k for k in ("method", "dataset", "method_config") if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing run setting(s) {', '.join(missing)}")
        return cls(**data)


def _check_split(split: Any) -> str:
    """ "0.5,0.2,0.3" (or three numbers): train, val and test fractions that sum to 1."""
    parts = split.split(",") if isinstance(split, str) else split
    try:
        values = [float(x) for x in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or min(values) < 0 or values[0] == 0 or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(
            f"split must be three fractions train,val,test that sum to 1 with train > 0, e.g. "
            f"0.5,0.2,0.3 (val may be 0), got {split!r}"
        )
    return ",".join(f"{v:g}" for v in values)


def engine_settings(data: dict[str, Any]) -> EngineSettings:
    known = {f.name for f in fields(EngineSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown engine setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return EngineSettings(**data)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """Human-readable `key: saved -> wanted` for every identity key that differs."""
    a, b = flatten(_jsonable(saved.to_dict())), flatten(_jsonable(wanted.to_dict()))
    runtime = {f"method_config.{k}" for k in method_runtime_settings(saved.method)}
    exempt = non_identity_keys()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in exempt or key in runtime:
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            diffs.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return diffs


def method_runtime_settings(method: str) -> frozenset[str]:
    """The settings of `method` that change only speed or memory (none for an unknown name)."""
    from vlprompt.methods import get_method_class
    from vlprompt.methods.base import runtime_settings

    try:
        return runtime_settings(get_method_class(method).config_class)
    except VlpromptError:
        return frozenset()


def _jsonable(data: Any) -> Any:
    """What the data looks like after a JSON round trip (tuples -> lists), for comparisons."""
    return json.loads(json.dumps(data))


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The `RunConfig` saved in a run folder; a folder that is not a run -> RunError."""
    data = read_config_data(run_dir)
    return RunConfig.from_dict(data, source=str(Path(run_dir) / CONFIG_FILE))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML or JSON file (a mapping). A run's own config.json works too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json / yaml parse errors
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of settings, got {type(data).__name__}"
        )
    return data
