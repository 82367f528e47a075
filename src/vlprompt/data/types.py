"""The data types every data set in vlprompt produces: items, splits and a torch Dataset."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Datum:
    """One labelled image: a file path, an integer label and the class name."""

    path: str  # absolute path of the image file
    label: int  # 0-based label within the data set (or within the base/new subset)
    classname: str  # human-readable class name, `_` already replaced by a space


@dataclass
class DatasetSplits:
    """A data set ready for training and evaluation.

    `classnames[i]` is the name of label i; `train`/`val`/`test` hold `Datum`s whose labels index
    `classnames`. After few-shot sampling `train` holds `shots` items per label and `val`
    `min(shots, 4)`. After a base/new split labels are relabelled from 0.
    """

    name: str  # registry name, e.g. "oxford_pets" or "mini_shapes"
    classnames: list[str]
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    template: str = "a photo of a {}."  # the data set's hand-crafted template (CoOp's table)
    templates: list[str] = field(default_factory=list)  # optional ensemble (ImageNet's 7)
    extra: dict = field(default_factory=dict)  # data-set specific facts, e.g. imagenet-r's 200 ids
