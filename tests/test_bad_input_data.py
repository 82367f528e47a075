"""Bad or unusual input files: every PIL image mode decoded right, and every bad file, label,
path or template a DataError naming it (never a raw KeyError, TypeError or MemoryError)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_data_trees import (
    class_folders,
    make_dtd,
    make_imagenet,
    make_imagenetv2,
    make_oxford_flowers,
    make_oxford_pets,
    make_stanford_cars,
    make_ucf101,
    write_image,
    write_text,
)
from test_mini_data import TINY
from vlprompt.data import (
    DatasetSplits,
    build_dataset,
    load_full,
    open_image,
    register_dataset,
    registry,
    to_rgb,
)
from vlprompt.data import mini as data_mini
from vlprompt.data.fewshot import cache_file, cached_sample
from vlprompt.data.templates import check_template
from vlprompt.errors import DataError
from vlprompt.mini.datasets import MINI_DATASETS

W, H = 7, 5  # not square: a swapped axis shows


# --- 1. every image mode to RGB --------------------------------------------------------------


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _bytes_image(mode: str, pixels: np.ndarray) -> Image.Image:
    return Image.frombytes(mode, (W, H), np.ascontiguousarray(pixels).tobytes())


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Reference compositing over white, in floats: c * a + 255 * (1 - a), rounded."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.round(rgb.astype(np.float64) * a + 255.0 * (1.0 - a))


def _grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None].astype(np.float64), 3, axis=-1)


def _palette_image(mode: str, extra: np.ndarray | None = None):
    rng = _rng()
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (H, W), dtype=np.uint8)
    index[0, 0] = 7  # the transparency entry below is used
    pixels = index if extra is None else np.dstack([index, extra])
    image = _bytes_image(mode, pixels)
    image.putpalette(palette.flatten().tolist())
    return image, palette, index


def _stretch_ref(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    return _grey3(np.round((v - v.min()) / (v.max() - v.min()) * 255.0))


def case_1():
    bits = _rng().integers(0, 2, (H, W)).astype(bool)
    image = Image.fromarray(bits)
    assert image.mode == "1"
    return image, _grey3(bits * 255.0), 0


def case_L():
    grey = _rng().integers(0, 256, (H, W), dtype=np.uint8)
    return _bytes_image("L", grey), _grey3(grey), 0


def case_L_transparency():
    grey = _rng().integers(0, 256, (H, W), dtype=np.uint8)
    image = _bytes_image("L", grey)
    image.info["transparency"] = int(grey[0, 0])
    ref = _grey3(grey)
    ref[grey == grey[0, 0]] = 255
    return image, ref, 0


def case_P():
    image, palette, index = _palette_image("P")
    return image, palette[index].astype(np.float64), 0


def case_P_transparency_index():
    image, palette, index = _palette_image("P")
    image.info["transparency"] = 7
    ref = palette[index].astype(np.float64)
    ref[index == 7] = 255
    return image, ref, 0


def case_P_transparency_table():
    image, palette, index = _palette_image("P")
    table = _rng().integers(0, 256, 256, dtype=np.uint8)
    image.info["transparency"] = table.tobytes()
    return image, _over_white(palette[index], table[index]), 0


def case_PA():
    alpha = _rng().integers(0, 256, (H, W), dtype=np.uint8)
    image, palette, index = _palette_image("PA", alpha)
    return image, _over_white(palette[index], alpha), 0


def case_LA():
    grey, alpha = _rng().integers(0, 256, (2, H, W), dtype=np.uint8)
    return _bytes_image("LA", np.dstack([grey, alpha])), _over_white(_grey3(grey), alpha), 0


def case_RGB_transparency():
    rgb = _rng().integers(0, 256, (H, W, 3), dtype=np.uint8)
    image = _bytes_image("RGB", rgb)
    image.info["transparency"] = tuple(int(c) for c in rgb[0, 0])
    ref = rgb.astype(np.float64)
    ref[(rgb == rgb[0, 0]).all(-1)] = 255
    return image, ref, 0


def case_RGBA():
    rgba = _rng().integers(0, 256, (H, W, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255  # fully transparent and fully opaque pixels
    return _bytes_image("RGBA", rgba), _over_white(rgba[..., :3], rgba[..., 3]), 0


def _premultiplied(channels: int):
    rng = _rng()
    colour = rng.integers(0, 256, (H, W, channels), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    stored = np.round(colour * (alpha[..., None] / 255.0)).astype(np.uint8)
    return colour, alpha, np.dstack([stored, alpha])


def case_RGBa():
    colour, alpha, stored = _premultiplied(3)
    return _bytes_image("RGBa", stored), _over_white(colour, alpha), 1


def case_La():
    colour, alpha, stored = _premultiplied(1)
    return _bytes_image("La", stored), _over_white(_grey3(colour[..., 0]), alpha), 1


def case_CMYK():
    cmyk = _rng().integers(0, 256, (H, W, 4), dtype=np.uint8)
    k = cmyk[..., 3:].astype(np.float64)
    ref = np.round((255.0 - cmyk[..., :3]) * (255.0 - k) / 255.0)
    return _bytes_image("CMYK", cmyk), ref, 1


def case_YCbCr():
    ycc = _rng().integers(0, 256, (H, W, 3), dtype=np.uint8).astype(np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    ref = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return _bytes_image("YCbCr", ycc.astype(np.uint8)), np.clip(np.round(ref), 0, 255), 1


def _sixteen_bit() -> np.ndarray:
    values = _rng().integers(0, 65536, (H, W)).astype(np.uint16)
    values[0, :4] = [0, 128, 129, 65535]  # the ends and the first rounding step
    return values


def _sixteen_ref(values: np.ndarray) -> np.ndarray:
    return _grey3(np.round(values.astype(np.float64) / 257.0))


def case_I16(mode: str = "I;16", dtype: str = "<u2"):
    values = _sixteen_bit()
    return _bytes_image(mode, values.astype(dtype)), _sixteen_ref(values), 0


def case_I16B():
    return case_I16("I;16B", ">u2")


def case_I16L():
    return case_I16("I;16L", "<u2")


def case_I16_transparency():
    image, ref, tol = case_I16()
    key = int(_sixteen_bit()[1, 1])
    image.info["transparency"] = key
    ref[_sixteen_bit() == key] = 255
    return image, ref, tol


def case_I_16bit_range():
    values = _sixteen_bit()
    image = Image.fromarray(values.astype(np.int32))
    assert image.mode == "I"
    return image, _sixteen_ref(values), 0


def case_I_wide_range():
    values = _rng().integers(-1000, 100000, (H, W)).astype(np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    return image, _stretch_ref(values), 1


def case_F_unit_range():
    values = _rng().random((H, W)).astype(np.float32)
    values[0, :2] = [0.0, 1.0]
    image = Image.fromarray(values)
    assert image.mode == "F"
    return image, _grey3(np.round(values.astype(np.float64) * 255.0)), 1


def case_F_wide_range():
    values = (_rng().random((H, W)) * 500.0 - 100.0).astype(np.float32)
    return Image.fromarray(values), _stretch_ref(values), 1


def case_F_not_finite():
    values = _rng().random((H, W)).astype(np.float32)
    values[0, :3] = [np.nan, np.inf, -np.inf]
    finite = values[np.isfinite(values)].astype(np.float64)
    ref = np.round(values.astype(np.float64) * 255.0)
    ref[0, :3] = [0, round(finite.max() * 255), round(finite.min() * 255)]
    return Image.fromarray(values), _grey3(ref), 1


MODE_CASES = {
    name[len("case_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_to_rgb_matches_a_numpy_reference_for_every_mode(case):
    image, reference, tolerance = MODE_CASES[case]()
    before = image.copy()
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == (W, H)
    diff = np.abs(np.asarray(out).astype(np.float64) - reference)
    assert diff.max() <= tolerance, (case, diff.max())
    assert image.mode == before.mode and image.tobytes() == before.tobytes()  # input unchanged


def test_to_rgb_of_rgb_is_an_equal_copy_and_non_images_are_refused():
    rgb = _bytes_image("RGB", _rng().integers(0, 256, (H, W, 3), dtype=np.uint8))
    out = to_rgb(rgb)
    assert out is not rgb and out.tobytes() == rgb.tobytes()
    with pytest.raises(DataError, match=r"expected a PIL image, got ndarray"):
        to_rgb(np.zeros((2, 2, 3), np.uint8))


def test_sixteen_bit_png_file_decodes_to_scaled_grey(tmp_path):
    values = _sixteen_bit()
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as reopened:
        assert reopened.mode in ("I;16", "I")  # I;16 on Pillow >= 10.? , I before
        assert np.array_equal(np.asarray(reopened).astype(np.int64), values)
    decoded = np.asarray(open_image(str(path))).astype(np.float64)
    assert np.abs(decoded - _sixteen_ref(values)).max() <= 1
    assert decoded.mean() < 250  # not clipped to white


@pytest.mark.parametrize("case", ["RGBA", "LA", "P_transparency_index", "P_transparency_table"])
def test_transparent_png_files_are_composited_over_white(tmp_path, case):
    image, reference, tolerance = MODE_CASES[case]()
    path = tmp_path / "alpha.png"
    image.save(path, **({"transparency": image.info["transparency"]} if "P_" in case else {}))
    decoded = np.asarray(open_image(str(path))).astype(np.float64)
    assert np.abs(decoded - reference).max() <= tolerance


# --- 2. a classifier needs two classes --------------------------------------------------------


def _one_class_imagefolder(tmp_path: Path) -> tuple[Path, str]:
    class_folders(tmp_path / "pics", ["tabby_cat"], 10)
    return tmp_path / "pics", "imagefolder"


def _one_class_csv(tmp_path: Path) -> tuple[Path, str]:
    for i in range(6):
        write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i)
    rows = [f"imgs/{i}.jpg,tabby_cat,{['train', 'val', 'test'][i % 3]}" for i in range(6)]
    return write_text(tmp_path / "one.csv", ["path,label,split", *rows]), "csv"


def _one_class_split_file(tmp_path: Path) -> tuple[Path, str]:
    root = make_dtd(tmp_path)
    files = sorted((root / "dtd" / "images" / "banded").iterdir())
    split = {s: [[f"banded/{files[i].name}", 0, "tabby_cat"]] for i, s in enumerate(SPLITS)}
    (root / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return root, "dtd"


SPLITS = ("train", "val", "test")
SOURCE = {"imagefolder": "pics", "csv": "one.csv", "dtd": "split_zhou_DescribableTextures.json"}


@pytest.mark.parametrize("make", [_one_class_imagefolder, _one_class_csv, _one_class_split_file])
def test_a_single_class_is_refused_naming_it_and_its_source(tmp_path, make):
    root, name = make(tmp_path)
    assert load_full(name, root).classnames == ["tabby cat"]  # readable as it is
    with pytest.raises(
        DataError,
        match=rf"a classifier needs at least two classes; found 1: 'tabby cat' in \S*"
        rf"{SOURCE[name]}\. Add images",
    ):
        build_dataset(name, root, cache_dir=False)


@pytest.fixture
def own_registry(monkeypatch):
    """Data sets registered by a test are gone after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture
