"""User data: `imagefolder` and `csv`, plus the real Fashion-MNIST images when installed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_data_trees import class_folders, write_image, write_text
from vlprompt.data import build_dataset, load_full
from vlprompt.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
]  # fmt: skip


def test_imagefolder_splits_by_ratios_with_folder_class_names(tmp_path):
    class_folders(tmp_path / "pics", ["golden_retriever", "tabby_cat"], 10, ext=".png")
    (tmp_path / "pics" / "tabby_cat" / "notes.txt").write_text("not an image")
    full = load_full("imagefolder", tmp_path / "pics")
    assert full.classnames == ["golden retriever", "tabby cat"]
    assert (len(full.train), len(full.val), len(full.test)) == (10, 4, 6)
    assert not any(d.path.endswith(".txt") for d in full.train + full.val + full.test)
    other = load_full("imagefolder", tmp_path / "pics", split=(0.6, 0.0, 0.4), split_seed=3)
    assert (len(other.train), len(other.val), len(other.test)) == (12, 0, 8)
    again = load_full("imagefolder", tmp_path / "pics", split=(0.6, 0.0, 0.4), split_seed=3)
    assert [d.path for d in again.train] == [d.path for d in other.train]


def test_imagefolder_with_train_val_test_folders_and_classnames_file(tmp_path):
    root = tmp_path / "pre"
    class_folders(root / "train", ["a_1", "b_2"], 5)
    class_folders(root / "val", ["a_1", "b_2"], 1)
    class_folders(root / "test", ["a_1", "b_2"], 2)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"a_1": "apple", "b_2": "banana"}))
    full = load_full("imagefolder", root, classnames_file=names)
    assert full.classnames == ["apple", "banana"]
    assert (len(full.train), len(full.val), len(full.test)) == (10, 2, 4)
    assert all(f"/test/{'a_1' if d.label == 0 else 'b_2'}/" in d.path for d in full.test)
    txt = write_text(tmp_path / "names.txt", ["a_1 red apple", "b_2 yellow banana"])
    assert load_full("imagefolder", root, classnames_file=txt).classnames[1] == "yellow banana"


def test_imagefolder_without_val_folder_holds_out_20_percent_of_train(tmp_path):
    class_folders(tmp_path / "train", ["x", "y"], 5)
    class_folders(tmp_path / "test", ["x", "y"], 2)
    full = load_full("imagefolder", tmp_path)
    assert (len(full.train), len(full.val), len(full.test)) == (8, 2, 4)


def test_imagefolder_errors_name_the_path(tmp_path):
    class_folders(tmp_path / "d", ["full"], 4)
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*d/empty holds no images"):
        load_full("imagefolder", tmp_path / "d")
    with pytest.raises(DataError, match=r"image folder not found: .*nowhere"):
        load_full("imagefolder", tmp_path / "nowhere")
    with pytest.raises(DataError, match="needs root"):
        load_full("imagefolder", None)
    class_folders(tmp_path / "tiny", ["one"], 1)
    with pytest.raises(DataError, match=r"class 'one' in .*tiny has 1 image\(s\): too few"):
        load_full("imagefolder", tmp_path / "tiny")
    class_folders(tmp_path / "names", ["a"], 4)
    with pytest.raises(DataError, match=r"no name for 1 class folder.*'a'"):
        load_full(
            "imagefolder",
            tmp_path / "names",
            classnames_file=write_text(tmp_path / "n.txt", ["b bee"]),
        )
    with pytest.raises(DataError, match="split ratios"):
        load_full("imagefolder", tmp_path / "names", split=(0.5, 0.5, 0.5))


def _csv_tree(tmp_path: Path, header: str, rows: list[str]) -> Path:
    for i in range(12):
        write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i)
    return write_text(tmp_path / "list.csv", [header, *rows])


def test_csv_with_int_labels_classnames_and_split_column(tmp_path):
    rows = [
        f"imgs/{i}.jpg,{i % 2},{['sea_lion', 'cat'][i % 2]},{['train', 'val', 'test'][i % 3]}"
        for i in range(12)
    ]
    csv_file = _csv_tree(tmp_path, "path,label,classname,split", rows)
    full = load_full("csv", csv_file)
    assert full.classnames == ["sea lion", "cat"]
    assert (len(full.train), len(full.val), len(full.test)) == (4, 4, 4)
    assert full.train[0].path == str(tmp_path / "imgs" / "0.jpg")


def test_csv_with_name_labels_and_ratio_split(tmp_path):
    rows = [f"imgs/{i}.jpg,{['zebra', 'ant'][i % 2]}" for i in range(12)]
    full = load_full("csv", _csv_tree(tmp_path, "path,label", rows), split=(0.5, 0.0, 0.5))
    assert full.classnames == ["ant", "zebra"]  # sorted names
    assert (len(full.train), len(full.val), len(full.test)) == (6, 0, 6)
    splits = build_dataset(
        "csv", tmp_path / "list.csv", shots=2, split=(0.5, 0.0, 0.5), cache_dir=tmp_path / "c"
    )
    assert len(splits.train) == 4
    assert not (tmp_path / "split_fewshot").exists()  # never writes next to the user's data


def test_csv_errors_name_the_file(tmp_path):
    bad = _csv_tree(tmp_path, "file,label", ["imgs/0.jpg,0"])
    with pytest.raises(DataError, match=r"list.csv must have a header with columns path,label"):
        load_full("csv", bad)
    no_names = write_text(
        tmp_path / "n.csv", ["path,label", *[f"imgs/{i}.jpg,{i % 2}" for i in range(12)]]
    )
    with pytest.raises(DataError, match=r"n.csv has integer labels but no class names"):
        load_full("csv", no_names)
    gaps = write_text(
        tmp_path / "g.csv", ["path,label,classname", "imgs/0.jpg,0,a", "imgs/1.jpg,2,c"]
    )
    with pytest.raises(DataError, match=r"g.csv: integer labels must run 0..2 without gaps"):
        load_full("csv", gaps)
    rows = [f"imgs/{i}.jpg,{i % 2},c{i % 2},train" for i in range(12)] + [
        "imgs/missing.jpg,0,c0,test"
    ]
    missing = write_text(tmp_path / "m.csv", ["path,label,classname,split", *rows])
    with pytest.raises(
        DataError, match=r"m.csv lists 1 image\(s\) that do not exist, first: .*missing.jpg"
    ):
        load_full("csv", missing)
    with pytest.raises(DataError, match=r"CSV file not found: .*absent.csv"):
        load_full("csv", tmp_path / "absent.csv")


# --- real images: Fashion-MNIST from Debian's dataset-fashion-mnist package -------------------


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzip or raw): magic 0x0000 <dtype> <ndim>, big-endian dims, data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    assert raw[0] == 0 and raw[1] == 0 and raw[2] == 0x08, f"{path}: not unsigned-byte IDX"
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_file(stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (FASHION_DIR / name).is_file():
            return FASHION_DIR / name
    return None


@pytest.mark.skipif(
    _fashion_file("t10k-images-idx3-ubyte") is None,
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_slice_through_imagefolder_fewshot_and_base_new(tmp_path):
    images = read_idx(_fashion_file("t10k-images-idx3-ubyte"))
    labels = read_idx(_fashion_file("t10k-labels-idx1-ubyte"))
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    per_class = 20
    root = tmp_path / "fashion"
    for y, cls in enumerate(FASHION_CLASSES):
        for i in np.flatnonzero(labels == y)[:per_class]:
            path = root / cls / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)  # 8-bit grayscale PNG

    full = load_full("imagefolder", root)
    expected = sorted(c.replace("_", " ") for c in FASHION_CLASSES)  # sorted folder names
    assert full.classnames == expected
    for d in full.train + full.val + full.test:  # every label agrees with the IDX label file
        true_name = FASHION_CLASSES[labels[int(Path(d.path).stem)]].replace("_", " ")
        assert full.classnames[d.label] == d.classname == true_name
    assert (len(full.train), len(full.val), len(full.test)) == (100, 40, 60)
    splits = build_dataset(
        "imagefolder", root, shots=4, seed=1, subsample="new", cache_dir=tmp_path / "c"
    )
    assert splits.classnames == expected[5:]
    assert len(splits.train) == 20 and len(splits.val) == 20 and len(splits.test) == 30
    assert {d.label for d in splits.train} == set(range(5))
    # the grayscale PNGs come back as RGB with the real pixels
    from vlprompt.data import open_image

    first = splits.test[0]
    idx = int(Path(first.path).stem)
    assert np.array_equal(np.asarray(open_image(first.path))[..., 0], images[idx])
    seed2 = build_dataset(
        "imagefolder", root, shots=4, seed=2, subsample="new", cache_dir=tmp_path / "c"
    )
    assert [d.path for d in seed2.train] != [d.path for d in splits.train]
