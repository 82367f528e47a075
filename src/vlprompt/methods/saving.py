"""The on-disk format of a method's learned parts: `prompts.safetensors` (the learned tensors,
never the frozen backbone, never a pickle) + `method.json` (method name, config, class names,
backbone facts), as peft's `save_pretrained` writes an adapter alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from safetensors.torch import load_file

from vlprompt.errors import MethodError
from vlprompt.io import atomic_save_tensors, atomic_write_json, non_finite_tensors
from vlprompt.run_folder import METHOD_FILE as METHOD_FILE
from vlprompt.run_folder import PROMPTS_FILE as PROMPTS_FILE

if TYPE_CHECKING:
    from vlprompt.backbone import ClipBackbone
    from vlprompt.methods.base import PromptMethod


def save_learned(method: PromptMethod, directory: str | Path) -> None:
    """Save a method's learned tensors and the JSON needed to rebuild it. Tensors holding NaN or
    infinity are refused (MethodError): they would classify nothing."""
    directory = Path(directory)
    tensors = method.learned_state_dict()
    bad = non_finite_tensors(tensors)
    if bad:
        raise MethodError(
            f"refusing to save {method.name}'s learned tensors to {directory / PROMPTS_FILE}: "
            f"{', '.join(map(repr, bad))} hold NaN or infinite values; train again (e.g. with a "
            "lower learning rate)"
        )
    info = {
        "method": method.name,
        "config": method.config.to_dict(),
        "classnames": method.classnames,
        "backbone": method.clip.describe(),
    }
    if method.head_classnames is not None:  # DePT's head: the classes of its classifier rows
        info["head_classnames"] = method.head_classnames
    atomic_save_tensors(directory / PROMPTS_FILE, tensors)
    atomic_write_json(directory / METHOD_FILE, info)


def _retrain(directory: Path) -> str:
    return f"train the run again or restore {directory} from a copy"


def read_method_info(directory: str | Path) -> dict[str, Any]:
    """The content of a saved method's `method.json`, checked: a JSON object naming the method,
    its config (an object) and its class names (a list of text). Otherwise MethodError."""
    directory = Path(directory)
    info_path = directory / METHOD_FILE
    if not info_path.is_file():
        raise MethodError(
            f"{directory} holds no saved method: {METHOD_FILE} is missing "
            "(expected a folder written by method.save() or `vlprompt train`)"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MethodError(
            f"{info_path} is not readable JSON ({exc}); {_retrain(directory)}"
        ) from None
    if not isinstance(info, dict):
        raise MethodError(
            f"{info_path} holds {type(info).__name__}, not a JSON object with the keys method, "
            f"config and classnames; {_retrain(directory)}"
        )
    missing = [k for k in ("method", "config", "classnames") if k not in info]
    if missing:
        raise MethodError(
            f"{info_path} lacks the key(s) {', '.join(missing)}; {_retrain(directory)}"
        )
    names = info["classnames"]
    if not isinstance(info["method"], str):
        problem = f"its 'method' is {info['method']!r}, not a method name"
    elif not isinstance(info["config"], dict):
        problem = f"its 'config' is {info['config']!r}, not an object of settings"
    elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problem = f"its 'classnames' is {names!r}, not a list of class names"
    elif not isinstance(info.get("backbone", {}), dict):
        problem = f"its 'backbone' is {info['backbone']!r}, not an object"
    else:
        return info
    raise MethodError(f"{info_path}: {problem}; {_retrain(directory)}")


def load_learned(
    directory: str | Path,
    clip: ClipBackbone,
    classnames: list[str] | None = None,
    expected: type | None = None,
) -> PromptMethod:
    """Rebuild a saved method on `clip`; `classnames` defaults to the saved ones. Saved files
    that are damaged, of another method or backbone, or hold NaN/inf raise MethodError."""
    from vlprompt.methods.registry import get_method_class, list_methods, make_config

    directory = Path(directory)
    info = read_method_info(directory)
    info_path, prompts_path = directory / METHOD_FILE, directory / PROMPTS_FILE
    name = info["method"]
    try:
        cls = get_method_class(name)
    except ValueError:
        raise MethodError(
            f"{info_path} names the method {name!r}, which this vlprompt does not know "
            f"(known: {', '.join(list_methods())}); load it with the vlprompt version that "
            "saved it, or train it again"
        ) from None
    if expected is not None and expected.name and not issubclass(cls, expected):
        raise MethodError(f"{directory} holds a {name!r} method, not {expected.name!r}")
    try:
        config = make_config(name, **info["config"])
    except (TypeError, ValueError) as exc:
        raise MethodError(
            f"{info_path}: the saved {name} settings are not valid ({exc}); {_retrain(directory)}"
        ) from None
    names = list(classnames) if classnames is not None else info["classnames"]
    # a DePT head is built on the classes it was trained for, then pointed at `names`
    head_names = info.get("head_classnames")
    method = cls(clip, head_names if isinstance(head_names, list) else names, config)
    if not prompts_path.is_file():
        raise MethodError(f"{prompts_path} is missing; {_retrain(directory)}")
    try:
        tensors = load_file(str(prompts_path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError, ...
        raise MethodError(
            f"{prompts_path} is not a readable safetensors file ({type(exc).__name__}: "
            f"{_first_line(exc)}); it may be truncated or damaged: {_retrain(directory)}"
        ) from None
    method.size_to_saved(tensors)
    own = method.learned_state_dict()
    unexpected = sorted(set(tensors) - set(own))
    if unexpected:
        raise MethodError(
            f"{prompts_path} holds tensor(s) {unexpected} that {cls.name} does not learn "
            f"({cls.name} learns {sorted(own)}), although {METHOD_FILE} says {name!r}: the two "
            f"files come from different runs or methods; {_retrain(directory)}"
        )
    for key, value in tensors.items():
        if own[key].shape != value.shape:
            raise MethodError(
                f"{prompts_path}: tensor {key!r} has shape {tuple(value.shape)} but this "
                f"backbone ({clip.name}) needs {tuple(own[key].shape)}; "
                + _shape_hint(info, clip, directory)
            )
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise MethodError(
            f"{prompts_path} lacks tensors {missing} needed by {cls.name}; {_retrain(directory)}"
        )
    bad = non_finite_tensors(tensors)
    if bad:
        raise MethodError(
            f"{prompts_path}: tensor(s) {', '.join(map(repr, bad))} hold NaN or infinite values, "
            "so the prompts cannot classify anything; train the run again (e.g. with a lower "
            "learning rate)"
        )
    method.load_state_dict({**tensors}, strict=False)
    if list(method.classnames) != names:
        method.set_classnames(names)
    return method


def _shape_hint(info: dict[str, Any], clip: ClipBackbone, directory: Path) -> str:
    """Why a saved tensor has another shape: another backbone, or files of different runs."""
    saved = info.get("backbone", {}).get("name")
    if saved is None or saved != clip.name:
        return (
            f"the prompts were saved for {saved or 'another backbone'} — load them on that backbone"
        )
    return (
        f"the prompts were saved for this backbone, so {PROMPTS_FILE} does not fit the settings "
        f"in {METHOD_FILE} (files of different runs?); {_retrain(directory)}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


class OwnClassesMixin:
    """A method whose learned rows belong to the classes it was fitted on (the attribute named
    by `own_classes_attr`) and that classifies other class lists too: it is saved only while it
    points at its own classes, and a load rebuilds it on them, then points it at the asked list.
    Mix in before `PromptMethod`."""

    own_classes_attr: ClassVar[str] = "fitted_classnames"
    own_classes_text: ClassVar[str] = "the classes it was fitted on"  # for the save refusal

    def save(self: Any, directory: str | Path) -> None:
        if self.classnames != getattr(self, self.own_classes_attr):
            raise MethodError(
                f"save {self.name} while it points at {self.own_classes_text}; "
                f"set_classnames(method.{self.own_classes_attr}) first"
            )
        super().save(directory)

    @classmethod
    def load(
        cls: Any, directory: str | Path, clip: ClipBackbone, classnames: list[str] | None = None
    ) -> PromptMethod:
        """Rebuild a saved method on its own classes, then point it at `classnames`."""
        method = super().load(directory, clip)
        if classnames is not None:
            method.set_classnames(list(classnames))
        return method
