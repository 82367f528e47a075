"""The `vlprompt` command: a thin layer over the library (`vlprompt.train`, `vlprompt.evaluate`,
`vlprompt.load_run`, `vlprompt.protocols.run_bench`). `main(argv)` returns the exit code.

Errors from bad input (VlpromptError and its subclasses) print as one line
`vlprompt: error: ...` with exit code 2; set VLPROMPT_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import typing
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from vlprompt.config import PRESET_HELP, SPLIT_NAMES, SUBSAMPLE_CHOICES, TRUST_HELP, train_options
from vlprompt.errors import CliError, VlpromptError
from vlprompt.executors import EXECUTORS

RAW = argparse.RawDescriptionHelpFormatter

TRAIN_EXAMPLE = """examples:
  vlprompt train --method rpo --dataset oxford_pets --root ~/data --shots 16 --seed 1 \\
      --output-dir runs/rpo_pets
  vlprompt train --method rpo --dataset imagefolder --root ~/my_photos --lr 0.005 -o runs/mine
  vlprompt train --config my_run.yaml            # settings from YAML/JSON (flags still win)
  vlprompt train --method prograd --dataset dtd --root ~/data --shots 8 --backbone RN50 \\
      --preset prograd_fewshot -o runs/pg_dtd  # the official settings (`vlprompt presets`)
  vlprompt train --resume -o runs/rpo_pets       # continue an interrupted run
  vlprompt train --method rpo --help             # list RPO's settings and their defaults
  torchrun --nproc_per_node 4 -m vlprompt.cli train --method rpo --dataset imagenet \\
      --root ~/data --device cuda -o runs/rpo_in  # DDP: --batch-size is the global batch
"""
EVAL_EXAMPLE = """examples:
  vlprompt eval runs/rpo_pets                          # test split, the run's own classes
  vlprompt eval runs/rpo_b2n --subsample new           # base-to-new: the new classes
  vlprompt eval runs/rpo_imagenet --dataset imagenet_sketch --root ~/data --json
"""
PREDICT_EXAMPLE = """examples:
  vlprompt predict runs/rpo_pets cat.jpg dog.png --topk 3
  vlprompt predict runs/mine ~/new_photos/ --json > predictions.json
"""
EXPORT_EXAMPLE = """examples:
  vlprompt export runs/rpo_pets --format onnx -o exported/rpo_pets
  vlprompt export runs/rpo_pets --format torchscript --probabilities -o exported/rpo_pets_ts
"""
BENCH_EXAMPLE = """examples:
  vlprompt bench base2new --methods rpo,prograd --datasets oxford_pets,dtd --seeds 1,2,3 \\
      --root ~/data --output-dir bench/b2n
  vlprompt bench fewshot --methods coop,rpo --datasets caltech101 --shots 1,2,4,8,16 -o bench/fs
  vlprompt bench xd --methods rpo --datasets imagenet --targets caltech101,oxford_pets -o bench/xd
  vlprompt bench dg --methods rpo --datasets imagenet --set lr=0.005 -o bench/dg
  vlprompt bench base2new --methods rpo,cocoop --datasets dtd --preset rpo_base2new,cocoop \\
      -o bench/b2n_official   # each method's official settings (`vlprompt presets`)
  vlprompt bench base2new --methods coop,coop+dept --datasets dtd \
      --preset coop_base2new,coop_dept_base2new -o bench/dept   # CoOp with and without DePT
"""
REPORT_EXAMPLE = """examples:
  vlprompt report bench/b2n                       # rewrite summary.md from results.jsonl
  vlprompt report bench/b2n --published           # beside the papers' numbers
  vlprompt report bench/b2n --methods-order zsclip,coop,rpo --latex
"""
METHODS_EXAMPLE = """examples:
  vlprompt methods
  vlprompt methods --verbose     # every setting and its default
"""
PRESETS_EXAMPLE = """examples:
  vlprompt presets               # each paper preset, its method and what it sets
  vlprompt presets --verbose     # every value, where it applies and its official file
"""
DATASETS_EXAMPLE = """examples:
  vlprompt datasets                  # the registered data sets
  vlprompt datasets --root ~/data    # which are found under ~/data, with their sizes
"""
QUICKSTART_EXAMPLE = """examples:
  vlprompt quickstart                     # the mini world: train, evaluate, predict in minutes
  vlprompt quickstart --output-dir qs
  vlprompt quickstart --methods rpo,ivlp,maple,promptsrc   # the seed method beside its peers
"""
SERVE_EXAMPLE = """examples:
  vlprompt serve runs/rpo_pets                   # http://127.0.0.1:8000/ (a page to try images)
  curl -F files=@cat.jpg -F files=@dog.png 'http://127.0.0.1:8000/predict?topk=3'
  vlprompt serve runs/rpo_pets --port 9000 --max-batch 64 --device cuda
"""
MINI_EXAMPLE = """examples:
  vlprompt mini pretrain --output my-mini-clip.safetensors --steps 1000
  vlprompt train --method rpo --dataset mini_shapes --backbone vlprompt-mini-vit \\
      --pretrained my-mini-clip.safetensors -o runs/mini
"""

REMOTE_HELP = (
    "load a backbone that the run's config.json names as hf-hub:ORG/REPO (a download) or "
    "local-dir:PATH (read by open_clip itself); pass this only for a run you trust"
)


# ---- parser -------------------------------------------------------------------------------------
def _scan_option(argv: list[str], name: str) -> str | None:
    """The value of `--name X` / `--name=X` in argv, read before parsing (or None)."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _method_for_flags(argv: list[str]) -> str | None:
    """Which method's settings become flags: --method, else the --config file's method."""
    name = _scan_option(argv, "--method")
    if name is None:
        path = _scan_option(argv, "--config")
        if path:
            try:
                from vlprompt.config import load_config_file

                name = load_config_file(path).get("method")
            except VlpromptError:
                return None  # reported properly when the command runs
    return name if isinstance(name, str) else None


