"""Paper presets: the settings the official code used for each (data set, shots) of an experiment.

A paper's numbers come from a YAML config *and* a shell script that picks the config, the shots
and a few settings per data set (ProGrad's lambda 0.8 for 8/16-shot Flowers, DTD and EuroSAT;
CoOp's 50 epochs on ImageNet, ...). Those choices live in scripts and READMEs, and getting one
wrong is a top complaint in these repositories' issue trackers. A preset writes them down once,
each value with the official file it was read from, so that one command reproduces a table:

    vlprompt bench fewshot --methods prograd --datasets dtd,eurosat --preset prograd_fewshot ...
    vlprompt.train("rpo", "imagenet", shots=16, preset="rpo_dg", output_dir="runs/rpo_in")

How a run's method config is resolved (`vlprompt.api.resolve_config`, shared by train and bench):
the method's defaults, then the preset's values for the run's (data set, shots), then the
settings the caller names (`--set`, method flags, Python keywords): what is named explicitly
wins. The run's `config.json` holds the resolved values in `method_config`, as for any run, and
the preset's name in `preset`, so a reader sees where they came from. The name is provenance, not
identity: a run resolved to the same values with or without the preset is the same run.

A preset sets method settings only. The backbone is the run's: CoOp's and ProGrad's few-shot
tables are RN50 (`--backbone RN50`), the others ViT-B/16 (vlprompt's default). The values were
read from the official repositories at the commits in `SOURCES`; docs/reproduce.md has the
table of every value and its file (`markdown_table()` writes it), and the places where the
official files are silent or disagree.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from vlprompt.errors import VlpromptError

# the official repositories read, at these commits
SOURCES: dict[str, str] = {
    "mlvlab/RPO": "d770db632307d65cbe40ff4e0fa6dd84b4e61274",
    "BeierZhu/Prompt-align": "1b762036cbe97ecf504e17bb94d89191679e4e6e",
    "KaiyangZhou/CoOp": "ff61507c790454bce7c5052c3ac39e60772f1f89",
    "htyao89/KgCoOp": "c43ccc32c8739f64b165cfa205fcc6c0f5bb5b17",
    "KaiyangZhou/Dassl.pytorch": "c61a1b570ac6333bd50fb5ae06aea59002fb20bb",
    "muzairkhattak/PromptSRC": "bb95c77b634d63488f2cad81ff4a72d53bdd06d5",
    "gaopengcuhk/CLIP-Adapter": "08d07f8b2ecafc6f1479fe636b26d464d7a5574e",
}
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)  # the shots of every few-shot table


class PresetError(VlpromptError, ValueError):
    """A preset that does not exist, belongs to another method, or has no official values for
    the run's shots."""


@dataclass(frozen=True)
class Rule:
    """Settings that apply where `datasets` and `shots` match (None: all of them), and the
    official file(s) they were read from."""

    settings: Mapping[str, Any]  # method setting -> value
    source: str  # "owner/repo path" of the official file(s), with a word on how
    datasets: frozenset[str] | None = None  # vlprompt data-set names; None = every data set
    shots: frozenset[int] | None = None  # None = any shots

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def applies(self, dataset: str, shots: int) -> bool:
        return (self.datasets is None or dataset in self.datasets) and (
            self.shots is None or shots in self.shots
        )

    @property
    def where(self) -> str:
        """Where the rule applies, in words: "all", "imagenet", "dtd, eurosat; 8, 16 shots"."""
        parts = []
        if self.datasets is not None:
            parts.append(", ".join(sorted(self.datasets)))
        if self.shots is not None:
            parts.append(_shots_text(self.shots))
        return "; ".join(parts) or "all"


@dataclass(frozen=True)
class Preset:
    """One official experiment's settings for a method: a table of rules, later rules winning
    where several apply (e.g. ImageNet's epochs after the per-shot epochs)."""

    name: str
    method: str  # the registered method it configures
    description: str  # one line: the experiment and the official config
    rules: tuple[Rule, ...]
    # the shots the official values are given for, where a value depends on the shots
    # (e.g. epochs by shots); None = the values hold for any shots
    shots: tuple[int, ...] | None = None
    notes: tuple[str, ...] = field(default=())  # where the official files are silent or disagree

    def resolve(self, dataset: str, shots: int) -> dict[str, Any]:
        """The preset's method settings for a run on `dataset` with `shots` per class."""
        if self.shots is not None and shots not in self.shots:
            raise PresetError(
                f"preset {self.name!r} has official values for "
                f"{', '.join(map(str, self.shots))} shots only, not {shots} (its epochs depend "
                "on the shots); use one of those or name the settings yourself without a preset"
            )
        settings: dict[str, Any] = {}
        for rule in self.rules:
            if rule.applies(dataset, shots):
                settings.update(rule.settings)
        return settings