def tiny_mini(monkeypatch):
    """Every mini data set with 3/2/2 images per class, so rendering takes milliseconds."""
    for name, spec in list(MINI_DATASETS.items()):
        monkeypatch.setitem(MINI_DATASETS, name, dataclasses.replace(spec, per_class=TINY))


def test_a_loader_without_classes_is_refused(tmp_path, own_registry):
    empty = DatasetSplits("nothing", [], [], [], [], extra={"source": str(tmp_path / "x.txt")})
    register_dataset("test_no_classes")(lambda root, **_: empty)
    with pytest.raises(DataError, match=r"needs at least two classes; found none in .*x\.txt"):
        build_dataset("test_no_classes", None)


# --- 3. labels are checked before anything is sized by them -----------------------------------


def _dtd_split(tmp_path: Path, split: object) -> tuple[Path, Path]:
    """A DTD tree whose split file holds `split` (JSON text if a str)."""
    root = make_dtd(tmp_path)
    path = root / "dtd" / "split_zhou_DescribableTextures.json"
    path.write_text(split if isinstance(split, str) else json.dumps(split), encoding="utf-8")
    return root, path


def _two_class_split(tmp_path: Path) -> dict:
    images = tmp_path / "dtd" / "images"
    files = {c: sorted(p.name for p in (images / c).iterdir()) for c in ("banded", "blotchy")}
    return {
        s: [[f"{c}/{files[c][i]}", y, c] for y, c in enumerate(files)] for i, s in enumerate(SPLITS)
    }