def _parse_value(text: str) -> Any:
    """A flag value for a setting without a typed default: JSON if it parses, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _lists_from_text(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """`--set params=q,v` (text) for a list setting of `method` -> ["q", "v"]."""
    from vlprompt.methods import get_method_class

    try:
        config_fields = fields(get_method_class(method).config_class)
    except (ValueError, VlpromptError):
        return settings  # an unknown method: the train call names the choices
    lists = {f.name for f in config_fields
             if f.default is not MISSING and isinstance(f.default, (list, tuple))}  # fmt: skip
    return {k: _parse_list(v) if k in lists and isinstance(v, str) else v
            for k, v in settings.items()}  # fmt: skip


def _parse_list(text: str) -> Any:
    """A list setting's flag value: JSON (`[1, 2]`, `["q", "v"]`) or comma-separated items
    (`q,v`, `0.5,1`), each read as JSON where it parses (numbers), else as text."""
    text = text.strip()
    if text.startswith("["):
        return _parse_value(text)
    return [_parse_value(item.strip()) for item in text.split(",") if item.strip()]


def _add_method_flags(parser: argparse.ArgumentParser, method: str | None) -> None:
    from vlprompt.methods import MethodConfig, get_method_class
    from vlprompt.methods.method_config import _setting_kind

    config_class = MethodConfig
    title = "recipe settings (add --method NAME to see that method's own settings)"
    description = _LONG_RECIPES_NOTE
    if method:
        try:
            method_class = get_method_class(method)
            config_class = method_class.config_class
            title = f"settings of method {method!r} (defaults: its paper recipe)"
            description = _recipe_cost_text(method, method_class)
        except (ValueError, VlpromptError):
            pass  # unknown method: the command reports it with the choices
    group = parser.add_argument_group(title, description)
    for f in fields(config_class):
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        meaning = f.metadata.get("help")  # each config field's help (vlprompt.methods.base)
        help_text = f"default: {default!r}" + (f"; {meaning}" if meaning else "")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if isinstance(default, bool):
            group.add_argument(
                flag, dest=f"m_{f.name}", action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_text,
            )  # fmt: skip
        else:
            kind = type(default) if isinstance(default, (int, float, str)) else _parse_value
            if isinstance(default, (list, tuple)) or _setting_kind(f.type)[1]:
                kind = _parse_list
                help_text += "; a list: comma-separated (q,v) or JSON"
            group.add_argument(
                flag, dest=f"m_{f.name}", type=kind, default=argparse.SUPPRESS,
                metavar=f.name.upper(), help=help_text,
            )  # fmt: skip


_LONG_RECIPES_NOTE = (
    "Each method's recipe and what it costs: `vlprompt methods`; add --method NAME for its own "
    "settings and cost."
)


def _recipe_cost_text(method: str, method_class: Any) -> str | None:
    """What `method`'s default recipe costs, for `train --method NAME --help`."""
    from vlprompt.training_cost import methods_cost_lines

    if not method_class.needs_training:
        return None
    lines = methods_cost_lines(method, method_class, method_class.config_class())
    return "Its default recipe costs:\n" + "\n".join(line.strip() for line in lines)


def _set_pair(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), _parse_value(value)


def _flag_type(annotation: Any) -> Any:
    """The scalar type of an option's annotation (`int | None` -> int)."""
    kinds = [t for t in typing.get_args(annotation) or [annotation] if t is not type(None)]
    return kinds[0]


def _add_option_flags(parser: argparse.ArgumentParser, verb: str) -> None:
    """One flag per train option that `verb` offers (vlprompt.config.TrainOptions and
    EngineSettings: `--eval-batch-size` sets `eval_batch_size`), with the option's help,
    choices and metavar. A true/false option is a switch that turns its default around. An
    unset flag stays out of the parsed namespace, so the library's default applies."""
    for option in train_options():
        if verb not in option.verbs:
            continue
        meta = option.metadata
        flags = meta.get("flags") or ("--" + option.name.replace("_", "-"),)
        extra = {k: meta[k] for k in ("choices", "metavar") if k in meta}
        extra["help"] = meta.get("help", "").replace("%", "%%")  # argparse formats help with %
        if _flag_type(option.annotation) is bool:
            action = "store_false" if option.default is True else "store_true"
            parser.add_argument(*flags, dest=option.name, action=action,
                                default=argparse.SUPPRESS, **extra)  # fmt: skip
        else:
            parser.add_argument(*flags, dest=option.name, type=_flag_type(option.annotation),
                                default=argparse.SUPPRESS, **extra)  # fmt: skip


def _train_options_given(args: argparse.Namespace, verb: str) -> dict[str, Any]:
    """The train options that `verb` offers and the command line set."""
    names = {option.name for option in train_options() if verb in option.verbs}
    return {k: v for k, v in vars(args).items() if k in names}