def _shots_text(shots: Iterable[int]) -> str:
    n = sorted(shots)
    return f"{', '.join(map(str, n))} shot{'' if n == [1] else 's'}"


# ---- the official files, named once ----------------------------------------------------------
def _dassl(repo_path: str) -> Rule:
    """SGD momentum and weight decay: no config sets them; they are Dassl's defaults."""
    return Rule(
        {"momentum": 0.9, "weight_decay": 5e-4},
        f"{repo_path} (OPTIM.MOMENTUM, OPTIM.WEIGHT_DECAY: the configs leave Dassl's defaults)",
    )


_DASSL = _dassl("KaiyangZhou/Dassl.pytorch dassl/config/defaults.py")  # CoOp, CoCoOp, RPO
_DASSL_FORK = _dassl(  # ProGrad's fork, which KgCoOp vendors too
    "BeierZhu/Prompt-align Dassl.ProGrad.pytorch/dassl/config/defaults.py"
)
_WARMUP = {"warmup_epochs": 1, "warmup_lr": 1e-5}  # every config: 1 constant warm-up epoch
_FEW_SHOT_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}  # CoOp's and ProGrad's READMEs
_FLOWERS_DTD_EUROSAT = frozenset({"oxford_flowers", "dtd", "eurosat"})
_IMAGENET = frozenset({"imagenet"})


def _rpo(config: str, K: int, lr: float) -> tuple[Rule, ...]:
    settings = {"K": K, "optimizer": "sgd", "lr": lr, "epochs": 15, "batch_size": 4, **_WARMUP}
    return (
        Rule(settings, f"mlvlab/RPO configs/trainers/RPO/{config}.yaml"),
        _DASSL,
        Rule(
            {"template": "a photo of a {}."},
            "mlvlab/RPO train.py (DATASET.PROMPT 'a photo of a _.' for every data set; the "
            "configs' CTX_INIT is never read by trainers/rpo.py)",
        ),
    )


def _epochs_by_shots(where: str) -> tuple[Rule, ...]:
    configs = {50: "rn50_ep50", 100: "rn50_ep100", 200: "rn50"}
    by_epochs: dict[int, list[int]] = {}
    for k, epochs in _FEW_SHOT_EPOCHS.items():
        by_epochs.setdefault(epochs, []).append(k)
    return tuple(
        Rule(
            {"epochs": e}, f"{where} ({configs[e]}.yaml at {_shots_text(ks)})", shots=frozenset(ks)
        )
        for e, ks in by_epochs.items()
    )


_PROGRAD_YAML = Rule(
    {
        "optimizer": "sgd",
        "lr": 0.002,
        "batch_size": 32,
        **_WARMUP,
        "gradient_rule": "prograd",
        "prograd_temperature": 1.0,
        "ctx_from_template": True,
    },
    "BeierZhu/Prompt-align ProGrad.public/configs/trainers/ProGrad/rn50*.yaml (LOSS.NAME "
    "prograd, LOSS.T 1.0, CTX_INIT True: the context starts from ProGrad's template)",
)
_COOP_YAML = {"optimizer": "sgd", "lr": 0.002, "batch_size": 32, **_WARMUP}

PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is registered twice")
    PRESETS[preset.name] = preset
    return preset


register_preset(
    Preset(
        "rpo_base2new",
        "rpo",
        "RPO base-to-new (main_K24.yaml): K=24, SGD lr 0.01, 15 epochs, batch 4 (16 shots)",
        _rpo("main_K24", K=24, lr=0.01),
    )
)
register_preset(
    Preset(
        "rpo_dg",
        "rpo",
        "RPO trained on ImageNet for domain generalisation and cross-data-set transfer "
        "(imagenet_k24_ep15.yaml): K=24, lr 0.005, 15 epochs, batch 4",
        _rpo("imagenet_k24_ep15", K=24, lr=0.005),
    )
)
register_preset(
    Preset(
        "rpo_efs",
        "rpo",
        "RPO extreme few-shot base-to-new (main_K4.yaml): K=4, lr 0.01, 15 epochs at 1-16 shots",
        _rpo("main_K4", K=4, lr=0.01),
    )
)

