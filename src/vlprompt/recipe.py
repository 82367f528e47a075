"""A sweep's recipe, read back from its runs' `config.json` files: per method the presets, the
settings given on the command (`--set`, method flags), the backbone, the weights and the
vlprompt version that trained it. summary.md prints it in its header, so that a table carries
what made it.

A run's config holds the resolved method settings only; the settings given on the command are
those that differ from what the method's defaults and the run's preset give for its data set and
shots (`vlprompt.api.resolve_config` without overrides).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlprompt.run_folder import CONFIG_FILE

RUN_DEPTH = 4  # OUT/<protocol>/<data set>/<method>/shots<k>_seed<s>/config.json


@dataclass
class MethodRecipe:
    """What the runs of one method were trained with (each a set: runs may differ)."""

    runs: int = 0
    presets: set[str] = field(default_factory=set)
    overrides: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    backbones: set[str] = field(default_factory=set)
    weights: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)  # data sets whose defaults could not resolve


def run_configs(sweep: str | Path) -> list[dict[str, Any]]:
    """The config.json objects of the run folders under a sweep folder (unreadable ones
    skipped: the summary must not fail on one damaged run)."""
    pattern = "/".join(["*"] * RUN_DEPTH + [CONFIG_FILE])
    configs = []
    for path in sorted(Path(sweep).glob(pattern)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "method" in data and "method_config" in data:
            configs.append(data)
    return configs


def _value_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


Baselines = dict[tuple, "dict[str, Any] | None"]


def _baseline(config: dict[str, Any], cache: Baselines) -> dict[str, Any] | None:
    """The method settings the run would have without any setting given on the command."""
    from vlprompt.api import resolve_config

    key = tuple(str(config.get(k)) for k in ("method", "dataset", "shots", "preset", "backbone"))
    if key not in cache:
        try:
            cache[key] = resolve_config(
                config["method"], config["dataset"], backbone=config.get("backbone"),
                pretrained=config.get("pretrained"), shots=int(config.get("shots", 16)),
                preset=config.get("preset"),
            ).method_config  # fmt: skip
        except Exception:  # a plugin's method, a moved data set: the summary is still written
            cache[key] = None
    return cache[key]


def overrides(config: dict[str, Any], cache: Baselines | None = None) -> dict[str, Any] | None:
    """The method settings of a run that its method's defaults and preset do not give (None
    when those cannot be resolved here, e.g. a method of a plugin not imported). `cache`: the
    baselines already resolved, by (method, data set, shots, preset, backbone)."""
    base = _baseline(config, {} if cache is None else cache)
    if base is None:
        return None
    saved = config["method_config"]
    return {k: v for k, v in sorted(saved.items()) if k not in base or base[k] != v}


def recipes(configs: Iterable[dict[str, Any]]) -> dict[str, MethodRecipe]:
    """Per method label (a method with its rules: ``coop+dept``), what its runs were trained
    with."""
    out: dict[str, MethodRecipe] = defaultdict(MethodRecipe)
    cache: Baselines = {}
    for config in configs:
        r = out[_label(config)]
        r.runs += 1
        r.presets.add(config.get("preset") or "none")
        r.backbones.add(str(config.get("backbone")))
        r.weights.add(str(config.get("pretrained")))
        r.versions.add(str(config.get("vlprompt_version") or "unrecorded"))
        given = overrides(config, cache)
        if given is None:
            r.unknown.add(str(config.get("dataset")))
            continue
        for key, value in given.items():
            r.overrides[key].add(_value_text(value))
    return dict(out)


def _label(config: dict[str, Any]) -> str:
    """The run's label as its results name it (``coop+dept``; vlprompt.methods.labels)."""
    from vlprompt.methods.labels import method_label

    method, settings = str(config["method"]), config["method_config"]
    try:
        return method_label(method, settings.get("feature_rule", "none"),
                            settings.get("gradient_rule"))  # fmt: skip
    except Exception:  # a plugin's method not imported here: its name
        return method


def _join(values: Iterable[str]) -> str:
    return ", ".join(f"`{v}`" for v in sorted(values)) or "-"


def recipe_md(sweep: str | Path, methods: list[str] | None = None) -> list[str]:
    """summary.md's "Recipe" part: one row per method (in `methods`' order when given)."""
    found = recipes(run_configs(sweep))
    out = ["## Recipe", ""]
    if not found:
        return out + ["No run folder with a config.json under this folder (results without "
                      "their runs): the recipe is unknown.", ""]  # fmt: skip
    total = sum(r.runs for r in found.values())
    out += [
        f"Read from the `{CONFIG_FILE}` of the {total} run folders. Set on the command: the "
        "settings that differ from the method's defaults and its preset for the run's data set "
        "and shots (`--set`, method flags).",
        "",
        "| method | runs | preset | set on the command | backbone | weights | vlprompt version |",
        "|---|---|---|---|---|---|---|",
    ]
    order = [m for m in (methods or []) if m in found] + sorted(set(found) - set(methods or []))
    for method in order:
        r = found[method]
        given = ", ".join(
            f"`{k}={'|'.join(sorted(v))}`" for k, v in sorted(r.overrides.items())
        ) or "-"  # fmt: skip
        if r.unknown:
            given += f" (unknown for {', '.join(sorted(r.unknown))})"
        out.append(f"| {method} | {r.runs} | {_join(r.presets)} | {given} | {_join(r.backbones)} "
                   f"| {_join(r.weights)} | {_join(r.versions)} |")  # fmt: skip
    return out + [""]
