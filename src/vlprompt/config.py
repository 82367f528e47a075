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

from vlprompt._version import __version__
from vlprompt.errors import RunError as RunError
from vlprompt.errors import VlpromptError
from vlprompt.run_folder import CONFIG_FILE, read_config_data

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
MAX_SEED = 2**32 - 1  # numpy's limit (np.random.seed)
DEVICE_EXAMPLES = "cpu, cuda, cuda:1, mps"
SUBSAMPLE_CHOICES = ("all", "base", "new")
DEFAULT_BACKBONE = "ViT-B-16"  # the papers' backbone
DEFAULT_PRETRAINED = "openai"  # OpenAI weights (QuickGELU is chosen by vlprompt.load_clip)

# keys (dotted) that may differ between two invocations of the same run
NON_IDENTITY_KEYS = frozenset(
    {
        "root",
        "vlprompt_version",
        "engine.device",
        "engine.num_workers",
        "engine.eval_batch_size",
        "engine.keep_checkpoints",
        "preset",  # provenance: the resolved method_config is what identifies the run
    }
)


class ConfigError(VlpromptError, ValueError):
    """A configuration file or setting that cannot be read or is not valid."""


class TrainingDivergedError(VlpromptError, RuntimeError):
    """The training loss or the learned parameters became NaN or infinite; the last good
    checkpoint is kept."""


@dataclass
class EngineSettings:
    """How the engine runs. Only `precision`, `deterministic`, `view_pool` and `crop_min_scale`
    can change the numbers."""

    # Each field's "help" is its `vlprompt train --FIELD-NAME` flag's help (the CLI makes one
    # flag per field; vlprompt.precision.effective_precision decides what a precision runs as).
    device: str = field(
        default="cpu",
        metadata={"help": "cpu, cuda, cuda:1, ... (default cpu; under DDP each process picks "
                  "cuda:LOCAL_RANK itself)"},
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
        default=None, metadata={"help": "DataLoader workers (default 0 on CPU, 4 on CUDA)"}
    )
    eval_batch_size: int = field(
        default=100,
        metadata={"help": "images per evaluation batch (default 100, Dassl's test batch size)"},
    )
    keep_checkpoints: int = field(
        default=1, metadata={"help": "per-epoch checkpoints kept, the latest ones (default 1)"}
    )
    view_pool: int = field(
        default=0,
        metadata={"help": "pre-compute N augmented views per training image once and reuse them "
                  "across epochs (vlprompt.view_pool; faster, but NOT the papers' fresh "
                  "augmentations, so accuracy may change; default 0 = off)", "metavar": "N"},
    )  # fmt: skip
    crop_min_scale: float = field(
        default=0.08,
        metadata={"help": "smallest area fraction of a training crop (default 0.08 as the "
                  "papers, CoOp / Dassl; raise it for small objects in the frame; 1 = no crop, "
                  "flips only)", "metavar": "F"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.device = check_device(self.device)
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
        _check_whole("eval_batch_size", self.eval_batch_size)
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _check_whole("keep_checkpoints", self.keep_checkpoints)
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if isinstance(self.view_pool, bool) or not isinstance(self.view_pool, int):
            raise ConfigError(f"view_pool must be a whole number >= 0, got {self.view_pool!r}")
        if self.view_pool < 0:
            raise ConfigError(f"view_pool must be >= 0 (0 = off), got {self.view_pool}")
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
        if not self.vlprompt_version:
            self.vlprompt_version = __version__

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
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in NON_IDENTITY_KEYS or key in runtime:
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