register_preset(
    Preset(
        "prograd_fewshot",
        "prograd",
        "ProGrad few-shot (RN50 in the paper): 16 ctx, epochs 50/100/200 by shots, "
        "lambda 0.8 for Flowers, DTD, EuroSAT at 8/16 shots",
        (
            _PROGRAD_YAML,
            _DASSL_FORK,
            Rule(
                {"n_ctx": 16, "csc": False, "class_token_position": "end", "prograd_lambda": 1.0},
                "BeierZhu/Prompt-align ProGrad.public/scripts/prograd.sh (LAMBDA=1.0) with the "
                "README's arguments `end 16 <shots> False`",
            ),
            *_epochs_by_shots("BeierZhu/Prompt-align ProGrad.public/README.md"),
            Rule(
                {"epochs": 50},
                "not in ProGrad's files; CoOp's rule (KaiyangZhou/CoOp COOP.md: ImageNet uses "
                "*_ep50 for all settings), as ProGrad's README does for its base-to-new ImageNet",
                datasets=_IMAGENET,
            ),
            Rule(
                {"prograd_lambda": 0.8},
                "BeierZhu/Prompt-align ProGrad.public/README.md (8/16-shot Flowers102, DTD, "
                "EuroSAT are run with lambda 0.8)",
                datasets=_FLOWERS_DTD_EUROSAT,
                shots=frozenset({8, 16}),
            ),
        ),
        shots=FEWSHOT_SHOTS,
        notes=(
            "ProGrad's files give no few-shot epochs for ImageNet; CoOp's 50 at every shot is used",
        ),
    )
)
register_preset(
    Preset(
        "prograd_base2new",
        "prograd",
        "ProGrad's own base-to-new script (RN50, 4 shots): 16 ctx, 100 epochs (ImageNet 50), "
        "lambda 1",
        (
            _PROGRAD_YAML,
            _DASSL_FORK,
            Rule(
                {
                    "n_ctx": 16,
                    "csc": False,
                    "class_token_position": "end",
                    "prograd_lambda": 1.0,
                    "epochs": 100,
                },
                "BeierZhu/Prompt-align ProGrad.public/scripts/base2new_train_prograd.sh "
                "(CFG=rn50_ep100, NCTX=16, CSC=False, CTP=end, SHOTS=4, LAMBDA=1.0)",
            ),
            Rule(
                {"epochs": 50},
                "BeierZhu/Prompt-align ProGrad.public/README.md (ImageNet: rn50_ep50)",
                datasets=_IMAGENET,
            ),
        ),
        shots=(4,),
    )
)

register_preset(
    Preset(
        "coop_fewshot",
        "coop",
        "CoOp few-shot (RN50 in the paper): 16 random ctx, end, epochs 50/100/200 by shots, "
        "ImageNet 50",
        (
            Rule(
                _COOP_YAML,
                "KaiyangZhou/CoOp configs/trainers/CoOp/rn50*.yaml (vit_b16*.yaml alike)",
            ),
            _DASSL,
            Rule(
                {"n_ctx": 16, "ctx_init": "", "csc": False, "class_token_position": "end"},
                "KaiyangZhou/CoOp COOP.md and scripts/coop/main.sh (`end 16 <shots> False`; "
                "train.py: CTX_INIT '')",
            ),
            *_epochs_by_shots("KaiyangZhou/CoOp COOP.md"),
            Rule(
                {"epochs": 50},
                "KaiyangZhou/CoOp COOP.md (ImageNet uses *_ep50.yaml for all settings)",
                datasets=_IMAGENET,
            ),
        ),
        shots=FEWSHOT_SHOTS,
    )
)
register_preset(
    Preset(
        "coop_base2new",
        "coop",
        "CoOp as the CoCoOp paper ran it (vit_b16_ctxv1): 4 ctx from 'a photo of a', 200 epochs, "
        "ImageNet 50",
        (
            Rule(
                {**_COOP_YAML, "epochs": 200, "ctx_init": "a photo of a", "n_ctx": 4},
                "KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16_ctxv1.yaml, CoOp's config in "
                "scripts/cocoop/base2new_train.sh (n_ctx: the 4 words of CTX_INIT)",
            ),
            _DASSL,
            Rule(
                {"csc": False, "class_token_position": "end"},
                "KaiyangZhou/CoOp train.py (TRAINER.COOP defaults)",
            ),
            Rule(
                {"epochs": 50},
                "KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml, CoOp's ImageNet "
                "config in scripts/cocoop/base2new_train.sh and xd_train.sh",
                datasets=_IMAGENET,
            ),
        ),
    )
)

