"""Bad input gets a DataError naming the path (and how to get the data set)."""

from __future__ import annotations

import json
import re
import warnings

import pytest

from test_data_trees import make_dtd, make_imagenet, make_imagenet_a, make_oxford_pets, write_image
from vlprompt.data import ImageListDataset, build_dataset, get_dataset_info, load_full
from vlprompt.errors import DataError, VlpromptError


def test_unknown_dataset_lists_close_names_and_choices():
    with pytest.raises(
        DataError,
        match=r"unknown data set 'oxford_pet'\. Did you mean oxford_pets.*Known data sets: caltech101",
    ):
        get_dataset_info("oxford_pet")
    assert issubclass(DataError, VlpromptError) and issubclass(DataError, ValueError)


def test_dataset_info_has_template_variant_and_hint():
    info = get_dataset_info("imagenet_r")
    assert info.variant_of == "imagenet" and info.dataset_dir == "imagenet-rendition"
    assert "DATASETS.md" in info.hint and info.template == "a photo of a {}."
    assert get_dataset_info("dtd").template == "{} texture."


def test_missing_root_and_dataset_folder_say_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"data root not found: .*nope is not a folder"):
        load_full("dtd", tmp_path / "nope")
    with pytest.raises(
        DataError,
        match=r"data set folder not found: .*/dtd is not a folder\. Download .*DATASETS\.md#dtd",
    ):
        load_full("dtd", tmp_path)
    with pytest.raises(DataError, match=r"pass root=DIR"):
        load_full("dtd", None)


def test_missing_image_dir_and_list_files_are_named(tmp_path):
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"list file not found: .*annotations/trainval.txt does not exist"
    ):
        load_full("oxford_pets", tmp_path)
    (tmp_path / "fgvc_aircraft").mkdir()
    with pytest.raises(DataError, match=r"image folder not found: .*fgvc_aircraft/images"):
        load_full("fgvc_aircraft", tmp_path)
    (tmp_path / "imagenet").mkdir()
    with pytest.raises(DataError, match=r"class-name file not found: .*imagenet/classnames.txt"):
        load_full("imagenet", tmp_path)


def test_split_file_pointing_at_missing_images_names_first_and_count(tmp_path):
    root = make_oxford_pets(tmp_path)
    load_full("oxford_pets", root)  # writes the split file
    for name in ("Bengal_1.jpg", "Bengal_2.jpg"):
        (root / "oxford_pets" / "images" / name).unlink()
    with pytest.raises(
        DataError,
        match=r"split_zhou_OxfordPets.json lists 2 image\(s\) that do not exist, first: .*Bengal_\d.jpg",
    ):
        load_full("oxford_pets", root)


def test_malformed_split_file_is_named(tmp_path):
    root = make_dtd(tmp_path)
    split = root / "dtd" / "split_zhou_DescribableTextures.json"
    split.write_text(json.dumps({"train": []}))
    with pytest.raises(
        DataError, match=r"split_zhou_DescribableTextures.json must be a JSON object with keys"
    ):
        load_full("dtd", root)
    split.write_text("{not json")
    with pytest.raises(
        DataError, match=r"cannot read split file .*split_zhou_DescribableTextures.json"
    ):
        load_full("dtd", root)


def test_empty_class_folder_in_a_benchmark_is_named(tmp_path):
    root = make_dtd(tmp_path)
    (root / "dtd" / "images" / "zigzagged").mkdir()
    with pytest.raises(DataError, match=r"class folder .*images/zigzagged holds no images"):
        load_full("dtd", root)


def test_imagenet_variant_with_unknown_wnid(tmp_path):
    root = make_imagenet_a(tmp_path)
    write_image(root / "imagenet-adversarial" / "imagenet-a" / "n99999999" / "x.jpg")
    with pytest.raises(
        DataError, match=r"1 class folder\(s\) are not in .*classnames.txt, first: n99999999"
    ):
        load_full("imagenet_a", root)


def test_imagenet_val_class_without_train_folder(tmp_path):
    root = make_imagenet(tmp_path)
    write_image(root / "imagenet" / "images" / "val" / "n00000001" / "x.JPEG")
    with pytest.raises(DataError, match=r"val/n00000001 is a class with no folder in .*train"):
        load_full("imagenet", root)


def _corrupt(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated JPEG


def test_truncated_image_raises_naming_the_path(tmp_path):
    root = make_dtd(tmp_path)
    splits = build_dataset("dtd", root, cache_dir=False)
    bad = splits.train[0].path
    _corrupt(tmp_path / bad)
    with pytest.raises(
        DataError, match=rf"cannot read image {re.escape(bad)}.*skip_bad_images=True"
    ):
        ImageListDataset(splits.train)[0]
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    from vlprompt.data import Datum

    with pytest.raises(DataError, match=r"cannot read image .*garbage.jpg"):
        ImageListDataset([Datum(str(tmp_path / "garbage.jpg"), 0, "x")])[0]


def test_skip_bad_images_leaves_them_out_with_a_count(tmp_path):
    root = make_dtd(tmp_path)
    full = build_dataset("dtd", root, cache_dir=False)
    _corrupt(tmp_path / full.train[0].path)
    _corrupt(tmp_path / full.test[-1].path)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of dtd, first: "):
        kept = build_dataset("dtd", root, cache_dir=False, skip_bad_images=True)
    assert len(kept.train) == len(full.train) - 1 and len(kept.test) == len(full.test) - 1
    assert full.train[0].path in kept.extra["skipped_images"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageListDataset(kept.train + kept.test)[len(kept.train)]  # all remaining ones load


def test_bad_seed_and_subsample_are_rejected_before_loading(tmp_path):
    with pytest.raises(DataError, match=r"seed='1' must be an integer"):
        build_dataset("dtd", tmp_path, seed="1")
    with pytest.raises(DataError, match=r"subsample='old' must be one of all, base, new"):
        build_dataset("dtd", tmp_path, subsample="old")