def _add_train_parser(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--method", default=argparse.SUPPRESS,
                   help="method name (`vlprompt methods` lists them)")  # fmt: skip
    p.add_argument("--dataset", default=argparse.SUPPRESS,
                   help="data-set name (`vlprompt datasets` lists them)")  # fmt: skip
    _add_option_flags(p, "train")
    p.add_argument("--config", default=None, help="YAML or JSON file of settings")
    p.add_argument("--set", dest="set_pairs", action="append", type=_set_pair, default=[],
                   metavar="KEY=VALUE", help="a method setting (repeatable)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    _add_method_flags(p, _method_for_flags(argv))


def _add_sweep_view_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show each run's per-epoch lines live (they always go to its log.txt)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")


def _add_eval_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by `vlprompt train`")
    p.add_argument("--dataset", help="data set to test on (default: the run's own)")
    p.add_argument("--subsample", choices=SUBSAMPLE_CHOICES, help="classes (default: the run's)")
    p.add_argument("--split", choices=SPLIT_NAMES, default="test")
    p.add_argument("--whole-split", action="store_true",
                   help="train/val of the run's own data set: every image of the split, not the "
                   "run's few-shot sample (val: min(shots, 4) per class)")  # fmt: skip
    p.add_argument("--root", help="data root of --dataset (default: the run's)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-record", dest="record", action="store_false", help="do not append to results.jsonl"
    )
    p.add_argument("--json", action="store_true", help="print the result record as JSON")
    p.add_argument("--report", action="store_true",
                   help="also write RUN/eval/<data set>-<classes>-<split>/: per-class accuracy, "
                   "confusion matrix (CSV, PNG), errors.csv, the most confident mistakes, the "
                   "reliability diagram, and zero-shot CLIP's accuracy on the same images")  # fmt: skip
    p.add_argument("--trust-torchscript", action="store_true", help=TRUST_HELP)
    p.add_argument("--allow-remote-weights", action="store_true", help=REMOTE_HELP)


def _add_pack_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run folder")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the bundle to write (a new file, e.g. mine.vlprompt)")  # fmt: skip


def _add_predict_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by `vlprompt train`, or a bundle "
                   "written by `vlprompt pack`")  # fmt: skip
    p.add_argument("--pretrained", metavar="PATH",
                   help="the run's local weight file, where it is on this machine (a bundle's "
                   "weights are checked by their sha256)")  # fmt: skip
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--coverage", type=float, metavar="P",
                   help="instead of the top-k, the set of classes that holds the true one with "
                   "probability P (0.9 or 0.95; split-conformal, calibrated on the run's "
                   "validation split)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--trust-torchscript", action="store_true", help=TRUST_HELP)
    p.add_argument("--allow-remote-weights", action="store_true", help=REMOTE_HELP)


def _add_export_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run folder written by `vlprompt train`")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                   help="onnx (needs pip install 'vlprompt[export]') or torchscript")  # fmt: skip
    p.add_argument("-o", "--output-dir", required=True,
                   help="a new or empty folder (or an earlier export folder)")  # fmt: skip
    p.add_argument("--features", action="store_true",
                   help="a second output: the normalised image features the head reads")  # fmt: skip
    p.add_argument("--probabilities", action="store_true",
                   help="an output softmax(logits / T), T the run's calibrated temperature "
                   "(1 without calibration); the logits stay uncalibrated")  # fmt: skip
    p.add_argument("--standard-ops", action="store_true",
                   help="ONNX: write attention as standard ONNX operators, for runtimes other "
                   "than onnxruntime (default: onnxruntime's fused Attention operator, faster)")  # fmt: skip
    p.add_argument("--trust-torchscript", action="store_true", help=TRUST_HELP)
    p.add_argument("--allow-remote-weights", action="store_true", help=REMOTE_HELP)


def _add_bench_parser(p: argparse.ArgumentParser) -> None:
    from vlprompt.protocols import PROTOCOLS

    p.add_argument("protocol", choices=PROTOCOLS)
    p.add_argument("--methods", required=True,
                   help="comma-separated method names, each optionally with its rules: "
                   "coop,coop+dept,coop+dept+prograd (a feature rule, then a gradient rule; "
                   "results name the runs so)")  # fmt: skip
    p.add_argument("--datasets", required=True, help="comma-separated (source) data sets")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    p.add_argument("--shots", help="comma-separated shots (default: the protocol's)")
    p.add_argument("--targets", help="comma-separated target data sets (xd, dg)")
    p.add_argument("-o", "--output-dir", dest="output_dir", required=True, help="sweep folder")
    p.add_argument("--set", dest="set_pairs", action="append", type=_set_pair, default=[],
                   metavar="[METHOD.]KEY=VALUE",
                   help="a method setting for every method, or with METHOD. for that method "
                   "only, e.g. clip_lora.iterations=500 (repeatable)")  # fmt: skip
    p.add_argument("--preset", metavar="NAME[,NAME]",
                   help=PRESET_HELP.replace("the run's", "each run's") + "; comma-separated, one "
                   "per method, each applies to its own method's runs")  # fmt: skip
    p.add_argument("--keep-going", action="store_true", help="record a failed run and go on")
    p.add_argument(
        "--no-report", dest="report", action="store_false", help="no summary tables/plots"
    )
    _add_sweep_view_flags(p)
    _add_option_flags(p.add_argument_group("settings of every run"), "bench")
    g = p.add_argument_group("executor (where the runs execute)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: one run after another in this process (default); ray: each run "
                   "a Ray task over this machine's or a cluster's CPUs and GPUs (pip install "
                   "'vlprompt[ray]'); a failing run then never stops the others")  # fmt: skip
    g.add_argument("--ray-address", dest="ray_address", metavar="ADDRESS",
                   help="join a Ray cluster: auto, or HOST:PORT (default: start a local one)")  # fmt: skip
    g.add_argument("--cpus-per-run", dest="cpus_per_run", type=float, default=1.0, metavar="N",
                   help="CPUs per run under Ray, also its torch threads (default 1)")  # fmt: skip
    g.add_argument("--gpus-per-run", dest="gpus_per_run", type=float, default=0.0, metavar="N",
                   help="GPUs per run under Ray; fractional packs runs on a GPU, e.g. 0.25 "
                   "(default 0)")  # fmt: skip
    g.add_argument("--max-retries", dest="max_retries", type=int, default=2, metavar="N",
                   help="retries of a run whose Ray worker died; each resumes from the run's "
                   "last checkpoint (default 2)")  # fmt: skip