register_preset(
    Preset(
        "cocoop",
        "cocoop",
        "CoCoOp base-to-new, cross-data-set and domain generalisation "
        "(vit_b16_c4_ep10_batch1_ctxv1): 4 ctx, lr 0.002, 10 epochs, batch 1",
        (
            Rule(
                {
                    "n_ctx": 4,
                    "ctx_init": "a photo of a",
                    "optimizer": "sgd",
                    "lr": 0.002,
                    "epochs": 10,
                    "batch_size": 1,
                    **_WARMUP,
                },
                "KaiyangZhou/CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml "
                "(scripts/cocoop/base2new_train.sh, xd_train.sh)",
            ),
            _DASSL,
        ),
        notes=(
            "CoCoOp has no official few-shot script; RPO's extreme few-shot script runs CoCoOp "
            "with this same config at 1-16 shots (mlvlab/RPO "
            "scripts/cocoop/efs_base2new_generalization_main.sh)",
        ),
    )
)

register_preset(
    Preset(
        "kgcoop",
        "kgcoop",
        "KgCoOp base-to-new, and its all-class runs alike (vit_b16_ep100_ctxv1): 4 ctx, w=8, "
        "100 epochs, batch 128",
        (
            Rule(
                {"optimizer": "sgd", "lr": 0.002, "epochs": 100, "batch_size": 128, **_WARMUP},
                "htyao89/KgCoOp KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
            ),
            Rule(
                {
                    "n_ctx": 4,
                    "ctx_init": "a photo of a",
                    "csc": False,
                    "class_token_position": "end",
                    "w": 8.0,
                },
                "htyao89/KgCoOp KgCoOp/scripts/base2new_train.sh (NCTX=4, CSC=False, CTP=end), "
                "scripts/run.sh (weight 8.0), trainers/kgcoop.py (CTX_INIT: 'a photo of a')",
            ),
            _DASSL_FORK,
            Rule(
                {"template": "a photo of a {}, a type of texture."},
                "htyao89/KgCoOp KgCoOp/trainers/kgcoop.py (CUSTOM_TEMPLATES: KgCoOp's hand-crafted "
                "prompt differs from CoOp's for DTD only)",
                datasets=frozenset({"dtd"}),
            ),
        ),
        notes=(
            "KgCoOp has no script named for few-shot; scripts/xd_train.sh trains all classes "
            "of the 11 data sets at 4 shots with the base-to-new config unchanged",
        ),
    )
)


register_preset(
    Preset(
        "ivlp_base2new",
        "ivlp",
        "IVLP base-to-new, the PromptSRC paper's IVLP row (vit_b16_c2_ep20_batch4_4+4ctx): "
        "4 + 4 tokens, depth 9 in both towers, SGD lr 0.0025, 20 epochs, batch 4",
        (
            Rule(
                {
                    "n_ctx": 4,
                    "n_ctx_vision": 4,
                    "ctx_init": "a photo of a",
                    "depth_text": 9,
                    "depth_vision": 9,
                    "optimizer": "sgd",
                    "lr": 0.0025,
                    "epochs": 20,
                    "batch_size": 4,
                    **_WARMUP,
                },
                "muzairkhattak/PromptSRC configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml "
                "(scripts/independent-vlp/base2new_train_ivlp.sh, 16 shots)",
            ),
            _DASSL,
        ),
        shots=(16,),
    )
)


