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

A paper preset sets method settings only. Two presets apply to every method (`EVERY_METHOD`):
`mini`, the mini world's settings (vlprompt.mini.settings: per-method epochs and batch sizes and
the engine's `crop_min_scale` 1, no random crop), which a run with the shipped tiny CLIP gets
when it names no preset; and `paper`, each method's own defaults (its paper's recipe) with the
engine's defaults. The backbone is the run's: the few-shot tables of CoOp,
ProGrad, CLIP-Adapter and Tip-Adapter are RN50 (`--backbone RN50`), the others ViT-B/16
(vlprompt's default). The values were
read from the official repositories at the commits in `SOURCES`; docs/reproduce.md has the
table of every value and its file (`markdown_table()` writes it), and the places where the
official files are silent or disagree.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from vlprompt.data.templates import IMAGENET_TEMPLATES, TCP_DEFAULT_PROMPT, TCP_PROMPT_TEMPLATES
from vlprompt.errors import PresetError

# the official repositories read, at these commits
SOURCES: dict[str, str] = {
    "mlvlab/RPO": "d770db632307d65cbe40ff4e0fa6dd84b4e61274",
    "BeierZhu/Prompt-align": "1b762036cbe97ecf504e17bb94d89191679e4e6e",
    "KaiyangZhou/CoOp": "ff61507c790454bce7c5052c3ac39e60772f1f89",
    "htyao89/KgCoOp": "c43ccc32c8739f64b165cfa205fcc6c0f5bb5b17",
    "KaiyangZhou/Dassl.pytorch": "c61a1b570ac6333bd50fb5ae06aea59002fb20bb",
    "muzairkhattak/PromptSRC": "bb95c77b634d63488f2cad81ff4a72d53bdd06d5",
    "gaopengcuhk/CLIP-Adapter": "08d07f8b2ecafc6f1479fe636b26d464d7a5574e",
    "muzairkhattak/multimodal-prompt-learning": "69bce21ae8eda80ad6187534b2dce09cf6c59e17",
    "htyao89/Textual-based_Class-aware_prompt_tuning": "bd97bec6bd4901baaf318e9e8f073f618d12066e",
    "MaxZanella/CLIP-LoRA": "358f0d7361f59e66c0b2d0b672a3dafb143a759b",
    "gaopengcuhk/Tip-Adapter": "d0e2d6f8c5feb8b6ce937b757810761f7155d4d5",
    "mrflogs/ICLR24": "560fe211700964c915442ff98dbe47dd09656a35",
    "FereshteShakeri/FewShot-CLIP-Strong-Baseline": "f81054f995b060f8348d20e7306e15889b70c786",
    "jusiro/CLAP": "dbdf4095b3d824546474c725539b9f4efff3ca0e",
    "Koorye/DePT": "d4ff41684bac42da30ebb6898496772dec3157f2",
    "FarinaMatteo/rethinking_fewshot_vlms": "64ac143c7d22803bfeeaadfe42f570220ab29b06",
    "yunncheng/MMRL": "27d8821f6ac135a1d0c8e4c5ed78af14df0cd82e",
}
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)  # the shots of every few-shot table
MINI_PRESET = "mini"  # the mini world's settings: the default with the shipped tiny CLIP
PAPER_PRESET = "paper"  # each method's own defaults
ALL_METHODS = "all"  # the method column of a preset for every method


@dataclass(frozen=True)
class Rule:
    """Settings that apply where `datasets` and `shots` match (None: all of them), and the
    official file(s) they were read from."""

    settings: Mapping[str, Any]  # method setting -> value
    source: str  # "owner/repo path" of the official file(s), with a word on how
    datasets: frozenset[str] | None = None  # vlprompt data-set names; None = every data set
    shots: frozenset[int] | None = None  # None = any shots
    # a word on values the official code fixes per data set without a stated way of choosing
    # them (e.g. MMRL's REG_WEIGHT); `vlprompt presets -v` prints it after the rule
    flag: str = ""

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
                settings.update(copy.deepcopy(dict(rule.settings)))  # lists: the caller's own
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


_MAPLE = "muzairkhattak/multimodal-prompt-learning"


def _maple(config: str, depth: int, lr: float, epochs: int, scripts: str) -> tuple[Rule, ...]:
    settings = {
        "n_ctx": 2,
        "ctx_init": "a photo of a",
        "depth": depth,
        "optimizer": "sgd",
        "lr": lr,
        "epochs": epochs,
        "batch_size": 4,
        **_WARMUP,
    }
    return (
        Rule(settings, f"{_MAPLE} configs/trainers/MaPLe/{config}.yaml ({scripts})"),
        _DASSL,  # docs/INSTALL.md installs KaiyangZhou/Dassl.pytorch
    )


register_preset(
    Preset(
        "maple_base2new",
        "maple",
        "MaPLe base-to-new (vit_b16_c2_ep5_batch4_2ctx): 2 ctx from 'a photo of a', depth 9, "
        "SGD lr 0.0035, 5 epochs, batch 4",
        _maple(
            "vit_b16_c2_ep5_batch4_2ctx",
            depth=9,
            lr=0.0035,
            epochs=5,
            scripts="scripts/maple/base2new_train_maple.sh, 16 shots",
        ),
        shots=(16,),
    )
)
register_preset(
    Preset(
        "maple_xd",
        "maple",
        "MaPLe trained on ImageNet for cross-data-set transfer and domain generalisation "
        "(vit_b16_c2_ep5_batch4_2ctx_cross_datasets): depth 3, lr 0.0026, 2 epochs",
        _maple(
            "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
            depth=3,
            lr=0.0026,
            epochs=2,
            scripts="scripts/maple/xd_train_maple.sh: ImageNet, all classes, 16 shots",
        ),
        shots=(16,),
        notes=(
            "the config is named ep5 but sets MAX_EPOCH 2 (scripts/maple/xd_test_maple.sh "
            "loads epoch 2); docs/RUN.md names it configs/MaPLe/..., the file is under "
            "configs/trainers/MaPLe/",
            "xd_test_maple.sh evaluates the one ImageNet run on the other data sets and on the "
            "four ImageNet variants (docs/RUN.md: cross-data set and domain generalisation)",
        ),
    )
)

_DEPT = "Koorye/DePT"


def _dept(base: str, config: str, settings: dict, lr: float = 0.0035, batch: int = 4,
          ) -> tuple[Rule, ...]:  # fmt: skip
    """DePT on `base` (configs.py `{base}_dept`): the base method's settings as DePT runs them,
    the head's (train.py extend_cfg) and the shared recipe (CoCoOp's: lr 0.002, batch 1)."""
    return (
        Rule(
            {"optimizer": "sgd", "lr": lr, "epochs": 10, "batch_size": batch, **_WARMUP},
            f"{_DEPT} configs/trainers/{config}.yaml (configs.py {base}_dept, 16 shots)",
        ),
        Rule(
            {"feature_rule": "dept", "dept_weight": 0.7, "dept_lr_scale": 6.5},
            f"{_DEPT} train.py extend_cfg (LINEAR_PROBE.WEIGHT 0.7, TEST_TIME_FUSION True, "
            "OPTIM.STAGED_LR with LR_EXP 6.5 for linear_probe and film)",
        ),
        Rule(settings, f"{_DEPT} train.py extend_cfg and configs/trainers/{config}.yaml"),
        _DASSL,
    )