def _add_serve_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by `vlprompt train`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only; any "
                   "other prints a warning: the server has no authentication)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="default %(default)s; 0: a free one")
    p.add_argument("--topk", type=int, default=5,
                   help="classes per image when a request has no ?topk= (default %(default)s)")  # fmt: skip
    p.add_argument("--max-batch", dest="max_batch", type=int, default=32,
                   help="images per forward pass, gathered from concurrent requests; a request "
                   "takes at most 4x this many files (default %(default)s)")  # fmt: skip
    p.add_argument("--max-wait-ms", dest="max_wait_ms", type=float, default=10.0,
                   help="how long a batch waits for more images (default %(default)s)")  # fmt: skip
    p.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, default=10.0,
                   help="bytes of one request, in MiB (default %(default)s)")  # fmt: skip
    p.add_argument("--max-pixels", dest="max_pixels", type=int, default=40_000_000,
                   help="pixels of one image, checked before decoding (default %(default)s)")  # fmt: skip
    p.add_argument("--body-timeout-s", dest="body_timeout_s", type=float, default=30.0,
                   help="seconds a request's body may take to arrive (default %(default)s)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-torchscript", action="store_true", help=TRUST_HELP)
    p.add_argument("--allow-remote-weights", action="store_true", help=REMOTE_HELP)


def _add_report_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="a sweep folder written by `vlprompt bench` (its results.jsonl)")
    p.add_argument("--latex", action="store_true", help="also print summary.tex's tables")
    p.add_argument("--published", action="store_true",
                   help="put the published numbers beside the sweep's (vlprompt.published)")  # fmt: skip
    p.add_argument("--methods-order", dest="methods_order", metavar="A,B,C",
                   help="these methods first, in this order, in every table and plot (default: "
                   "zero-shot CLIP first, then by name)")  # fmt: skip
    p.add_argument("--posthoc", choices=("wilcoxon", "nemenyi"), default="wilcoxon",
                   help="the critical-difference diagram's post-hoc test (default: %(default)s)")  # fmt: skip
    p.add_argument("--no-plots", dest="plots", action="store_false", help="tables only")


def _add_methods_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="show every setting")


def _add_presets_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every value, where it applies and its official file")  # fmt: skip


def _add_datasets_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="data root to look in")


def _add_quickstart_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output-dir", dest="output_dir", default="vlprompt-quickstart")
    p.add_argument("--methods", help="comma-separated methods (default: zsclip, coop, cocoop, "
                   "kgcoop, prograd, rpo; any method that classifies new classes)")  # fmt: skip
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (default) or ray: one Ray task per run over this machine's cores")  # fmt: skip
    _add_sweep_view_flags(p)
    _add_option_flags(p, "quickstart")


def _add_mini_parser(p: argparse.ArgumentParser) -> None:
    mini = p.add_subparsers(dest="mini_command", required=True, metavar="MINI_COMMAND")
    q = mini.add_parser("pretrain", help="pre-train the mini world's tiny CLIP",
                        epilog=MINI_EXAMPLE, formatter_class=RAW)  # fmt: skip
    q.add_argument("-o", "--output", default="vlprompt-mini-vit.safetensors",
                   help="the .safetensors file to write (a JSON record goes next to it)")  # fmt: skip
    from vlprompt.mini.pretrain import PretrainConfig

    recipe = PretrainConfig()  # the shipped checkpoint's recipe
    q.add_argument("--seed", type=int, default=recipe.seed, help="default: %(default)s")
    q.add_argument("--steps", type=int, default=recipe.steps, help="default: %(default)s")
    q.add_argument("--batch-size", dest="batch_size", type=int, default=recipe.batch_size,
                   help="image-caption pairs per step (default: %(default)s)")  # fmt: skip
    q.add_argument("--pool-size", dest="pool_size", type=int, default=recipe.pool_size,
                   help="images rendered once (default: %(default)s)")  # fmt: skip
    q.add_argument("--lr", type=float, default=recipe.lr, help="AdamW peak (default: %(default)s)")
    q.add_argument("--model-config", dest="model_config", metavar="JSON",
                   help="pre-train this open_clip model config (a JSON file, registered under "
                   "its file name) instead of the shipped architecture")  # fmt: skip


def _add_adopt_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a run or sweep folder written by an earlier vlprompt")