register_preset(
    Preset(
        "clip_adapter_fewshot",
        "clip_adapter",
        "CLIP-Adapter few-shot (RN50 in the paper): ratio 0.2, reduction 4, CoOp's recipe, "
        "epochs 50/100/200 by shots, ImageNet 50",
        (
            Rule(
                _COOP_YAML,
                "gaopengcuhk/CLIP-Adapter README.md ('follow CoOp's command') -> "
                "KaiyangZhou/CoOp configs/trainers/CoOp/rn50*.yaml",
            ),
            _DASSL,
            Rule(
                {"residual_ratio": 0.2, "reduction": 4},
                "gaopengcuhk/CLIP-Adapter clip_adapter.py (CustomCLIP: ratio = 0.2, "
                "Adapter(1024, 4))",
            ),
            *_epochs_by_shots("KaiyangZhou/CoOp COOP.md (CLIP-Adapter's README: CoOp's commands)"),
            Rule(
                {"epochs": 50},
                "KaiyangZhou/CoOp COOP.md (ImageNet uses *_ep50.yaml)",
                datasets=_IMAGENET,
            ),
        ),
        shots=FEWSHOT_SHOTS,
        notes=(
            "CLIP-Adapter's repository holds its trainer only (no configs or scripts); its "
            "README says to follow CoOp's commands",
        ),
    )
)


# ---- look-ups ---------------------------------------------------------------------------------
def list_presets(method: str | None = None) -> list[str]:
    """The preset names, sorted; only `method`'s with a method named."""
    return sorted(n for n, p in PRESETS.items() if method is None or p.method == method)


def get_preset(name: str, method: str | None = None) -> Preset:
    """The preset `name`; PresetError (one line, with the choices) for an unknown name or one of
    another method than `method`."""
    if not isinstance(name, str) or name not in PRESETS:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise PresetError(f"unknown preset {name!r}.{hint} Choices: {', '.join(list_presets())}")
    preset = PRESETS[name]
    if method is not None and preset.method != method:
        own = list_presets(method)
        theirs = f"its presets: {', '.join(own)}" if own else "it has no presets"
        raise PresetError(
            f"preset {name!r} is for method {preset.method!r}, not {method!r} ({theirs})"
        )
    return preset


def resolve_preset(name: str | None, method: str, dataset: str, shots: int) -> dict[str, Any]:
    """The method settings preset `name` gives a `method` run on `dataset` with `shots` per
    class ({} for no preset). Errors are PresetError."""
    if name is None:
        return {}
    return get_preset(name, method).resolve(dataset, shots)


def presets_for_methods(
    names: str | Iterable[str] | None, methods: Sequence[str]
) -> dict[str, str]:
    """{method: preset} for a sweep over `methods`: each preset named applies to the runs of its
    own method (so ``rpo_base2new,cocoop`` serves a sweep of both); a preset of no method of the
    sweep, or two for one method, is a PresetError. Methods without one run on their defaults."""
    if names is None:
        return {}
    names = [names] if isinstance(names, str) else list(names)
    out: dict[str, str] = {}
    for name in names:
        preset = get_preset(name)
        if preset.method not in methods:
            raise PresetError(
                f"preset {name!r} is for method {preset.method!r}, which this sweep does not "
                f"run (methods: {', '.join(methods)})"
            )
        if preset.method in out:
            raise PresetError(
                f"presets {out[preset.method]!r} and {name!r} are both for method "
                f"{preset.method!r}; name one per method"
            )
        out[preset.method] = name
    return out


def describe_presets(verbose: bool = False) -> list[str]:
    """`vlprompt presets`: one line per preset; with `verbose`, each rule and its source."""
    lines = []
    for name in list_presets():
        p = PRESETS[name]
        lines.append(f"{name:17s} {p.method:8s} {p.description}")
        if verbose:
            if p.shots is not None:
                lines.append(f"    shots: {', '.join(map(str, p.shots))}")
            for rule in p.rules:
                values = ", ".join(f"{k}={v!r}" for k, v in rule.settings.items())
                lines.append(f"    [{rule.where}] {values}  ({rule.source})")
            for note in p.notes:
                lines.append(f"    note: {note}")
    return lines


def markdown_table() -> str:
    """The table "Preset values and their sources" of docs/reproduce.md: one row per setting
    per rule (a later row wins where both apply)."""
    rows = [
        "| preset | data set / shots | setting | value | official file |",
        "|---|---|---|---|---|",
    ]
    for name in list_presets():
        for rule in PRESETS[name].rules:
            for key, value in rule.settings.items():
                shown = f'"{value}"' if isinstance(value, str) else repr(value)
                source = rule.source.replace("|", "\\|")
                rows.append(f"| `{name}` | {rule.where} | `{key}` | `{shown}` | {source} |")
    return "\n".join(rows)