_DEPT_NOTE = (
    "DePT's base-to-new: base classes are classified by the fusion 0.7 x head + 0.3 x the "
    "method's logits, new classes by the method's logits alone (trainers/elp_*.py forward)"
)
register_preset(
    Preset(
        "coop_dept_base2new",
        "coop",
        "CoOp + DePT base-to-new (ExtrasLinearProbeCoOp/vit_b16_ep10_bs4_lr35): 16 random ctx, "
        "head weight 0.7 at 6.5x lr, SGD lr 0.0035, 10 epochs, batch 4",
        _dept(
            "coop",
            "ExtrasLinearProbeCoOp/vit_b16_ep10_bs4_lr35",
            {"n_ctx": 16, "ctx_init": "", "csc": False, "class_token_position": "end"},
        ),
        shots=(16,),
        notes=(_DEPT_NOTE,),
    )
)
register_preset(
    Preset(
        "cocoop_dept_base2new",
        "cocoop",
        "CoCoOp + DePT base-to-new (ExtrasLinearProbeCoCoOp/vit_b16_c4_ep10_batch1_ctxv1): 4 ctx "
        "from 'a photo of a', head weight 0.7 at 6.5x lr, SGD lr 0.002, 10 epochs, batch 1",
        _dept(
            "cocoop",
            "ExtrasLinearProbeCoCoOp/vit_b16_c4_ep10_batch1_ctxv1",
            {"n_ctx": 4, "ctx_init": "a photo of a"},
            lr=0.002,
            batch=1,
        ),
        shots=(16,),
        notes=(_DEPT_NOTE,),
    )
)
register_preset(
    Preset(
        "kgcoop_dept_base2new",
        "kgcoop",
        "KgCoOp + DePT base-to-new (ExtrasLinearProbeKgCoOp/vit_b16_ep10_ctxv1_bs4_lr35): 4 ctx, "
        "w=2, head weight 0.7 at 6.5x lr, SGD lr 0.0035, 10 epochs, batch 4",
        (
            *_dept(
                "kgcoop",
                "ExtrasLinearProbeKgCoOp/vit_b16_ep10_ctxv1_bs4_lr35",
                {
                    "n_ctx": 4,
                    "ctx_init": "a photo of a",
                    "csc": False,
                    "class_token_position": "end",
                    "w": 2.0,
                },
            ),
            Rule(
                {"template": "a photo of a {}, a type of texture."},
                f"{_DEPT} trainers/kgcoop.py (CUSTOM_TEMPLATES, KgCoOp's: differs from CoOp's "
                "for DTD only)",
                datasets=frozenset({"dtd"}),
            ),
        ),
        shots=(16,),
        notes=(_DEPT_NOTE,),
    )
)
register_preset(
    Preset(
        "maple_dept_base2new",
        "maple",
        "MaPLe + DePT base-to-new (ExtrasLinearProbeMaPLe/vit_b16_c2_ep10_batch4_2ctx): 2 ctx, "
        "depth 9, head weight 0.7 at 6.5x lr, SGD lr 0.0035, 10 epochs, batch 4",
        _dept(
            "maple",
            "ExtrasLinearProbeMaPLe/vit_b16_c2_ep10_batch4_2ctx",
            {"n_ctx": 2, "ctx_init": "a photo of a", "depth": 9},
        ),
        shots=(16,),
        notes=(_DEPT_NOTE,),
    )
)

_DEPT_XD_NOTE = (
    "parallel_runner.py's mode 'xd' trains one ImageNet run (all classes, 16 shots) with the "
    "base-to-new config unchanged and tests it on the other data sets and the ImageNet "
    "variants: ImageNet's own test gets the fusion, the other data sets the method's logits"
)
_TITLES = {"coop": "CoOp", "kgcoop": "KgCoOp", "maple": "MaPLe"}
for _base, _config, _settings in (
    ("coop", "ExtrasLinearProbeCoOp/vit_b16_ep10_bs4_lr35",
     {"n_ctx": 16, "ctx_init": "", "csc": False, "class_token_position": "end"}),
    ("kgcoop", "ExtrasLinearProbeKgCoOp/vit_b16_ep10_ctxv1_bs4_lr35",
     {"n_ctx": 4, "ctx_init": "a photo of a", "csc": False, "class_token_position": "end",
      "w": 2.0}),
    ("maple", "ExtrasLinearProbeMaPLe/vit_b16_c2_ep10_batch4_2ctx",
     {"n_ctx": 2, "ctx_init": "a photo of a", "depth": 9}),
):  # fmt: skip
    register_preset(
        Preset(
            f"{_base}_dept_xd",
            _base,
            f"{_TITLES[_base]} + DePT trained on ImageNet for cross-data-set transfer and domain "
            f"generalisation ({_config.split('/')[1]}, the base-to-new values)",
            _dept(_base, _config, _settings),
            shots=(16,),
            notes=(_DEPT_XD_NOTE,),
        )
    )

_PROMPTSRC = "muzairkhattak/PromptSRC"
_PROMPTSRC_NOTE = (
    "the frozen text target's templates (trainers/promptsrc.py: the 60 IMAGENET_TEMPLATES for "
    "every data set) are the method's default `templates`; the preset leaves them"
)


def _promptsrc(
    config: str, depth: int, epochs: int, gpa_mean: float, gpa_std: float, scripts: str
) -> tuple[Rule, ...]:
    settings = {
        "n_ctx": 4,
        "n_ctx_vision": 4,
        "ctx_init": "a photo of a",
        "depth_text": depth,
        "depth_vision": depth,
        "text_loss_weight": 25.0,
        "image_loss_weight": 10.0,
        "gpa_mean": gpa_mean,
        "gpa_std": gpa_std,
        "optimizer": "sgd",
        "lr": 0.0025,
        "epochs": epochs,
        "batch_size": 4,
        **_WARMUP,
    }
    return (
        Rule(settings, f"{_PROMPTSRC} configs/trainers/PromptSRC/{config}.yaml ({scripts})"),
        _DASSL,  # docs/INSTALL.md installs KaiyangZhou/Dassl.pytorch
    )


register_preset(
    Preset(
        "promptsrc_base2new",
        "promptsrc",
        "PromptSRC base-to-new (vit_b16_c2_ep20_batch4_4+4ctx): 4 + 4 tokens, depth 9/9, "
        "weights 25/10, GPA mean 15 std 1, SGD lr 0.0025, 20 epochs, batch 4",
        _promptsrc(
            "vit_b16_c2_ep20_batch4_4+4ctx",
            depth=9,
            epochs=20,
            gpa_mean=15.0,
            gpa_std=1.0,
            scripts="scripts/promptsrc/base2new_train.sh, 16 shots",
        ),
        shots=(16,),
        notes=(_PROMPTSRC_NOTE,),
    )
)
register_preset(
    Preset(
        "promptsrc_fewshot",
        "promptsrc",
        "PromptSRC few-shot, all classes (vit_b16_c2_ep50_batch4_4+4ctx_few_shot): 50 epochs, "
        "GPA 30/30, and 45/5 for Cars, Flowers, Aircraft, DTD, EuroSAT",
        (
            *_promptsrc(
                "vit_b16_c2_ep50_batch4_4+4ctx_few_shot",
                depth=9,
                epochs=50,
                gpa_mean=30.0,
                gpa_std=30.0,
                scripts="scripts/promptsrc/few_shot.sh; docs/TRAIN.md: K = 1, 2, 4, 8, 16; "
                "GPA 30/30 'for ImageNet, Caltech101, OxfordPets, Food101, UCF101 and SUN397'",
            ),
            Rule(
                {"gpa_mean": 45.0, "gpa_std": 5.0},
                f"{_PROMPTSRC} configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot"
                ".yaml (its commented-out GPA_MEAN 45, GPA_STD 5: 'for StanfordCars, Flowers102, "
                "FGVCAircraft, DTD and EuroSAT')",
                datasets=frozenset(
                    {"stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat"}
                ),
            ),
        ),
        shots=FEWSHOT_SHOTS,
        notes=(
            "scripts/promptsrc/few_shot.sh runs the one config for every data set; GPA 45/5 is "
            "a commented-out alternative in that config, whose comments name the data sets of "
            "each, so the official runs edit the config by hand: the preset applies it per data "
            "set",
            _PROMPTSRC_NOTE,
        ),
    )
)
register_preset(
    Preset(
        "promptsrc_xd",
        "promptsrc",
        "PromptSRC trained on ImageNet for cross-data-set transfer and domain generalisation "
        "(vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets): depth 3/3, GPA mean 6 std 10, 20 epochs",
        _promptsrc(
            "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
            depth=3,
            epochs=20,
            gpa_mean=6.0,
            gpa_std=10.0,
            scripts="docs/TRAIN.md, scripts/promptsrc/reproduce_xd.sh; ImageNet, all classes, "
            "16 shots",
        ),
        shots=(16,),
        notes=(
            "scripts/promptsrc/xd_train.sh and xd_test.sh name "
            "CFG=vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets, a config the repository does not "
            "have; docs/TRAIN.md (cross-data set and domain generalisation) and reproduce_xd.sh "
            "name vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml (20 epochs; xd_test.sh and "
            "reproduce_xd.sh load epoch 20), which the preset is",
            _PROMPTSRC_NOTE,
        ),
    )
)