# verb -> (one-line help, description, examples, what adds its arguments)
VERBS: dict[str, tuple[str, str | None, str, Any]] = {
    "train": ("train a method on a data set into a run folder",
              "Train a method, save its prompts, evaluate the last epoch.", TRAIN_EXAMPLE, None),
    "eval": ("evaluate a run",
             "Evaluate a finished run; the result is appended to its results.jsonl.",
             EVAL_EXAMPLE, _add_eval_parser),
    "predict": ("classify images with a run", "Top-k class names with probabilities.",
                PREDICT_EXAMPLE, _add_predict_parser),
    "export": ("export a run as an ONNX or TorchScript classifier",
               "Write the run's image path and head as one model (images -> logits) with "
               "labels.json, preprocess.json and model.json (docs/deploy.md).", EXPORT_EXAMPLE,
               _add_export_parser),
    "bench": ("run a protocol sweep (base2new, fewshot, xd, dg)",
              "Train and evaluate over methods x data sets x shots x seeds; finished runs are "
              "skipped, so an interrupted sweep resumes.", BENCH_EXAMPLE, _add_bench_parser),
    "serve": ("serve a run over HTTP (predict endpoint and a page)",
              "Serve a run's classifier over HTTP: POST /predict, GET /health, GET /labels and "
              "a page at / to try images (needs: pip install 'vlprompt[serve]').",
              SERVE_EXAMPLE, _add_serve_parser),
    "report": ("rewrite a sweep's summary and print it",
               "Rewrite summary.md, summary.csv, summary.tex and plots/ of a sweep folder from its "
               "results.jsonl, and print the average table and the pairwise verdicts.",
               REPORT_EXAMPLE, _add_report_parser),
    "adopt": ("mark a run or sweep folder of an earlier release as vlprompt's",
              "Mark a folder whose files are a vlprompt run or sweep (config.json, results.jsonl) "
              "but that has no valid .vlprompt-folder marker, so that this release writes into it "
              "again (eval, resume, bench). Anything else is refused untouched.",
              "examples:\n  vlprompt adopt runs/old_rpo\n", _add_adopt_parser),
    "pack": ("write a finished run as one shareable file (no CLIP weights)",
             "Write config, learned prompts, calibration and splits of a finished run as one "
             "zip; `vlprompt predict FILE --pretrained PATH` uses it on another machine.",
             "examples:\n  vlprompt pack runs/mine -o mine.vlprompt\n"
             "  vlprompt predict mine.vlprompt photo.jpg --pretrained ~/weights/ViT-B-16.pt\n",
             _add_pack_parser),
    "methods": ("list the methods", None, METHODS_EXAMPLE, _add_methods_parser),
    "presets": ("list the paper presets (official settings)", None, PRESETS_EXAMPLE,
                _add_presets_parser),
    "datasets": ("list the data sets", None, DATASETS_EXAMPLE, _add_datasets_parser),
    "quickstart": ("the mini world end to end, in minutes on a CPU", None, QUICKSTART_EXAMPLE,
                   _add_quickstart_parser),
    "mini": ("the mini world's tools", None, MINI_EXAMPLE, _add_mini_parser),
}  # fmt: skip


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of `argv`'s command. Only the command that argv names gets its arguments
    (and imports what they need), so `vlprompt --help` loads neither torch nor open_clip."""
    argv = list(argv or [])
    parser = argparse.ArgumentParser(
        prog="vlprompt",
        description="Few-shot prompt learning for CLIP (RPO, ProGrad and baselines).",
        epilog="Run `vlprompt COMMAND --help` for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verb = argv[0] if argv and argv[0] in VERBS else None
    for name, (help_text, description, examples, add_arguments) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=description or help_text,
                           epilog=examples, formatter_class=RAW)  # fmt: skip
        if name != verb:
            continue
        if name == "train":
            _add_train_parser(p, argv)
        else:
            add_arguments(p)
    return parser


# ---- commands -----------------------------------------------------------------------------------


def _train_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method, data set and train options; method settings): flags > --set > --config file.
    A key of the config file that is no train option is a method setting."""
    from vlprompt.config import load_config_file

    known = {option.name for option in train_options()} | {"method", "dataset"}
    settings: dict[str, Any] = {}
    method_settings: dict[str, Any] = {}
    if args.config:
        data = dict(load_config_file(args.config))
        method_settings.update(data.pop("method_config", None) or {})
        settings.update(data.pop("engine", None) or {})
        data.pop("vlprompt_version", None)
        for key, value in data.items():
            key = key.replace("-", "_")
            (settings if key in known else method_settings)[key] = value
    method_settings.update(dict(args.set_pairs))
    for key, value in vars(args).items():
        if key.startswith("m_"):
            method_settings[key[2:]] = value
        elif key in known:
            settings[key] = value
    if args.quiet:
        settings["progress"] = False
    return settings, method_settings


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vlprompt import api
    from vlprompt.config import read_run_config, split_train_kwargs
    from vlprompt.run_folder import has_config

    settings, method_settings = _train_settings(args)
    output_dir = settings.get("output_dir")
    if not output_dir:
        raise CliError("train needs --output-dir (the run folder to write)")
    if settings.get("resume") and ("method" not in settings or "dataset" not in settings):
        if not has_config(output_dir):
            raise CliError(
                f"--resume without --method/--dataset needs a run in {output_dir}, "
                "but it holds no config.json"
            )
        saved = read_run_config(output_dir)
        run_fields, engine, call, _ = split_train_kwargs(settings)
        _refuse_other_identity(output_dir, saved, run_fields, engine, method_settings)
        api.check_weights_source(saved.backbone, Path(output_dir),
                                 run_fields.get("backbone") == saved.backbone, training=True)  # fmt: skip
        if "root" in run_fields:  # the data moved: not part of the run's identity
            saved.root = str(Path(run_fields["root"]).expanduser().resolve())
        saved = replace(saved, engine=replace(saved.engine, **engine))
        run = api.train_config(saved, **call)
    else:
        for key in ("method", "dataset"):
            if key not in settings:
                raise CliError(f"train needs --{key} (or a --config file that sets it)")
        method = settings.pop("method")
        dataset = settings.pop("dataset")
        method_settings = _lists_from_text(method, method_settings)
        run = api.train(method, dataset, **settings, **method_settings)
    _print_run_summary(run)
    return 0


def _refuse_other_identity(output_dir, saved, run_fields, engine, method_settings) -> None:
    """`--resume` alone continues the saved run with its saved config: a setting that would
    make it another run (method settings, shots, a preset, precision, ...) is refused, never
    dropped. The data root and the runtime settings (device, workers, ...) may change."""
    from vlprompt.config import train_options

    identity = {o.name for o in train_options() if o.identity}
    asked = {**{k: v for k, v in run_fields.items() if k != "root"}, **method_settings}
    asked.update({k: v for k, v in engine.items() if k in identity})
    saved_values = {**saved.to_dict(), **saved.method_config, **vars(saved.engine)}
    differ = [f"--{k.replace('_', '-')} {v!r} (saved: {saved_values.get(k, '<unset>')!r})"
              for k, v in asked.items() if saved_values.get(k, "<unset>") != v]  # fmt: skip
    if differ:
        raise CliError(
            f"--resume continues the run in {output_dir} with its saved config, but "
            f"{'; '.join(differ)} would make it another run; leave {'it' if len(differ) == 1 else 'them'} "
            "out, or start a new run with another --output-dir (or --overwrite)"
        )


