"""Data sets for prompt learning: the CoOp benchmarks, user data, few-shot sampling, transforms.

from vlprompt.data import build_dataset, ImageListDataset, transform_for
splits = build_dataset("oxford_pets", "~/data", shots=16, seed=1, subsample="base")
train = ImageListDataset(splits.train, transform_for(clip, train=True))
"""

import importlib
import importlib.util

from vlprompt.data import coop_datasets, imagenet, userdata  # noqa: F401  (register the loaders)
from vlprompt.data.build import build_dataset, load_full
from vlprompt.data.dataset import (
    ImageListDataset,
    drop_bad_images,
    open_image,
    open_image_bounded,
    to_rgb,
)
from vlprompt.data.describe import describe_datasets, format_datasets_table
from vlprompt.data.fewshot import few_shot_sample, sample_splits, subsample_classes
from vlprompt.data.registry import DatasetInfo, get_dataset_info, list_datasets, register_dataset
from vlprompt.data.templates import IMAGENET_TEMPLATES, TEMPLATES
from vlprompt.data.transforms import build_transform, transform_for
from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError

__all__ = [
    "IMAGENET_TEMPLATES",
    "TEMPLATES",
    "DataError",
    "DatasetInfo",
    "DatasetSplits",
    "Datum",
    "ImageListDataset",
    "build_dataset",
    "build_transform",
    "describe_datasets",
    "drop_bad_images",
    "few_shot_sample",
    "format_datasets_table",
    "get_dataset_info",
    "list_datasets",
    "load_full",
    "open_image",
    "open_image_bounded",
    "register_dataset",
    "sample_splits",
    "subsample_classes",
    "to_rgb",
    "transform_for",
]

# The generated mini-world data sets (mini_*) register themselves from data/mini.py when it
# exists; a missing file is fine, but an error inside it must surface.
if importlib.util.find_spec("vlprompt.data.mini") is not None:
    importlib.import_module("vlprompt.data.mini")