def _edited_split(tmp_path: Path, edit) -> tuple[Path, Path]:
    make_dtd(tmp_path)
    split = _two_class_split(tmp_path)
    edit(split)
    return _dtd_split(tmp_path, split)


def test_a_valid_two_class_split_file_loads(tmp_path):
    root, _ = _edited_split(tmp_path, lambda split: None)
    full = load_full("dtd", root)
    assert full.classnames == ["banded", "blotchy"]
    assert [d.label for d in full.test] == [0, 1]


@pytest.mark.parametrize(
    "label, message",
    [
        (10**30, r"test entry 1 has label 10{30}, but the file names 2 class\(es\), so labels "
                 r"run 0\.\.1"),
        (-1, r"test entry 1 has label -1, but the file names 2 class\(es\)"),
        (2, r"test entry 1 has label 2, but the file names 2 class\(es\)"),
    ],
)  # fmt: skip
def test_split_file_labels_out_of_range_name_the_entry(tmp_path, label, message):
    def edit(split):
        split["test"][1][1] = label

    root, path = _edited_split(tmp_path, edit)
    with pytest.raises(DataError, match=rf"split file .*{path.name}: {message}"):
        load_full("dtd", root)


def _rename(part: str, index: int, label: int, classname: str):
    def edit(split):
        split[part][index][1:] = [label, classname]

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_rename("val", 1, 0, "blotchy"), r"val entry 1: label 0 is named 'blotchy' here but "
                                          r"'banded' before; each label needs one class name"),
        (_rename("train", 1, 1, "banded"), r"train entry 1: class 'banded' has label 1 here but 0 "
                                           r"before; each class name needs one label"),
    ],
)  # fmt: skip
def test_split_file_labels_and_class_names_must_match_one_to_one(tmp_path, edit, message):
    root, path = _edited_split(tmp_path, edit)
    with pytest.raises(DataError, match=rf"split file .*{path.name}: {message}"):
        load_full("dtd", root)