_MMRL = "yunncheng/MMRL"
_MMRL_REP_LAYERS = [6, 7, 8, 9, 10, 11, 12]
# trainers/config.py get_dataset_specified_config("MMRL"): per data set, for every task
_MMRL_REG_WEIGHT = {
    "stanford_cars": 7.0,
    "fgvc_aircraft": 6.0,
    "sun397": 6.0,
    "dtd": 6.0,
    "food101": 5.0,
    "oxford_flowers": 4.0,
    "ucf101": 3.0,
    "imagenet": 0.5,
    "caltech101": 0.5,
    "oxford_pets": 0.2,
    "eurosat": 0.01,
}
_MMRL_FLAG = "per-data-set constant: the official value, no stated validation protocol"


def _mmrl_yaml(epochs: int, batch: int, reg_weight: float, **extra) -> dict:
    return {
        "n_rep_tokens": 5,
        "rep_dim": 512,
        "rep_layers": _MMRL_REP_LAYERS,
        "alpha": 0.7,
        "reg_weight": reg_weight,
        "optimizer": "adamw",
        "lr": 0.001,
        "epochs": epochs,
        "batch_size": batch,
        **_WARMUP,
        **extra,
    }


def _mmrl_per_dataset() -> tuple[Rule, ...]:
    """trainers/config.py's REG_WEIGHT per data set and EuroSAT's REP_DIM 2048, flagged."""
    source = f"{_MMRL} trainers/config.py (get_dataset_specified_config, every task)"
    by_value: dict[float, list[str]] = {}
    for name, value in _MMRL_REG_WEIGHT.items():
        by_value.setdefault(value, []).append(name)
    rules = [
        Rule({"reg_weight": v}, source, datasets=frozenset(names), flag=_MMRL_FLAG)
        for v, names in by_value.items()
    ]
    rules.append(Rule({"rep_dim": 2048}, source, datasets=frozenset({"eurosat"}), flag=_MMRL_FLAG))
    return tuple(rules)


_MMRL_DASSL = _dassl("KaiyangZhou/Dassl.pytorch dassl/config/defaults.py (AdamW's weight decay)")
_MMRL_NOTES = (
    "the official configs crop with RandomResizedCrop scale (0.5, 1) (INPUT.RRCROP_SCALE), an "
    "engine setting here: add --crop-min-scale 0.5",
    "the official configs run PREC amp (fp16 autocast); add --precision fp16 or bf16 on a GPU",
)
register_preset(
    Preset(
        "mmrl_base2new",
        "mmrl",
        "MMRL base-to-new (vit_b16; ImageNet vit_b16_imagenet): 5 tokens in blocks 6-12, AdamW "
        "lr 1e-3, 10 epochs, batch 4 (ImageNet 5, batch 32), reg_weight per data set",
        (
            Rule(
                _mmrl_yaml(10, 4, 1.0),
                f"{_MMRL} configs/trainers/MMRL/vit_b16.yaml (scripts/mmrl/base2new_train.sh, "
                "16 shots)",
            ),
            Rule(
                {"epochs": 5, "batch_size": 32},
                f"{_MMRL} configs/trainers/MMRL/vit_b16_imagenet.yaml (base2new_train.sh picks "
                "it for imagenet)",
                datasets=_IMAGENET,
            ),
            *_mmrl_per_dataset(),
            _MMRL_DASSL,
        ),
        shots=(16,),
        notes=_MMRL_NOTES,
    )
)
register_preset(
    Preset(
        "mmrl_fewshot",
        "mmrl",
        "MMRL few-shot, all classes (vit_b16_few_shot; ImageNet vit_b16_imagenet): 50 epochs, "
        "batch 32 (ImageNet 5), reg_weight per data set",
        (
            Rule(
                _mmrl_yaml(50, 32, 0.5),
                f"{_MMRL} configs/trainers/MMRL/vit_b16_few_shot.yaml (scripts/mmrl/few_shot.sh,"
                " K = 1, 2, 4, 8, 16)",
            ),
            Rule(
                {"epochs": 5, "batch_size": 32, "reg_weight": 1.0},
                f"{_MMRL} configs/trainers/MMRL/vit_b16_imagenet.yaml (few_shot.sh picks it for "
                "imagenet)",
                datasets=_IMAGENET,
            ),
            *_mmrl_per_dataset(),
            _MMRL_DASSL,
        ),
        shots=FEWSHOT_SHOTS,
        notes=(
            "trainers/config.py's per-data-set REG_WEIGHT overrides the YAML's 0.5 (1.0 for "
            "ImageNet) for every data set it names",
            *_MMRL_NOTES,
        ),
    )
)
register_preset(
    Preset(
        "mmrl_xd",
        "mmrl",
        "MMRL cross-data-set / domain generalisation (vit_b16_cross_datasets): trained on all "
        "ImageNet classes, 1 epoch, batch 32, no warm-up, reg_weight 0.2",
        (
            Rule(
                _mmrl_yaml(1, 32, 0.2, warmup_epochs=0),
                f"{_MMRL} configs/trainers/MMRL/vit_b16_cross_datasets.yaml and "
                "scripts/mmrl/cross_datasets_train.sh (REG_WEIGHT 0.2 on the command line, after "
                "trainers/config.py's ImageNet 0.5)",
            ),
            _MMRL_DASSL,
        ),
        shots=(16,),
        notes=(
            "cross_datasets_test.sh evaluates the ImageNet run on the other data sets with "
            "REP_DIM 512 (the trained one); its TASK CD takes the fusion on ImageNet and the "
            "class-token logits elsewhere, which inference='auto' does by class list (ImageNet-V2"
            " and -Sketch share ImageNet's classes: set inference='class_token' for them)",
            *_MMRL_NOTES,
        ),
    )
)


_TCP = "htyao89/Textual-based_Class-aware_prompt_tuning"


def _tcp_prompt(template: str, *datasets: str) -> Rule:
    return Rule(
        {"prompt_template": template},
        f"{_TCP} trainers/tcp.py (CUSTOM_TEMPLATES, the text after the 4 context vectors)",
        datasets=frozenset(datasets),
    )