def _print_run_summary(run: Any) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks
        return
    records = [r for r in run.results() if r.get("split") == "test"]
    if records:
        r = records[-1]
        from vlprompt.zero_shot_check import zero_shot_note

        note = zero_shot_note(r, run.config, run.status)
        print(
            f"{r['method']} on {r['dataset']} ({r['subsample']} classes): test accuracy "
            f"{r['accuracy']:.2f}%{f' ({note})' if note else ''} on {r['n_images']} images; "
            f"run folder {run.run_dir}"
        )
    else:
        print(f"run folder {run.run_dir}")


def cmd_eval(args: argparse.Namespace) -> int:
    from vlprompt import api

    record = api.evaluate(
        args.run_dir, args.dataset, subsample=args.subsample, split=args.split, root=args.root,
        device=args.device, record=args.record, trust_torchscript=args.trust_torchscript,
        allow_remote_weights=args.allow_remote_weights, report=args.report,
        whole_split=args.whole_split,
    )  # fmt: skip
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    print(
        f"{record['method']} on {record['dataset']} ({record['subsample']} classes, "
        f"{record['split']} split, {record['n_images']} images): accuracy "
        f"{record['accuracy']:.2f}% (macro {record['macro_accuracy']:.2f}%)"
    )
    if getattr(record, "reused", False):
        print(f"  (recorded at {record.get('time', '?')} for these learned prompts; not "
              "recomputed: --report recomputes)")  # fmt: skip
    if "report_dir" in record:
        summary = Path(record["report_dir"]) / "summary.txt"
        if summary.is_file():
            print("  " + summary.read_text(encoding="utf-8").splitlines()[0])
        print(f"  report: {record['report_dir']}")
    return 0


def _not_regular(path: Path) -> None:
    print(f"vlprompt: skipping {path}: not a regular image file (a named pipe, device or socket)",
          file=sys.stderr)  # fmt: skip