def test_an_integer_too_long_for_python_in_a_split_file(tmp_path):
    root, path = _dtd_split(tmp_path, '{"train": [["a.jpg", ' + "1" * 5000 + ', "a"]]}')
    with pytest.raises(DataError, match=rf"cannot read split file .*{path.name}: .*too long"):
        load_full("dtd", root)


def _csv(tmp_path: Path, header: str, rows: list[str], name: str = "list.csv") -> Path:
    for i in range(6):
        write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i)
    return write_text(tmp_path / name, [header, *rows])


@pytest.mark.parametrize(
    "label, message",
    [
        (str(10**30), r"integer labels must run 0\.\.10{30} without gaps, but line 4 has "
                      r"label 10{30} and 3 row\(s\) hold at most 3 classes"),
        ("3", r"integer labels must run 0\.\.3 without gaps, but line 4 has label 3"),
        ("-1", r"line 4: label -1 is negative"),
    ],
)  # fmt: skip
def test_csv_labels_out_of_range_name_the_line(tmp_path, label, message):
    rows = ["imgs/0.jpg,0,a,train", "imgs/1.jpg,1,b,val", f"imgs/2.jpg,{label},c,test"]
    path = _csv(tmp_path, "path,label,classname,split", rows)
    with pytest.raises(DataError, match=rf"CSV file .*list\.csv:? {message}"):
        load_full("csv", path)


def test_csv_line_numbers_count_blank_lines(tmp_path):
    rows = ["imgs/0.jpg,0,a,train", "", "imgs/1.jpg,9,b,val"]
    path = _csv(tmp_path, "path,label,classname,split", rows)
    with pytest.raises(DataError, match=r"but line 4 has label 9"):
        load_full("csv", path)


def test_list_file_with_a_huge_label_is_a_gap_error(tmp_path):
    root = make_oxford_pets(tmp_path)
    path = root / "oxford_pets" / "annotations" / "test.txt"
    lines = path.read_text().splitlines()
    stem = lines[0].split()[0]
    path.write_text("\n".join([*lines, f"{stem} {10**30} 1 1"]) + "\n")
    with pytest.raises(
        DataError,
        match=r"labels must run 0\.\.9{30} without gaps, but label\(s\) \[3, 4, 5, 6, 7\] have",
    ):
        load_full("oxford_pets", root)