register_preset(
    Preset(
        "tcp",
        "tcp",
        "TCP base-to-new (vit_b16_ep100_ctxv1): 4 random ctx, 4 class-aware tokens at block 8, "
        "weight 8, Adam (eps 1e-3) lr 0.002, batch 32, 50 epochs (ImageNet, SUN397 25)",
        (
            Rule(
                {
                    "optimizer": "adam",
                    "lr": 0.002,
                    "epochs": 50,
                    "batch_size": 32,
                    **_WARMUP,
                    "ctx_init": "",
                },
                f"{_TCP} configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml (OPTIM.NAME 'adam'; "
                "CTX_INIT False: N(0, 0.02^2) context)",
            ),
            Rule(
                {"adam_eps": 1e-3},
                f"{_TCP} README.md (its edit of Dassl's optimizer.py: Adam eps 1e-3)",
            ),
            Rule(
                {"weight_decay": 5e-4},
                "KaiyangZhou/Dassl.pytorch dassl/config/defaults.py (OPTIM.WEIGHT_DECAY: the "
                "config leaves Dassl's default; official Adam adds it to the gradient as L2)",
            ),
            Rule(
                {"n_ctx": 4},
                f"{_TCP} scripts/base2new_train.sh (NCTX=4, CSC=False, CTP=end, SHOTS=16)",
            ),
            Rule(
                {"n_class_tokens": 4, "inject_layer": 8, "kg_weight": 8.0},
                f"{_TCP} trainers/tcp.py (meta_net output 4*ctx_dim; loss CE + 8.0*score) and "
                "trainers/clip_text/model.py (layers=[8])",
            ),
            Rule(
                {"prompt_template": TCP_DEFAULT_PROMPT},
                f"{_TCP} trainers/tcp.py (CUSTOM_TEMPLATES: 'X X X X {{}}.' for EuroSAT, "
                "SUN397, Caltech101; 'a photo of a {}.' for ImageNet, whose first 4 tokens the "
                "context replaces)",
            ),
            *(_tcp_prompt(template, name) for name, template in TCP_PROMPT_TEMPLATES.items()),
            Rule(
                {"epochs": 25},
                f"{_TCP} train.py (setup_cfg: MAX_EPOCH 25 for ImageNet and SUN397; "
                "scripts/base2new_train.sh loads epoch 25 for them)",
                datasets=frozenset({"imagenet", "sun397"}),
            ),
        ),
        shots=(16,),
        notes=(
            "optimizer: the official Adam is Dassl's (betas 0.9/0.999, weight decay 5e-4 as L2 in "
            "the gradient) with eps 1e-3 by the README's edit of Dassl's optimizer.py; vlprompt's "
            "'adam' is torch's Adam, which adds the weight decay the same way",
            "scripts/base2new_train.sh passes WEIGHT=1.0 as TRAINER.COOP.W; that is not the loss "
            "weight: clip_text/model.py overwrites it with weights=[1.0] (a plain replacement "
            "of the states by the class-aware tokens), and the loss weight 8.0 is hard-coded in "
            "trainers/tcp.py",
            "the config is named ep100 but sets MAX_EPOCH 50; train.py forces 25 for ImageNet "
            "and SUN397 after every other setting (command-line ones too)",
            "CUSTOM_TEMPLATES of UCF101 and ImageNet have no X placeholders: the 4 context "
            "vectors replace 'a photo of a', leaving 'person doing {}.' and '{}.'; StanfordCars' "
            "has no final period",
            "the hand-crafted prompts of the meta-net's input (CUSTOM_TEMPLATES_ori) are the tcp "
            "method's own per-data-set `template`; the preset leaves them",
            "the README names base2new_train_main.sh; the repository's script is "
            "scripts/base2new_train.sh (all 11 data sets, seeds 1-3)",
        ),
    )
)


# ---- CLIP-LoRA: one recipe for every data set; only the iterations follow the shots ----------
_CLIP_LORA_N_ITERS = 500  # run_utils.py --n_iters; lora.py: total_iters = n_iters * shots

register_preset(
    Preset(
        "clip_lora_fewshot",
        "clip_lora",
        "CLIP-LoRA few-shot (ViT-B/16 in the paper): rank 2, alpha 1, dropout 0.25 on q, k, v of "
        "every block of both towers, AdamW lr 2e-4, batch 32, 500 x shots iterations, per-step "
        "cosine to 1e-6",
        (
            Rule(
                {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 1e-2, "batch_size": 32},
                "MaxZanella/CLIP-LoRA run_utils.py (--lr 2e-4, --batch_size 32) and lora.py "
                "(AdamW weight_decay=1e-2, betas=(0.9, 0.999): torch's default betas, which "
                "vlprompt's AdamW keeps)",
            ),
            Rule(
                {"warmup_epochs": 0, "lr_schedule": "step", "min_lr": 1e-6},
                "MaxZanella/CLIP-LoRA lora.py (CosineAnnealingLR(optimizer, total_iters, "
                "eta_min=1e-6) stepped after every iteration; no warm-up)",
            ),
            Rule(
                {
                    "rank": 2,
                    "alpha": 1.0,
                    "dropout": 0.25,
                    "encoder": "both",
                    "position": "all",
                    "params": ["q", "k", "v"],
                },
                "MaxZanella/CLIP-LoRA run_utils.py (--r 2, --alpha 1, --dropout_rate 0.25, "
                "--encoder both, --position all, --params q k v)",
            ),
            Rule(
                {"template": "a photo of a {}."},
                "MaxZanella/CLIP-LoRA datasets/*.py (template = ['a photo of a {}.'] in every "
                "data set, ImageNet included: the CoOp templates are commented out) and lora.py "
                "(dataset.template[0] in training and in the final test)",
            ),
            Rule(
                {"logit_scale": 100.0},
                "MaxZanella/CLIP-LoRA main.py (logit_scale = 100)",
            ),
            *(
                Rule(
                    {"iterations": _CLIP_LORA_N_ITERS * k},
                    "MaxZanella/CLIP-LoRA lora.py (total_iters = args.n_iters * args.shots) with "
                    f"run_utils.py --n_iters 500, at {_shots_text([k])}",
                    shots=frozenset({k}),
                )
                for k in FEWSHOT_SHOTS
            ),
        ),
        shots=FEWSHOT_SHOTS,
        notes=(
            "CLIP-LoRA's iterations are 500 x shots at any shots (lora.py); the preset names "
            "the paper's 1, 2, 4, 8, 16 (name `iterations` yourself for other shots)",
            "the official never validates (lora.py VALIDATION = False): the model after the "
            "last iteration is tested, as vlprompt's last-epoch evaluation does",
            "the official loader keeps the last incomplete batch (datasets/utils.py "
            "build_data_loader: drop_last=False; ImageNet's torch DataLoader likewise); "
            "vlprompt's engine drops it where a data set holds a full batch (Dassl's rule): "
            "the same iterations, a few images fewer per epoch",
            "the README runs one seed (--seed 1); the repository gives no seed list",
        ),
    )
)


# ---- 2SFS: one recipe for every data set, backbone and setting; the iterations follow the shots --
_2SFS = "FarinaMatteo/rethinking_fewshot_vlms"
_2SFS_N_ITERS = 300  # main.py --n_iters (M in the paper); fs/twostage.py: n_iters * shots


