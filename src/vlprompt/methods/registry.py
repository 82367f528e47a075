"""A small decorator registry of methods (timm's `register_model` is the model)."""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import MethodConfig, PromptMethod

_METHODS: dict[str, type[PromptMethod]] = {}


def register_method(cls: type[PromptMethod]) -> type[PromptMethod]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method_class(name: str) -> type[PromptMethod]:
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise MethodError(f"unknown method {name!r}.{hint} Choices: {', '.join(list_methods())}")
    return _METHODS[name]


def make_config(name: str, **overrides: Any) -> MethodConfig:
    """The method's config with the papers' defaults, updated by `overrides` (unknown keys fail)."""
    config_class = get_method_class(name).config_class
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise MethodError(
            f"method {name!r} has no setting {', '.join(map(repr, unknown))}; "
            f"its settings are: {', '.join(sorted(known))}"
        )
    return config_class(**overrides)


def create_method(
    name: str, clip: ClipBackbone, classnames: list[str], **config: Any
) -> PromptMethod:
    """Build a registered method on a loaded CLIP for the given class names."""
    cls = get_method_class(name)
    return cls(clip, list(classnames), make_config(name, **config))