# --- 4. split-file paths stay inside the image folder; CSV paths may go anywhere --------------


@pytest.mark.parametrize("entry", ["../../etc/passwd", "/etc/passwd", "banded/../../x.jpg", ".."])
def test_split_file_path_leaving_the_image_folder_is_refused(tmp_path, entry):
    def edit(split):
        split["val"][0][0] = entry

    root, path = _edited_split(tmp_path, edit)
    with pytest.raises(
        DataError,
        match=rf"split file .*{path.name}: val entry 0 path '{entry}' leaves the image folder "
        r".*dtd/images; split files list paths relative to it",
    ):
        load_full("dtd", root)


def test_split_file_path_through_a_parent_that_stays_inside_is_fine(tmp_path):
    def edit(split):
        split["val"][0][0] = "blotchy/../" + split["val"][0][0]

    root, _ = _edited_split(tmp_path, edit)
    assert Path(load_full("dtd", root).val[0].path).resolve().is_file()


def test_csv_paths_may_be_absolute_or_climb_out_of_the_csv_folder(tmp_path):
    for i in range(6):
        write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i)
    rows = [
        f"{tmp_path / 'imgs' / '0.jpg'},a,train",
        "../imgs/1.jpg,b,train",
        f"{tmp_path / 'imgs' / '2.jpg'},a,val",
        "../imgs/3.jpg,b,test",
    ]
    path = write_text(tmp_path / "lists" / "mine.csv", ["path,label,split", *rows])
    full = load_full("csv", path)
    assert [d.path for d in full.train] == [
        str(tmp_path / "imgs" / "0.jpg"),
        str(tmp_path / "imgs" / "1.jpg"),
    ]
    assert full.test[0].path == str(tmp_path / "imgs" / "3.jpg")


# --- 5. wrong JSON types in split files -------------------------------------------------------


def _set(part: str, index: int | None, value):
    def edit(split):
        if index is None:
            split[part] = value
        else:
            split[part][index] = value

    return edit


def _set_field(part: str, field: int, value):
    def edit(split):
        split[part][1][field] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("train", None, {"a": 1}), r"'train' holds dict \{'a': 1\}; expected a list of "),
        (_set("val", None, "banded/x.jpg"), r"'val' holds str 'banded/x.jpg'; expected a list"),
        (_set("test", 0, "banded/x.jpg"), r"test entry 0 'banded/x.jpg' is not a list of three"),
        (_set("test", 0, ["banded/x.jpg", 0]), r"test entry 0 \['banded/x.jpg', 0\] is not a "),
        (_set_field("train", 0, 17), r"train entry 1 \[17, 1, 'blotchy'\] has a relpath that is"),
        (_set_field("train", 0, ""), r"train entry 1 \['', 1, 'blotchy'\] has a relpath that is"),
        (_set_field("val", 1, 1.5), r"val entry 1 .* has label 1\.5, not an integer"),
        (_set_field("val", 1, 1.0), r"val entry 1 .* has label 1\.0, not an integer"),
        (_set_field("val", 1, True), r"val entry 1 .* has label True, not an integer"),
        (_set_field("val", 1, "1"), r"val entry 1 .* has label '1', not an integer"),
        (_set_field("test", 2, 5), r"test entry 1 .* has a classname that is not a non-empty"),
        (_set_field("test", 2, " "), r"test entry 1 .* has a classname that is not a non-empty"),
        (_set_field("test", 2, ["x"]), r"test entry 1 .* has a classname that is not a non-empt"),
    ],
)  # fmt: skip
def test_wrong_json_types_in_a_split_file_name_file_part_and_entry(tmp_path, edit, message):
    root, path = _edited_split(tmp_path, edit)
    with pytest.raises(DataError, match=rf"^split file \S*{path.name}: {message}") as info:
        load_full("dtd", root)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100000, r"nested too deeply"),
        ('["train", "val", "test"]', r"must be a JSON object with keys 'train', 'val' and"),
    ],
)
def test_unreadable_split_file_json(tmp_path, text, message):
    root, path = _dtd_split(tmp_path, text)
    with pytest.raises(DataError, match=rf"{path.name}.*{message}"):
        load_full("dtd", root)