def _two_stage_rules() -> tuple[Rule, ...]:
    return (
        Rule(
            {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 1e-2, "batch_size": 32},
            f"{_2SFS} main.py (--lr 2e-4, --wd 1e-2, --batch_size 32) and fs/twostage.py (AdamW "
            "betas=(0.9, 0.999) in both stages: torch's default betas, which vlprompt's AdamW "
            "keeps)",
        ),
        Rule(
            {"warmup_epochs": 0, "lr_schedule": "step", "min_lr": 1e-6},
            f"{_2SFS} fs/twostage.py (CosineAnnealingLR(optimizer, stage steps, eta_min=1e-6) "
            "per stage, stepped after every iteration; a fresh AdamW and schedule for the head)",
        ),
        Rule(
            {"stage1_fraction": 0.6, "towers": "both"},
            f"{_2SFS} main.py (--n_iters_frac 0.6, --peft ln, --ln_modality both, "
            "--ln_vision_start 0, --ln_text_start 0)",
        ),
        Rule(
            {"template": "a photo of a {}."},
            f"{_2SFS} datasets/*.py (template = ['a photo of a {{}}.'] in every data set, the "
            "CoOp templates commented out) and fs/twostage.py (dataset.template[0] in both "
            "stages and at test)",
        ),
        *(
            Rule(
                {"iterations": _2SFS_N_ITERS * k},
                f"{_2SFS} fs/twostage.py (total_iters = args.n_iters * args.shots) with main.py "
                f"--n_iters 300, at {_shots_text([k])}",
                shots=frozenset({k}),
            )
            for k in FEWSHOT_SHOTS
        ),
    )


_2SFS_NOTES = (
    "one hyper-parameter set for every data set, backbone and shot count (main.py defaults; "
    "README: 'default and fixed hyperparameters'); 300 x shots iterations at any shots, the "
    "preset names the released splits' 1, 2, 4, 8, 16 (name `iterations` yourself for others)",
    "the official never validates: the model after the last iteration is tested, as vlprompt's "
    "last-epoch evaluation does",
    "the official splits are released as .jsonl files (scripts/download_splits.sh, seeds 1-3); "
    "vlprompt samples its own with CoOp's rule, so the shots differ from the official ones",
    "the official loader keeps the last incomplete batch (datasets/utils.py build_data_loader: "
    "drop_last=False); vlprompt's engine drops it where a data set holds a full batch (Dassl's "
    "rule): the same iterations, a few images fewer per epoch",
)

register_preset(
    Preset(
        "two_stage_fewshot",
        "two_stage",
        "2SFS all-to-all few-shot (main.py --setting standard): LayerNorms of both towers for "
        "60% of 300 x shots iterations, then a linear head; AdamW lr 2e-4, batch 32",
        _two_stage_rules(),
        shots=FEWSHOT_SHOTS,
        notes=_2SFS_NOTES,
    )
)
register_preset(
    Preset(
        "two_stage_base2new",
        "two_stage",
        "2SFS base-to-new (main.py --setting base2new): the few-shot recipe on the base half; "
        "new classes by the tuned text encoder (selective inference)",
        _two_stage_rules(),
        shots=FEWSHOT_SHOTS,
        notes=(
            *_2SFS_NOTES,
            "fs/twostage.py evaluate_selective_inference: base test classes read the head's rows, "
            "new ones the tuned text encoder's features of the template (two separate 'heads'; "
            "summaries say so under base-to-new tables)",
        ),
    )
)


# ---- Skip Tuning -------------------------------------------------------------------------------
_SKIP = "Koorye/SkipTuning"
_SKIP_QUARTER = frozenset({"imagenet", "sun397", "food101"})  # MAX_EPOCH / 4 in the trainer
_SKIP_NOTES = (
    "the prompt of each data set is trainers/baselines/ft_clip.py's _CUSTOM_TEMPLATES, which the "
    "method gives every run by default (SkipTuning.template_for); the preset leaves it",
    "for 4 or more shots the official FeatureLoader ('batch_random') fills each batch with "
    "images of one class; vlprompt's engine draws batches over all classes",
    "the official trains in pure fp16 (TRAINER.PREC 'fp16'); vlprompt keeps fp32 weights and "
    "the run's autocast precision",
)


