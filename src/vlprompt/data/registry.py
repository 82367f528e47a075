"""The data-set registry: names -> loader functions plus what a user needs to know about each."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vlprompt.data.templates import DEFAULT_TEMPLATE, check_template
from vlprompt.data.types import DatasetSplits
from vlprompt.errors import DataError

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"

Loader = Callable[..., DatasetSplits]


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about one data set.

    `dataset_dir` is the folder under the data root (CoOp layout) or None for data sets that
    are not found under a root (user formats, generated ones). `variant_of` names the data set
    whose classes a domain-shift variant shares (for the `dg` protocol). `hint` says where to
    get the data.
    """

    name: str
    loader: Loader
    template: str = DEFAULT_TEMPLATE
    variant_of: str | None = None
    description: str = ""
    dataset_dir: str | None = None
    hint: str = ""
    user_format: bool = False  # imagefolder/csv: `root` is the user's own folder or file

    def load(self, root: str | Path | None, **kwargs) -> DatasetSplits:
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise DataError(
                f"root={root!r} of data set {self.name!r} must be a path (str or Path), not "
                f"{type(root).__name__}"
            )
        return self.loader(Path(root).expanduser() if root is not None else None, **kwargs)


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str,
    *,
    template: str = DEFAULT_TEMPLATE,
    variant_of: str | None = None,
    description: str = "",
    dataset_dir: str | None = None,
    hint: str = "",
    user_format: bool = False,
) -> Callable[[Loader], Loader]:
    """Register `loader(root: Path | None, **kwargs) -> DatasetSplits` under `name`.

    The loader returns the FULL data set; `build_dataset` does few-shot sampling and the
    base/new split. Registering a name twice replaces the earlier loader (handy in tests).
    """
    check_template(template)

    def decorator(loader: Loader) -> Loader:
        _REGISTRY[name] = DatasetInfo(
            name=name,
            loader=loader,
            template=template,
            variant_of=variant_of,
            description=description,
            dataset_dir=dataset_dir,
            hint=hint or (f"see {COOP_DATASETS_MD}" if dataset_dir else ""),
            user_format=user_format,
        )
        return loader

    return decorator


def list_datasets() -> list[str]:
    """All registered data-set names, sorted."""
    return sorted(_REGISTRY)


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry of `name`; an unknown name raises DataError listing the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise DataError(
        f"unknown data set {name!r}.{hint} Known data sets: {', '.join(list_datasets())}"
    ) from None