def test_split_file_with_a_byte_order_mark_is_read(tmp_path):
    make_dtd(tmp_path)
    root, path = _dtd_split(tmp_path, "\ufeff" + json.dumps(_two_class_split(tmp_path)))
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_full("dtd", root).classnames == ["banded", "blotchy"]


# --- 6. CSV rows and encodings ----------------------------------------------------------------


@pytest.mark.parametrize(
    "row, message",
    [
        ("imgs/2.jpg,1", r"line 4: 2 field\(s\) but the header has 3 \(path,label,classname\); "
                         r"fill in the missing values"),
        ("imgs/2.jpg", r"line 4: 1 field\(s\) but the header has 3"),
        ("imgs/2,b.jpg,1,b", r"line 4: 4 fields but the header has 3 \(path,label,classname\); "
                             r"quote a value that holds a comma"),
        ("imgs/2.jpg, ,b", r"line 4: the label is empty; fill it in"),
        ("imgs/2.jpg,1,", r"line 4: the classname is empty; fill it in"),
    ],
)  # fmt: skip
def test_csv_row_with_missing_extra_or_empty_fields_names_the_line(tmp_path, row, message):
    path = _csv(tmp_path, "path,label,classname", ["imgs/0.jpg,0,a", "imgs/1.jpg,1,b", row])
    with pytest.raises(DataError, match=rf"CSV file .*list\.csv {message}"):
        load_full("csv", path)


def test_csv_with_a_byte_order_mark_finds_its_header(tmp_path):
    rows = [f"imgs/{i}.jpg,{['cat', 'dog'][i % 2]},{SPLITS[i % 3]}" for i in range(6)]
    path = _csv(tmp_path, "path,label,split", rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Excel saves "CSV UTF-8"
    full = load_full("csv", path)
    assert full.classnames == ["cat", "dog"]
    assert full.train[0].path == str(tmp_path / "imgs" / "0.jpg")


def test_csv_not_in_utf8_says_so(tmp_path):
    path = _csv(tmp_path, "path,label", ["imgs/0.jpg,café", "imgs/1.jpg,thé"])
    path.write_bytes(path.read_text().encode("latin-1"))
    with pytest.raises(DataError, match=r"cannot read CSV file .*list\.csv: .*; save it as UTF-8"):
        load_full("csv", path)


def test_classnames_json_with_non_string_names(tmp_path):
    class_folders(tmp_path / "pics", ["a", "b"], 4)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"a": "apple", "b": ["banana"]}))
    with pytest.raises(DataError, match=r"names\.json must be a JSON object .*the name of 'b'"):
        load_full("imagefolder", tmp_path / "pics", classnames_file=names)
    names.write_text(json.dumps(["apple", "banana"]))
    with pytest.raises(DataError, match=r"names\.json must be a JSON object mapping folder"):
        load_full("imagefolder", tmp_path / "pics", classnames_file=names)


# --- 7. the mini data sets' own cache ---------------------------------------------------------


def _mini_folder(tmp_path: Path) -> Path:
    return data_mini.mini_root(tmp_path) / "mini_colors"


@pytest.mark.parametrize(
    "broken",
    [
        "{}",
        '{"train": [], "val": []}',
        '{"train": [], "val": [], "test": {}}',
        '{"train": [["../x.png", 0, "red shape"]], "val": [], "test": []}',
        '{"train": [["a.png", 99, "red shape"]], "val": [], "test": []}',
        '{"train": [["a.png", 0, "not its name"]], "val": [], "test": []}',
        "[1, 2",
    ],
)
def test_a_broken_mini_split_file_is_rendered_again(tiny_mini, tmp_path, broken):
    first = load_full("mini_colors", tmp_path)
    split_file = _mini_folder(tmp_path) / data_mini.SPLIT_FILE
    split_file.write_text(broken)
    again = load_full("mini_colors", tmp_path)
    assert (again.train, again.val, again.test) == (first.train, first.val, first.test)
    assert json.loads(split_file.read_text())["test"][0][0] == "test/00_red_shape/000.png"