def _skiptuning(config: str, epochs: int, lrs: dict[str, float], scripts: str) -> tuple[Rule, ...]:
    yaml = f"{_SKIP} configs/trainers/SkipTuning/{config}.yaml ({scripts})"
    return (
        Rule({"optimizer": "sgd", "batch_size": 4, "epochs": epochs, **lrs}, yaml),
        _DASSL,  # README: KaiyangZhou/Dassl.pytorch
        Rule(
            {"start_layer": 6, "top_ratio": 0.5, "max_top": 50, "skip_lambda": 0.3},
            f"{_SKIP} train.py (TRAINER.SKIP: START_LAYER 6, TOP_RATIO 0.5, MAX_TOP 50, "
            "LAMBDA 0.3; no config overrides them)",
        ),
        Rule(
            {"epochs": epochs // 4},
            f"{_SKIP} trainers/skip_tuning.py (SkipTuning.__init__: MAX_EPOCH / 4 for ImageNet, "
            "SUN397 and Food101)",
            datasets=_SKIP_QUARTER,
        ),
    )


register_preset(
    Preset(
        "skiptuning_base2new",
        "skiptuning",
        "Skip Tuning base-to-new (vit_b16_bs4): blocks 6-11 of both towers tuned, top ratio 0.5, "
        "lambda 0.3, SGD lr 2e-5 (image side 5e-6), 20 epochs (5 for ImageNet, SUN397, Food101), "
        "batch 4",
        _skiptuning(
            "vit_b16_bs4",
            20,
            {"lr": 2e-5, "image_lr": 5e-6, "warmup_epochs": 1, "warmup_lr": 1e-6},
            "configs.py skip_tuning: base-to-new, 16 shots, seeds 1-3; STAGED_LR with NEW_LR "
            "for NEW_LAYERS ['image_encoder'] (train.py)",
        ),
        shots=(16,),
        notes=_SKIP_NOTES,
    )
)
register_preset(
    Preset(
        "skiptuning_xd",
        "skiptuning",
        "Skip Tuning trained on ImageNet for cross-data-set transfer and domain generalisation "
        "(vit_b16_bs4_cross_datasets): SGD lr 1e-5 (image side 1e-6), warm-up 1e-8, 5 epochs",
        _skiptuning(
            "vit_b16_bs4_cross_datasets",
            20,
            {"lr": 1e-5, "image_lr": 1e-6, "warmup_epochs": 1, "warmup_lr": 1e-8},
            "configs.py skip_tuning_xd: ImageNet, all classes, 16 shots",
        ),
        shots=(16,),
        notes=_SKIP_NOTES,
    )
)
register_preset(
    Preset(
        "skiptuning_fewshot",
        "skiptuning",
        "Skip Tuning few-shot, all classes (vit_b16_bs4_few_shot): SGD lr 1e-5 for both sides, "
        "40 epochs (10 for ImageNet, SUN397, Food101), no warm-up, batch 4",
        _skiptuning(
            "vit_b16_bs4_few_shot",
            40,
            {"lr": 1e-5, "image_lr": 1e-5, "warmup_epochs": 0},
            "configs.py skip_tuning_all: shots 1, 2, 4, 8, 16; no STAGED_LR, so one learning "
            "rate for both sides",
        ),
        shots=FEWSHOT_SHOTS,
        notes=(
            *_SKIP_NOTES,
            "below 4 shots the official batches are drawn over all classes ('random'), as here",
        ),
    )
)

# ---- Tip-Adapter / Tip-Adapter-F: one config per data set, for every number of shots ----------
# CLIP's 7 ImageNet templates: the official datasets/imagenet.py's `imagenet_templates` are
# vlprompt's IMAGENET_TEMPLATES, in the same order
_TIP_IMAGENET_TEMPLATES = tuple(IMAGENET_TEMPLATES)
# vlprompt name: (official name: configs/<name>.yaml and datasets/<name>.py, init_alpha,
# search_scale (beta, alpha), the data set's template; None = ImageNet's ensemble)
_TIP_CONFIGS: dict[str, tuple[str, float, tuple[float, float], str | None]] = {
    "caltech101": ("caltech101", 3.0, (12.0, 5.0), "a photo of a {}."),
    "dtd": ("dtd", 2.0, (13.0, 13.0), "{} texture."),
    "eurosat": ("eurosat", 2.0, (12.0, 10.0), "a centered satellite photo of {}."),
    "fgvc_aircraft": ("fgvc", 5.0, (30.0, 30.0), "a photo of a {}, a type of aircraft."),
    "food101": ("food101", 1.17, (10.0, 10.0), "a photo of {}, a type of food."),
    "imagenet": ("imagenet", 1.17, (7.0, 3.0), None),
    "oxford_flowers": ("oxford_flowers", 10.0, (50.0, 50.0), "a photo of a {}, a type of flower."),
    "oxford_pets": ("oxford_pets", 1.17, (7.0, 3.0), "a photo of a {}, a type of pet."),
    "stanford_cars": ("stanford_cars", 3.0, (20.0, 10.0), "a photo of a {}."),
    "sun397": ("sun397", 1.17, (12.0, 10.0), "a photo of a {}."),
    "ucf101": ("ucf101", 3.0, (7.0, 3.0), "a photo of a person doing {}."),
}


def _tip_adapter_rules() -> tuple[Rule, ...]:
    """The training-free settings, shared by Tip-Adapter and Tip-Adapter-F: the keys every
    config has alike, the cache's augmentation, and each data set's alpha, beta grid and
    template(s)."""
    rules = [
        Rule(
            {"init_beta": 1.0, "search_hp": True, "search_step": [200, 20], "augment_epoch": 10},
            "gaopengcuhk/Tip-Adapter configs/*.yaml (init_beta 1, search_hp True, search_step "
            "[200, 20], augment_epoch 10 in every config)",
        ),
        Rule(
            {"cache_crop_min_scale": 0.5},
            "gaopengcuhk/Tip-Adapter main.py and datasets/imagenet.py (the cache's and -F's "
            "views: RandomResizedCrop(224, scale=(0.5, 1), bicubic) + a flip)",
        ),
    ]
    for name, (official, init_alpha, search_scale, template) in _TIP_CONFIGS.items():
        settings: dict[str, Any] = {"init_alpha": init_alpha, "search_scale": list(search_scale)}
        if template is None:
            settings["templates"] = list(_TIP_IMAGENET_TEMPLATES)
            text = "imagenet_templates: CLIP's 7, ensembled by utils.py clip_classifier"
        else:
            settings["template"] = template
            text = "template"
        rules.append(
            Rule(
                settings,
                f"gaopengcuhk/Tip-Adapter configs/{official}.yaml (init_alpha, search_scale); "
                f"datasets/{official}.py ({text})",
                datasets=frozenset({name}),
            )
        )
    return tuple(rules)


register_preset(
    Preset(
        "tip_adapter",
        "tip_adapter",
        "Tip-Adapter few-shot, training-free (RN50 in the paper): the cache of 10 augmented "
        "views, alpha / beta searched per data set (configs/<data set>.yaml)",
        _tip_adapter_rules(),
        notes=(
            "the configs say shots: 16; the README: their values are the best overall for 1 to "
            "16 shots (set the shots in the YAML), so the preset holds at any shots",
            "a data set without an official config (the ImageNet variants, the mini world, "
            "your own) keeps the method's defaults, configs/imagenet.yaml's values",
            "the official searches alpha / beta on the whole val split (main.py: dataset.val, "
            "not subsampled) and on the test set for ImageNet (main_imagenet.py); vlprompt "
            "searches the whole val split too (val_split 'whole'; ImageNet's val split is its "
            "test set, as CoOp's)",
            "main.py fixes seed 1 (random.seed(1), torch.manual_seed(1)): one few-shot sample; "
            "the repository gives no seed list",
        ),
    )
)
register_preset(
    Preset(
        "tip_adapter_f",
        "tip_adapter_f",
        "Tip-Adapter-F few-shot (RN50 in the paper): Tip-Adapter's per-data-set config, keys "
        "fine-tuned by AdamW lr 0.001 (eps 1e-4), batch 256, 20 epochs (EuroSAT 100)",
        (
            *_tip_adapter_rules(),
            Rule(
                {"lr": 0.001, "epochs": 20},
                "gaopengcuhk/Tip-Adapter configs/*.yaml (lr 0.001, train_epoch 20)",
            ),
            Rule(
                {
                    "optimizer": "adamw",
                    "adam_eps": 1e-4,
                    "weight_decay": 0.01,
                    "batch_size": 256,
                    "warmup_epochs": 0,
                    "lr_schedule": "step",
                    "min_lr": 0.0,
                },
                "gaopengcuhk/Tip-Adapter main.py and main_imagenet.py run_tip_adapter_F "
                "(AdamW(lr, eps=1e-4): torch's weight decay 0.01; CosineAnnealingLR(train_epoch "
                "* len(train_loader_F)) stepped every iteration, eta_min 0, no warm-up; "
                "train_loader_F: batch 256, shuffled)",
            ),
            Rule(
                {"epochs": 100},
                "gaopengcuhk/Tip-Adapter configs/eurosat.yaml (train_epoch 100)",
                datasets=frozenset({"eurosat"}),
            ),
        ),
        notes=(
            "the configs say shots: 16; the README: their values are the best overall for 1 to "
            "16 shots, so the preset holds at any shots",
            "a data set without an official config keeps the method's defaults, "
            "configs/imagenet.yaml's values",
            "the official keeps the keys of the epoch best on the test set (main.py, "
            "main_imagenet.py; main.py reports max(that accuracy, the one after the search)); "
            "vlprompt chooses the epoch on the val split and tests once",
            "the official searches alpha / beta on the whole val split (on the test set for "
            "ImageNet); vlprompt on the whole val split too (val_split 'whole'; ImageNet's val "
            "split is its test set, as CoOp's)",
            "main.py fixes seed 1; the repository gives no seed list",
        ),
    )
)


# ---- GDA, LP++, CLAP: few-shot baselines on frozen features -------------------------------------
def _per_dataset_templates(
    repo: str, imagenet: tuple[str, ...], imagenet_source: str
) -> tuple[Rule, ...]:
    """Each data set's template (datasets/<name>.py: Tip-Adapter's table, `_TIP_CONFIGS`) and
    ImageNet's ensemble `imagenet`."""
    rules = []
    for name, (official, _, _, template) in _TIP_CONFIGS.items():
        if template is None:
            settings: dict[str, Any] = {"templates": list(imagenet)}
            source = f"{repo} {imagenet_source}"
        else:
            settings = {"template": template}
            source = f"{repo} datasets/{official}.py (template)"
        rules.append(Rule(settings, source, datasets=frozenset({name})))
    return tuple(rules)


def _gda_rules() -> tuple[Rule, ...]:
    return (
        Rule(
            {"augment_epoch": 10},
            "mrflogs/ICLR24 configs/few_shots/*.yaml and configs/robustness/*.yaml "
            "(augment_epoch 10 in every config)",
        ),
        Rule(
            {
                "cache_crop_min_scale": 0.5,
                "alpha_grid": [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0],
                "alpha": 0.1,
            },
            "mrflogs/ICLR24 main_few_shots.py and main_robustness.py (train_tranform: "
            "RandomResizedCrop(224, scale=(0.5, 1)) + a flip; run: the alpha grid, searched "
            "from best_alpha 0.1)",
        ),  # fmt: skip
        *_per_dataset_templates(
            "mrflogs/ICLR24",
            _TIP_IMAGENET_TEMPLATES,
            "datasets/imagenet.py (imagenet_templates: CLIP's 7, ensembled by utils.py "
            "clip_classifier)",
        ),  # fmt: skip
    )


_GDA_NOTES = (
    "the official searches alpha on the whole val split (main_few_shots.py: dataset.val) and "
    "on the test set for ImageNet (val_features = test_features); vlprompt searches the whole "
    "val split too (val_split 'whole'; ImageNet's val split is its test set, as CoOp's)",
    "main_few_shots.py runs seeds 1, 2, 3 and shots 1, 2, 4, 8, 16; the preset holds at any "
    "shots (the configs' values do not depend on them)",
)
register_preset(
    Preset(
        "gda_fewshot",
        "gda",
        "GDA few-shot, training-free (RN50 in configs/few_shots/*.yaml): 10 augmented views, "
        "KS-shrunk shared covariance, alpha searched on validation",
        _gda_rules(),
        notes=_GDA_NOTES,
    )
)
register_preset(
    Preset(
        "gda_dg",
        "gda",
        "GDA domain generalisation (ViT-B/16 in configs/robustness/imagenet_vitb16.yaml): "
        "fitted on 16-shot ImageNet with the few-shot settings, tested on the variants",
        _gda_rules(),
        notes=(
            *_GDA_NOTES,
            "main_robustness.py maps the 1000 ImageNet logits to ImageNet-A's and -R's 200 "
            "classes (label_mapping); vlprompt points GDA at a variant's class list, where a "
            "class named as in the fitted list keeps its fitted row (the same argmax as the "
            "mapping) and any other gets a synthesised row (main_base2new.py's rule)",
        ),
    )
)
register_preset(
    Preset(
        "gda_base2new",
        "gda",
        "GDA base-to-new (ViT-B/16 in configs/base2new/*.yaml, main_base2new.py): base classes "
        "with the pinv of the mean per-class covariance, new classes synthesised from the 64 "
        "training features nearest their text feature",
        (
            *_gda_rules(),
            Rule(
                {"covariance": "class_mean", "new_class_topk": 64, "new_class_text_copies": 16},
                "mrflogs/ICLR24 main_base2new.py `run` (base: cov_inv = pinv(train_cov.mean(0)); "
                "new: k = 64, w.unsqueeze(0).repeat(16, 1))",
            ),
        ),
        notes=(
            "configs/base2new/*.yaml set shots 16, ViT-B/16, subsample_classes base and "
            "augment_epoch 10 (the few-shot value); logs/base2new.log prints lr 1 and "
            "train_epoch 50 in its configs, which main_base2new.py never reads",
            "the official searches alpha on the whole val split of the base classes "
            "(ImageNet: on the base test set, val_loader = test); vlprompt searches the whole "
            "val split of the base classes too (val_split 'whole')",
            "main_base2new.py evaluates new classes only as a list of new classes; a list "
            "mixing fitted and new classes (vlprompt's choice) keeps the fitted rows",
        ),
    )
)
register_preset(
    Preset(
        "lp_plus_plus_fewshot",
        "lp_plus_plus",
        "LP++ few-shot (RN50 in configs/base.yaml): text-blended linear probe, 300 full-batch "
        "epochs with the data-driven step sizes",
        (
            Rule(
                {"epochs": 300},
                "FereshteShakeri/FewShot-CLIP-Strong-Baseline configs/base.yaml (train_epoch 300)",
            ),
            Rule(
                {"momentum": 0.9, "alpha_every": 10, "cache_crop_min_scale": 0.5},
                "FereshteShakeri/FewShot-CLIP-Strong-Baseline methods/linear_probe_p2.py "
                "(SGD momentum 0.9; alpha stepped when (epoch + 1) % 10 == 0) and main.py "
                "(train_tranform: RandomResizedCrop(224, scale=(0.5, 1)) + a flip)",
            ),
            *_per_dataset_templates(
                "FereshteShakeri/FewShot-CLIP-Strong-Baseline",
                _TIP_IMAGENET_TEMPLATES,
                "datasets/imagenet.py (imagenet_templates: CLIP's 7, ensembled by utils.py "
                "clip_classifier)",
            ),  # fmt: skip
        ),
        notes=(
            "the official keeps the epoch best on `shots` validation images per class "
            "(main.py generate_fewshot_dataset_(shots, split='val')); vlprompt on the run's "
            "few-shot val split (min(shots, 4) per class); for ImageNet the official "
            "validation images are `shots` more training images per class, augmented "
            "(main_imagenet.py, datasets/imagenet.py generate_fewshot_dataset)",
            "configs/base.yaml says shots 4 and tasks 10 (10 seeds: random.seed(i + 1)); the "
            "README runs 16 shots; the preset holds at any shots",
        ),
    )
)
# CLAP's CUSTOM_TEMPLATES (trainers/adapters.py) are CoOp's table; ImageNet adds them to
# IMAGENET_TEMPLATES_SELECT (datasets/imagenet_templates.py: CLIP's 7)
_CLAP_IMAGENET_TEMPLATES = (*IMAGENET_TEMPLATES, "a photo of a {}.")
register_preset(
    Preset(
        "clap_fewshot",
        "clap",
        "CLAP few-shot (RN50 in experiments/experiment_CLAP.txt): zero-shot-initialised linear "
        "probe with the class-adaptive l2 constraint, SGD lr 0.1, batch 256, 300 epochs",
        (
            Rule(
                {
                    "optimizer": "sgd",
                    "lr": 0.1,
                    "batch_size": 256,
                    "epochs": 300,
                    "warmup_epochs": 1,
                    "warmup_lr": 1e-5,
                    "weight_decay": 0.0,
                    "lr_schedule": "epoch",
                },
                "jusiro/CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml",
            ),  # fmt: skip
            Rule(
                {"momentum": 0.9, "cache_crop_min_scale": 0.08},
                "KaiyangZhou/Dassl.pytorch dassl/config/defaults.py (OPTIM.MOMENTUM 0.9, "
                "INPUT.RRCROP_SCALE (0.08, 1.0))",
            ),
            Rule(
                {"constraint": "l2", "augment_epoch": 20},
                "jusiro/CLAP experiments/experiment_CLAP.txt (INIT ZS, CONSTRAINT l2) and "
                "trainers/adapters.py (epochs_aumentation = 20)",
            ),
            *_per_dataset_templates(
                "jusiro/CLAP",
                _CLAP_IMAGENET_TEMPLATES,
                "trainers/adapters.py _get_base_text_features (IMAGENET_TEMPLATES_SELECT, "
                "CLIP's 7, + CUSTOM_TEMPLATES['ImageNet'])",
            ),  # fmt: skip
        ),
        notes=(
            "validation-free, as the official: the last epoch is kept",
            "scripts/adapt.sh runs seeds 1, 2, 3; experiment_CLAP.txt shots 1, 2, 4, 8, 16; the "
            "preset holds at any shots",
            "the domain-generalisation runs (experiment_CLAP.txt) evaluate the ImageNet model "
            "on the variants; ImageNet-A's and -R's 200 classes are indices into the 1000 "
            "prototypes there; vlprompt evaluates CLAP on its fitted classes only",
        ),
    )
)


# ---- presets for every method ------------------------------------------------------------------
@dataclass(frozen=True)
class EveryMethodPreset:
    """A preset for every method: each method's own settings (a method it does not name keeps
    its defaults) and settings of the engine (vlprompt.config.EngineSettings) for all of them."""

    name: str
    description: str
    method_settings: Mapping[str, Mapping[str, Any]]  # method -> its settings
    engine: Mapping[str, Any]  # engine setting -> value, for every method's runs
    source: str  # where the values come from
    method = ALL_METHODS  # the `method` column of `vlprompt presets`
    shots = None  # the values hold at any shots

    def resolve_for(self, method: str) -> dict[str, Any]:
        """`method`'s settings under this preset (at any data set and shots)."""
        return copy.deepcopy(dict(self.method_settings.get(method, {})))


def _mini_preset() -> EveryMethodPreset:
    from vlprompt.mini.settings import MINI_CROP_MIN_SCALE, MINI_SETTINGS

    return EveryMethodPreset(
        MINI_PRESET,
        "the mini world (default with the tiny CLIP vlprompt-mini-vit): epochs scaled down "
        "per method, no random crop; docs/mini-world.md's tables",
        MappingProxyType({m: MappingProxyType(dict(v)) for m, v in MINI_SETTINGS.items() if v}),
        MappingProxyType({"crop_min_scale": MINI_CROP_MIN_SCALE}),
        "vlprompt.mini.settings (MINI_SETTINGS; MINI_CROP_MIN_SCALE, chosen on the validation "
        "split by benchmarks/mini_crop_on_val.py)",
    )


EVERY_METHOD: dict[str, EveryMethodPreset] = {
    MINI_PRESET: _mini_preset(),
    PAPER_PRESET: EveryMethodPreset(
        PAPER_PRESET,
        "each method's own defaults (its paper's recipe, the random crop of 8-100% included); "
        "on the mini world: no mini settings",
        MappingProxyType({}),
        MappingProxyType({}),
        "each method's config class (vlprompt.methods) and vlprompt.config.EngineSettings",
    ),
}


def default_preset(backbone: str) -> str | None:
    """The preset a run gets when it names none: `mini` with the shipped tiny CLIP (whose world
    the papers' recipes, made for 224-px photos, do not fit), else none."""
    from vlprompt.mini.settings import TINY_CLIP_NAME

    return MINI_PRESET if backbone == TINY_CLIP_NAME else None


def preset_engine(name: str | None) -> dict[str, Any]:
    """The engine settings preset `name` sets ({} for a paper preset or none)."""
    if name is None or name not in EVERY_METHOD:
        return {}
    return dict(EVERY_METHOD[name].engine)


# ---- look-ups ---------------------------------------------------------------------------------
def list_presets(method: str | None = None) -> list[str]:
    """The preset names, sorted (the every-method ones included); only those `method` takes
    with a method named."""
    own = [n for n, p in PRESETS.items() if method is None or p.method == method]
    return sorted([*own, *EVERY_METHOD])


def get_preset(name: str, method: str | None = None) -> Preset | EveryMethodPreset:
    """The preset `name`; PresetError (one line, with the choices) for an unknown name or one of
    another method than `method`."""
    if isinstance(name, str) and name in EVERY_METHOD:
        return EVERY_METHOD[name]
    if not isinstance(name, str) or name not in PRESETS:
        close = difflib.get_close_matches(str(name), list_presets(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise PresetError(f"unknown preset {name!r}.{hint} Choices: {', '.join(list_presets())}")
    preset = PRESETS[name]
    if method is not None and preset.method != method:
        own = sorted(n for n, p in PRESETS.items() if p.method == method)
        every = f"{' and '.join(sorted(EVERY_METHOD))} apply to every method"
        theirs = (f"its presets: {', '.join(own)}; {every}" if own
                  else f"it has no presets of its own; {every}")  # fmt: skip
        raise PresetError(
            f"preset {name!r} is for method {preset.method!r}, not {method!r} ({theirs})"
        )
    return preset


def resolve_preset(name: str | None, method: str, dataset: str, shots: int) -> dict[str, Any]:
    """The method settings preset `name` gives a `method` run on `dataset` with `shots` per
    class ({} for no preset). Errors are PresetError."""
    if name is None:
        return {}
    preset = get_preset(name, method)
    if isinstance(preset, EveryMethodPreset):
        return preset.resolve_for(method)
    return preset.resolve(dataset, shots)


def presets_for_methods(
    names: str | Iterable[str] | None, methods: Sequence[str]
) -> dict[str, str]:
    """{method: preset} for a sweep over `methods` (names or labels such as ``coop+dept``,
    vlprompt.methods.labels): each preset named applies to the runs of its own method (so
    ``rpo_base2new,cocoop`` serves a sweep of both); one whose rules make a label of the sweep
    (``coop_dept_base2new``: ``coop+dept``) applies to that label, otherwise to its method's plain
    name, otherwise to the one label of its method. A preset of no method of the sweep, or two
    for one method, is a PresetError. Methods without one run on their defaults."""
    if names is None:
        return {}
    names = [names] if isinstance(names, str) else list(names)
    every = [n for n in names if isinstance(n, str) and n in EVERY_METHOD]
    if every:
        if len(names) > 1:
            raise PresetError(
                f"preset {every[0]!r} applies to every method; name it alone, not with "
                f"{', '.join(repr(n) for n in names if n != every[0])}"
            )
        return {m: every[0] for m in methods}
    out: dict[str, str] = {}
    for name in names:
        preset = get_preset(name)
        method = _preset_target(name, preset, methods)
        if method in out:
            raise PresetError(
                f"presets {out[method]!r} and {name!r} are both for method {method!r}; name one "
                "per method"
            )
        out[method] = name
    return out


def preset_label(preset: Preset) -> str:
    """The label of the runs `preset` makes (``coop+dept`` for a preset that sets
    feature_rule=dept on CoOp; its method's name for most)."""
    from vlprompt.methods.labels import method_label

    rules: dict[str, Any] = {}
    for rule in preset.rules:
        rules.update({k: v for k, v in rule.settings.items() if k.endswith("_rule")})
    return method_label(
        preset.method, rules.get("feature_rule", "none"), rules.get("gradient_rule")
    )


def _preset_target(name: str, preset: Preset, methods: Sequence[str]) -> str:
    from vlprompt.methods.labels import canonical_label, parse_label

    exact = [m for m in methods if canonical_label(m) == preset_label(preset)]
    if exact:
        return exact[0]
    if preset.method in methods:
        return preset.method
    same = [m for m in methods if parse_label(m)[0] == preset.method]
    if len(same) == 1:
        return same[0]
    if not same:
        raise PresetError(
            f"preset {name!r} is for method {preset.method!r}, which this sweep does not "
            f"run (methods: {', '.join(methods)})"
        )
    raise PresetError(
        f"preset {name!r} is for method {preset.method!r}, which this sweep runs as "
        f"{', '.join(same)} and whose rules match none of them; run those in separate sweeps, "
        "one with this preset"
    )


def describe_presets(verbose: bool = False) -> list[str]:
    """`vlprompt presets`: one line per preset; with `verbose`, each rule and its source."""
    lines = []
    for name in list_presets():
        p = get_preset(name)
        lines.append(f"{name:17s} {p.method:8s} {p.description}")
        if verbose and isinstance(p, EveryMethodPreset):
            lines.append(f"    from: {p.source}")
            for method, values in sorted(p.method_settings.items()):
                text = ", ".join(f"{k}={v!r}" for k, v in values.items())
                lines.append(f"    [{method}] {text}")
            for key, value in p.engine.items():
                lines.append(f"    [engine, every method] {key}={value!r}")
            if p.method_settings:
                lines.append("    [any other method] its own defaults")
        elif verbose:
            if p.shots is not None:
                lines.append(f"    shots: {', '.join(map(str, p.shots))}")
            for rule in p.rules:
                values = ", ".join(f"{k}={v!r}" for k, v in rule.settings.items())
                flag = f"  [{rule.flag}]" if rule.flag else ""
                lines.append(f"    [{rule.where}] {values}  ({rule.source}){flag}")
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
    for name in sorted(PRESETS):  # the paper presets' official values
        for rule in PRESETS[name].rules:
            for key, value in rule.settings.items():
                shown = f'"{value}"' if isinstance(value, str) else repr(value)
                source = rule.source.replace("|", "\\|")
                rows.append(f"| `{name}` | {rule.where} | `{key}` | `{shown}` | {source} |")
    return "\n".join(rows)