def _image_files(paths: list[str]) -> Iterator[Path]:
    """The files named or found in the named folders, in order; anything else is skipped with a
    line on stderr (a named pipe is never opened)."""
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.name.startswith(".") or p.is_dir():
                    continue
                if p.is_file():
                    yield p
                else:
                    _not_regular(p)
        elif path.is_file():
            yield path
        elif path.exists():
            _not_regular(path)
        else:
            print(f"vlprompt: skipping {path}: no such file or folder", file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> int:
    from vlprompt import api

    if args.topk < 1:
        raise CliError(f"--topk must be >= 1, got {args.topk}")
    run = api.load_run(args.run_dir, device=args.device, trust_torchscript=args.trust_torchscript,
                       allow_remote_weights=args.allow_remote_weights,
                       pretrained=args.pretrained)  # fmt: skip
    if args.coverage is not None:
        return _predict_sets(run, args)
    results, skipped, n_read = [], [], 0
    # decoded one batch at a time; text lines are printed as each batch is classified
    for path, preds, why in run.iter_predictions(
        _image_files(args.images), topk=args.topk, skip_unreadable=True
    ):
        if preds is None:
            skipped.append((path, why))
            print(f"vlprompt: skipping {path}: not a readable image", file=sys.stderr)
            continue
        n_read += 1
        if args.json:
            results.append({"image": str(path), "predictions": [
                {"class": c, "probability": v} for c, v in preds]})  # fmt: skip
        else:
            print(path)
            for name, prob in preds:
                print(f"  {prob:6.3f}  {name}")
    if not n_read:
        raise CliError(f"no readable image among {', '.join(args.images)}")
    if args.json:
        results += [{"image": str(p), "error": why} for p, why in skipped]
        print(json.dumps(results, indent=2))
    return 0


def _predict_sets(run: Any, args: argparse.Namespace) -> int:
    """`predict --coverage P`: each image's conformal set of classes."""
    from vlprompt.data import open_image

    paths = []
    for path in _image_files(args.images):
        try:
            open_image(str(path))
            paths.append(path)
        except VlpromptError:
            print(f"vlprompt: skipping {path}: not a readable image", file=sys.stderr)
    if not paths:
        raise CliError(f"no readable image among {', '.join(args.images)}")
    sets = run.prediction_sets(paths, coverage=args.coverage)
    if args.json:
        print(json.dumps([{"image": str(p), "coverage": args.coverage, "set": [
            {"class": c, "probability": v} for c, v in members]}
            for p, members in zip(paths, sets)], indent=2))  # fmt: skip
        return 0
    for path, members in zip(paths, sets):
        names = ", ".join(f"{c} ({v:.2f})" for c, v in members)
        print(f"{path}\n  {args.coverage:.0%} set ({len(members)} classes): {names}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from vlprompt.serve import ServeLimits, serve

    limits = ServeLimits(
        topk=args.topk, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
        body_timeout_s=args.body_timeout_s,
    )  # fmt: skip
    serve(args.run_dir, host=args.host, port=args.port, limits=limits, device=args.device,
          trust_torchscript=args.trust_torchscript,
          allow_remote_weights=args.allow_remote_weights)  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vlprompt import api

    run = api.load_run(args.run_dir, trust_torchscript=args.trust_torchscript,
                       allow_remote_weights=args.allow_remote_weights)  # fmt: skip
    path = run.export(
        args.output_dir,
        args.format,
        features=args.features,
        probabilities=args.probabilities,
        fused_attention=not args.standard_ops,
    )
    print(f"wrote {path} with labels.json, preprocess.json and model.json in {path.parent}")
    return 0


def _csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_bench(args: argparse.Namespace) -> int:
    from vlprompt.executors import RayOptions
    from vlprompt.protocols import run_bench

    train_kwargs = _train_options_given(args, "bench")  # every run's settings (root, device, ...)
    _refuse_ray_flags_without_ray(args)
    ray = None
    if args.executor == "ray":
        ray = RayOptions(
            address=args.ray_address, cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run, max_retries=args.max_retries, verbose=args.verbose,
        )  # fmt: skip
    everyone, per_method = _split_settings(args.set_pairs, _csv(args.methods))
    per_method = {m: _lists_from_text(m, values) for m, values in per_method.items()}
    result = run_bench(
        args.protocol,
        _csv(args.methods),
        _csv(args.datasets),
        seeds=_csv(args.seeds),
        shots=_csv(args.shots),
        targets=_csv(args.targets),
        output_dir=args.output_dir,
        config_overrides=everyone or None,
        method_overrides=per_method or None,
        preset=_csv(args.preset),
        keep_going=args.keep_going,
        report=args.report,
        train_kwargs=train_kwargs,
        executor=args.executor,
        ray=ray,
        progress=False if args.quiet else None,
        verbose=args.verbose,
    )
    _print_bench_result(result, args.output_dir)
    return 0 if result.ok else 1


RAY_FLAGS = {"ray_address": None, "cpus_per_run": 1.0, "gpus_per_run": 0.0, "max_retries": 2}


def _refuse_ray_flags_without_ray(args: argparse.Namespace) -> None:
    """The executor flags act under --executor ray only: set without it they would be dropped."""
    if args.executor == "ray":
        return
    given = [k for k, default in RAY_FLAGS.items() if getattr(args, k) != default]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise CliError(
            f"{flags} apply to Ray runs only, but the sweep would run locally; add "
            "--executor ray (or leave them out)"
        )


def _split_settings(
    pairs: list[tuple[str, Any]], methods: list[str] | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`--set` pairs as (settings of every method, {method: its own settings}): a key
    `METHOD.KEY` is for METHOD only. A METHOD the sweep does not run is one clear error."""
    everyone: dict[str, Any] = {}
    per_method: dict[str, dict[str, Any]] = {}
    for key, value in pairs:
        method, dot, name = key.rpartition(".")
        if not dot:
            everyone[key] = value
            continue
        if methods is not None and method not in methods:
            from vlprompt.errors import BenchError

            raise BenchError(
                f"--set {key}=...: {method!r} is not among the sweep's methods "
                f"({', '.join(methods)}); use METHOD.KEY=VALUE with one of them"
            )
        per_method.setdefault(method, {})[name] = value
    return everyone, per_method


def _print_bench_result(result: Any, output_dir: str) -> None:
    from vlprompt.run_folder import RESULTS_FILE

    for key, why in result.failed.items():
        print(f"  failed: {key}: {' '.join(why.split())}", file=sys.stderr)
    summary = getattr(result, "summary", None)
    markdown = getattr(summary, "markdown", None)
    if markdown:
        print(_terminal_summary(Path(markdown).read_text()))
        print(f"summary (every table, the tests, the plots): {markdown}")
    failed = f"{len(result.failed)} failed" + (" (exit status 1)" if result.failed else "")
    print(
        f"{len(result.trained)} run(s) trained or evaluated, {len(result.skipped)} already done, "
        f"{failed}; results in {Path(output_dir) / RESULTS_FILE}"
    )


def _terminal_summary(markdown: str) -> str:
    """What a terminal shows of a sweep's summary: the first (average) table with its heading
    and the pairwise verdicts; summary.md keeps the rest."""
    from vlprompt.quickstart import first_table

    lines = [first_table(markdown)]
    verdicts = []
    rows = markdown.splitlines()
    for i, line in enumerate(rows):
        if line.startswith("|") and "| verdict |" in line and "pair" in line:
            header = [c.strip() for c in line.strip("|").split("|")]
            at = header.index("verdict")
            for row in rows[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip("|").split("|")]
                if len(cells) > at and "variance" not in line:
                    verdicts.append(f"  {cells[at]}")
    if verdicts:
        lines += ["", "Pairwise comparisons (paired Wilcoxon, Holm):", *verdicts]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from vlprompt.report import write_summary

    files = write_summary(args.sweep, plots=args.plots, posthoc=args.posthoc,
                          methods_order=_csv(args.methods_order) or (),
                          published=args.published)  # fmt: skip
    markdown = files.markdown.read_text(encoding="utf-8")
    if args.published:
        print(_section(markdown, "## Published numbers"), end="\n\n")
    if files.cells:
        print(_terminal_summary(markdown))
    if args.latex and files.tex is not None:
        print("\n" + files.tex.read_text(encoding="utf-8").rstrip())
    written = f", {len(files.plots)} plot files" if files.plots else ""
    print(f"summary (every table, the tests, the plots): {files.markdown}{written}")
    return 0


def _section(markdown: str, heading: str) -> str:
    """One `## ` part of a summary, its heading included."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def _length(config) -> str:
    """A training's length in words: its epochs, or its optimizer steps (CLIP-LoRA)."""
    iterations = getattr(config, "iterations", 0)
    return f"{iterations} iterations" if iterations > 0 else f"{config.epochs} epochs"


def cmd_pack(args: argparse.Namespace) -> int:
    from vlprompt.pack import pack_run

    path = pack_run(args.run_dir, args.output)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB; the CLIP weights are not in it)")
    return 0


def cmd_adopt(args: argparse.Namespace) -> int:
    from vlprompt.run_folder import adopt_folder

    kind = adopt_folder(args.folder)
    print(f"{args.folder}: a vlprompt {kind}, marked; this release writes into it again")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from vlprompt.methods import get_method_class, list_methods
    from vlprompt.methods.parameter_counts import COUNT_MODEL, parameter_counts
    from vlprompt.training_cost import methods_cost_lines

    names = list_methods()
    counts = parameter_counts(names)
    print(f"(trainable parameters with the default settings on {COUNT_MODEL}'s shapes)")
    for name in names:
        cls = get_method_class(name)
        config = cls.config_class()
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # 1st paragraph
        trains = (
            f"{config.optimizer} lr {config.lr:g}, {_length(config)}, batch {config.batch_size}"
            if cls.needs_training
            else "no engine training: its fit() prepares it"
        )
        count = counts[name]
        size = f"{count.describe()} parameters" if count else f"not buildable on {COUNT_MODEL}"
        print(f"{name:14s} {summary}  [{trains}; {size}]")
        if cls.needs_training:
            print("\n".join(methods_cost_lines(name, cls, config)))
        if args.verbose:
            for key, value in config.to_dict().items():
                print(f"    {key} = {value!r}")
    _print_feature_rules(names, COUNT_MODEL)
    return 0


def _print_feature_rules(names: list[str], model_name: str) -> None:
    """The feature rules (`--feature-rule`), the methods that take them and what they add."""
    import torch

    from vlprompt.methods import get_method_class
    from vlprompt.methods.parameter_counts import feature_rule_count, shapes_only_backbone

    able = [n for n in names if "dept" in get_method_class(n).feature_rules]
    with torch.no_grad():
        count = feature_rule_count(shapes_only_backbone(model_name), "dept")
    print(
        f"feature rule 'dept' (DePT's head, --feature-rule dept; presets *_dept_base2new) on "
        f"{', '.join(able)}: adds {count.describe()} parameters"
    )


def cmd_presets(args: argparse.Namespace) -> int:
    from vlprompt.presets import describe_presets

    print("\n".join(describe_presets(verbose=args.verbose)))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from vlprompt.data import (
        describe_datasets,
        format_datasets_table,
        get_dataset_info,
        list_datasets,
    )

    if args.root:
        root = Path(args.root).expanduser()
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise CliError(
                f"--root {args.root} {what}; give the folder that holds the data sets "
                "(e.g. ~/data with oxford_pets/, dtd/, ... inside)"
            )
        print(format_datasets_table(describe_datasets(args.root)))
        return 0
    for name in list_datasets():
        info = get_dataset_info(name)
        print(f"{name:22s} {info.description or info.hint}".rstrip())
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from vlprompt.quickstart import quickstart

    quickstart(
        output_dir=args.output_dir, verbose=args.verbose, progress=False if args.quiet else None,
        executor=args.executor, **({"methods": _csv(args.methods)} if args.methods else {}),
        **_train_options_given(args, "quickstart"),
    )  # fmt: skip
    return 0


def _register_model_config(path: str) -> str:
    """Register the open_clip model config in JSON file `path` under its file name; return it."""
    from vlprompt.backbone import register_model_config

    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"--model-config {path}: not a readable JSON file ({exc})") from None
    needed = {"embed_dim", "vision_cfg", "text_cfg"}
    if not isinstance(config, dict) or not needed <= set(config):
        raise CliError(
            f"--model-config {path}: an open_clip model config needs the keys "
            f"{sorted(needed)} (see src/vlprompt/assets/vlprompt-mini-vit.json)"
        )
    register_model_config(Path(path).stem, config)
    return Path(path).stem


def cmd_mini(args: argparse.Namespace) -> int:
    from vlprompt.mini.pretrain import pretrain

    model = {"model": _register_model_config(args.model_config)} if args.model_config else {}
    try:
        pretrain(
            args.output, seed=args.seed, steps=args.steps, batch_size=args.batch_size,
            pool_size=args.pool_size, lr=args.lr, **model,
        )  # fmt: skip
    except ValueError as exc:  # the pre-training config's checks
        raise CliError(f"mini pretrain: {exc}") from None
    print(f"wrote {args.output} (and {args.output}.json)")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "export": cmd_export,
    "bench": cmd_bench,
    "report": cmd_report,
    "adopt": cmd_adopt,
    "pack": cmd_pack,
    "methods": cmd_methods,
    "presets": cmd_presets,
    "datasets": cmd_datasets,
    "quickstart": cmd_quickstart,
    "mini": cmd_mini,
}