def test_a_mini_split_broken_after_rendering_says_what_to_do(tiny_mini, tmp_path, monkeypatch):
    folder = data_mini.materialize("mini_colors", tmp_path)
    (folder / data_mini.SPLIT_FILE).write_text("{}")
    monkeypatch.setattr(data_mini, "materialize", lambda *a, **k: folder)
    with pytest.raises(
        DataError, match=rf"split_mini\.json is not a valid split of mini_colors: delete {folder}"
    ):
        load_full("mini_colors", tmp_path)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_folders_of_dead_renders_are_removed_live_ones_kept(tiny_mini, tmp_path):
    base = data_mini.mini_root(tmp_path)
    base.mkdir(parents=True)
    dead = base / (data_mini.temp_prefix("mini_colors", _dead_pid()) + "abc_123x")
    live = base / (data_mini.temp_prefix("mini_shapes", os.getpid()) + "k2j4h5g6")
    other_old = base / ".mini_colors.render-elsewhere.example-12-aaaaaaaa"
    other_new = base / ".mini_colors.render-elsewhere.example-13-bbbbbbbb"
    not_ours = base / ".mini_colors.keep-me"
    for folder in (dead, live, other_old, other_new, not_ours):
        (folder / "train").mkdir(parents=True)
    day_ago = time.time() - data_mini.STALE_TEMP_AGE_S - 60
    os.utime(other_old, (day_ago, day_ago))
    load_full("mini_colors", tmp_path)
    left = sorted(p.name for p in base.iterdir())
    assert left == sorted(["mini_colors", live.name, other_new.name, not_ours.name])


def test_a_failed_render_is_a_data_error_and_leaves_no_temp_folder(
    tiny_mini,
    tmp_path,
    monkeypatch,
):
    def full_disk(spec, folder, style):
        (folder / "train").mkdir()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_mini, "_render", full_disk)
    with pytest.raises(
        DataError, match=r"cannot render the mini data set mini_colors under .*No space left"
    ):
        load_full("mini_colors", tmp_path)
    assert list(data_mini.mini_root(tmp_path).iterdir()) == []


# --- 8. templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, message",
    [
        ("a photo of a {name}.", r"has the field '\{name\}': only a plain '\{\}' is filled in"),
        ("a photo of a {0}.", r"has the field '\{0\}'"),
        ("a {} of {x.y}", r"has the field '\{x\.y\}'"),
        ("a {!r}", r"has the field '\{!r\}'"),
        ("a {:>9}", r"has the field '\{:>9\}'"),
        ("a photo of a { }.", r"has the field '\{ \}'"),
        ("a photo of a {", r"Single '\{' encountered .*\(write a literal brace as '\{\{'"),
        ("a photo of a {.", r"expected '\}' before end of string"),
        ("a photo of a } {}.", r"Single '\}' encountered"),
        ("{} and {}", r"has 2 '\{\}' fields; a template needs exactly one"),
        ("no placeholder", r"has 0 '\{\}' fields; a template needs exactly one"),
        (None, r"template None is not a string \(NoneType\)"),
    ],
)
def test_bad_templates_name_the_bad_field(template, message):
    with pytest.raises(DataError, match=message) as info:
        check_template(template)
    assert "\n" not in str(info.value)


def test_literal_braces_are_fine_in_a_template():
    template = "a {{sketch}} of a {}."
    assert check_template(template) == template
    assert template.format("cat") == "a {sketch} of a cat."


# --- other files of the benchmarks -----------------------------------------------------------


