"""A small decorator registry of methods (timm's `register_model` is the model).

vlprompt's own methods are the modules of `vlprompt.methods` (all imported with the package).
Another package adds a method without touching vlprompt by declaring an entry point in the group
`vlprompt.methods`, e.g. in its pyproject.toml::

    [project.entry-points."vlprompt.methods"]
    bias_only = "my_package.bias_only"   # a module whose import runs @register_method

Entry points are imported the first time the registry is read (listing or looking up a method),
not at `import vlprompt`, so a plugin may itself import vlprompt.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from vlprompt.errors import MethodError

if TYPE_CHECKING:  # the registry only holds classes; `vlprompt.methods.base` saves through it
    from vlprompt.backbone import ClipBackbone
    from vlprompt.methods.base import MethodConfig, PromptMethod

_METHODS: dict[str, type[PromptMethod]] = {}
ENTRY_POINT_GROUP = "vlprompt.methods"
_plugins_loaded = False


def load_plugins() -> None:
    """Import the methods declared by other packages' `vlprompt.methods` entry points (once;
    a plugin that fails to import is a MethodError naming it)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as exc:
            _plugins_loaded = False  # a fixed plugin loads on the next lookup
            raise MethodError(
                f"the method plugin {point.name!r} ({point.value}, entry point group "
                f"{ENTRY_POINT_GROUP!r}) failed to import: {type(exc).__name__}: {exc}; fix or "
                "uninstall the package that declares it"
            ) from exc


def register_method(cls: type[PromptMethod]) -> type[PromptMethod]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    load_plugins()
    return sorted(_METHODS)


def get_method_class(name: str) -> type[PromptMethod]:
    if name not in _METHODS:
        load_plugins()
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