def _setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("vlprompt")
    ours = [h for h in logger.handlers if getattr(h, "_vlprompt_cli", False)]
    if ours:  # main() called again in one process (tests, notebooks): today's stderr
        ours[0].stream = sys.stderr  # setStream would flush the old one, maybe closed
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._vlprompt_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False  # printed once, by our handler, even if the root logger has one


def user_message(exc: BaseException) -> str:
    """One line for the user. An error raised in a DataLoader worker arrives re-raised with the
    worker's traceback as its text ("Caught DataError in DataLoader worker process 0. Original
    Traceback ..."): its last line is the original message. An OSError that vlprompt did not
    word itself names the file and what to check."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name, sep, rest = last.partition(": ")
        text = rest if sep and "Error" in name else last
    elif isinstance(exc, OSError) and not isinstance(exc, VlpromptError):
        where = f" {exc.filename}" if exc.filename else ""
        reason = exc.strerror or text or type(exc).__name__
        text = f"cannot use{where}: {reason}; check that the path exists and that you may read it"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS):
            text = f"cannot write{where}: {reason}; choose a folder you can write to"
    return " ".join(text.split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # `vlprompt methods | head`: the reader stopped; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
        return 0
    except (VlpromptError, OSError) as exc:
        if os.environ.get("VLPROMPT_DEBUG"):
            raise
        print(f"vlprompt: error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