def test_list_file_not_in_utf8_says_so(tmp_path):
    root = make_oxford_pets(tmp_path)
    path = root / "oxford_pets" / "annotations" / "trainval.txt"
    path.write_bytes(path.read_bytes() + "Café_1 1 1 1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"cannot read list file .*trainval\.txt: .*save it as UTF"):
        load_full("oxford_pets", root)


def test_classnames_txt_with_a_byte_order_mark_is_read(tmp_path):
    root = make_imagenet(tmp_path)
    path = root / "imagenet" / "classnames.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_full("imagenet", root).classnames[0] == "tench"


@pytest.mark.parametrize("label", ["x", "0", "1.5", "²"])
def test_list_file_label_that_is_not_a_whole_number_from_1(tmp_path, label):
    root = make_oxford_pets(tmp_path)
    path = root / "oxford_pets" / "annotations" / "test.txt"
    path.write_text(path.read_text() + f"Bengal_1 {label} 1 1\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=rf"test\.txt: bad line 'Bengal_1 {label} 1 1'; its label .* from 1"
    ):
        load_full("oxford_pets", root)


@pytest.mark.parametrize(
    "file, line, message",
    [
        ("testlist01.txt", "Archery", r"testlist01\.txt: bad line 'Archery'; expected 'Action/"),
        ("testlist01.txt", "Archery/a/b.avi", r"bad line 'Archery/a/b\.avi'"),
        ("classInd.txt", "4", r"classInd\.txt: bad line '4'; expected '1 Action'"),
        ("classInd.txt", "x Jump", r"classInd\.txt: bad line 'x Jump'; its label 'x'"),
    ],
)
def test_ucf101_bad_list_lines(tmp_path, file, line, message):
    root = make_ucf101(tmp_path)
    path = root / "ucf101" / "ucfTrainTestlist" / file
    path.write_text(path.read_text() + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_full("ucf101", root)


def test_flowers_bad_label_and_name_files(tmp_path):
    root = make_oxford_flowers(tmp_path)
    ddir = root / "oxford_flowers"
    names = ddir / "cat_to_name.json"
    good_names = names.read_text()
    names.write_text(json.dumps(["pink primrose"]))
    with pytest.raises(DataError, match=r"cat_to_name\.json must be a JSON object mapping"):
        load_full("oxford_flowers", root)
    names.write_text(good_names)
    labels = ddir / "imagelabels.mat"
    labels.write_bytes(b"not a MATLAB file at all" * 10)
    with pytest.raises(DataError, match=r"cannot read MATLAB file .*imagelabels\.mat: "):
        load_full("oxford_flowers", root)
    from scipy.io import savemat

    savemat(str(labels), {"other": np.array([[1, 2]])})
    with pytest.raises(DataError, match=r"imagelabels\.mat holds no 'labels' variable"):
        load_full("oxford_flowers", root)


def test_stanford_cars_class_outside_the_class_names(tmp_path):
    from test_data_trees import _car_annos

    root = make_stanford_cars(tmp_path)
    ddir = root / "stanford_cars"
    _car_annos(ddir / "cars_test_annos_withlabels.mat", [("10000.jpg", 1), ("20000.jpg", 200)])
    with pytest.raises(
        DataError,
        match=r"cars_test_annos_withlabels\.mat: image 20000\.jpg has class 200, but"
        r" .*cars_meta\.mat names classes 1\.\.2",
    ):
        load_full("stanford_cars", root)


@pytest.mark.parametrize("folder", ["²", "4", "9" * 200])
def test_imagenetv2_folder_that_is_not_a_label(tmp_path, folder):
    root = make_imagenetv2(tmp_path)
    (root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / folder).mkdir()
    with pytest.raises(DataError, match=r"ImageNetV2 folders must be labels 0\.\.3"):
        load_full("imagenetv2", root)


# --- the few-shot cache and the registry ------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2, 3]",
        '{"version": 1, "shots": 1, "seed": 1, "train": [["a.jpg", 0, ["x"]]], "val": []}',
        '{"version": 1, "shots": 1, "seed": 1, "train": {}, "val": []}',
        "[" * 100000,
    ],
)
def test_a_broken_few_shot_cache_is_ignored_and_resampled(tmp_path, content):
    full = load_full("dtd", make_dtd(tmp_path))
    cache = tmp_path / "cache"
    path = cache_file(cache, 1, 1)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.warns(UserWarning, match=r"ignoring few-shot cache .*shot_1-seed_1\.json"):
        sampled = cached_sample(full, 1, 1, cache)
    assert len(sampled.train) == 3 and {d.label for d in sampled.train} == {0, 1, 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached_sample(full, 1, 1, cache).train == sampled.train  # rewritten, valid


def test_a_loader_returning_something_else_and_a_root_of_the_wrong_type(own_registry):
    register_dataset("test_returns_a_list")(lambda root, **_: [1, 2])
    with pytest.raises(
        DataError, match=r"the loader of data set 'test_returns_a_list' returned list; a loader"
    ):
        load_full("test_returns_a_list")
    with pytest.raises(DataError, match=r"root=42 of data set 'dtd' must be a path"):
        load_full("dtd", 42)
