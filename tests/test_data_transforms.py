"""Transforms from the backbone's image size/mean/std, ImageListDataset and `vlprompt datasets`."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from test_data_trees import make_dtd, make_imagenet_a, write_image
from vlprompt.config import ConfigError, EngineSettings
from vlprompt.data import (
    ImageListDataset,
    build_dataset,
    build_transform,
    describe_datasets,
    format_datasets_table,
    list_datasets,
    transform_for,
)
from vlprompt.errors import DataError

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_test_transform_is_resize_short_side_center_crop_normalize(tmp_path):
    img = Image.open(write_image(tmp_path / "r.png", size=8).parent / "r.png").resize((48, 40))
    out = build_transform(32, MEAN, STD, train=False)(img)
    assert out.shape == (3, 32, 32)
    resized = F.resize(img, 32, interpolation=F.InterpolationMode.BICUBIC)  # short side 40 -> 32
    assert resized.size == (38, 32)
    expect = F.normalize(F.to_tensor(F.center_crop(resized, 32)), MEAN, STD)
    torch.testing.assert_close(out, expect, atol=0, rtol=0)
    torch.testing.assert_close(
        build_transform(32, MEAN, STD, train=False)(img), out
    )  # deterministic


def test_train_transform_shape_crop_scale_and_flip(tmp_path):
    t = build_transform(16, MEAN, STD, train=True)
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert t.transforms[0].scale == (0.08, 1.0)
    assert t.transforms[0].interpolation == F.InterpolationMode.BICUBIC
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    torch.manual_seed(0)
    out = t(img)
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(out[0], torch.full((16, 16), (1 - MEAN[0]) / STD[0]))


def test_transform_for_reads_the_backbone(tiny_clip):
    t = transform_for(tiny_clip, train=False)
    assert t(Image.new("RGB", (50, 70))).shape == (3, tiny_clip.image_size, tiny_clip.image_size)
    norm = t.transforms[-1]
    assert tuple(norm.mean) == tuple(tiny_clip.mean) and tuple(norm.std) == tuple(tiny_clip.std)


def test_image_list_dataset_returns_rgb_tensor_and_label(tmp_path):
    root = make_dtd(tmp_path)
    gray = root / "dtd" / "images" / "banded" / "gray.png"
    Image.new("L", (8, 8), 128).save(gray)
    splits = build_dataset("dtd", root, cache_dir=False)
    ds = ImageListDataset(splits.test, build_transform(8, MEAN, STD, train=False))
    assert len(ds) == len(splits.test)
    image, label = ds[len(ds) - 1]
    assert image.shape == (3, 8, 8) and label == splits.test[-1].label
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 8, 8) and y.tolist() == [d.label for d in splits.test[:4]]


def test_kept_decoded_images_give_the_same_tensors_without_rereading_files(tmp_path, monkeypatch):
    """With keep_decoded_bytes, a second epoch reads no file and yields the same transformed
    tensors (same random crops under the same seed); the byte budget bounds what is kept."""
    import vlprompt.data.dataset as dataset_module

    splits = build_dataset("dtd", make_dtd(tmp_path), cache_dir=False)
    items = splits.train[:4]
    transform = build_transform(8, MEAN, STD, train=True)
    opened = []
    original = dataset_module.open_image
    monkeypatch.setattr(dataset_module, "open_image", lambda p: opened.append(p) or original(p))

    def epoch(ds):
        torch.manual_seed(0)
        return torch.stack([ds[i][0] for i in range(len(ds))])

    plain = epoch(ImageListDataset(items, transform))
    one_image = Image.open(items[0].path)
    budget = 2 * one_image.width * one_image.height * 3  # room for two of them
    kept = ImageListDataset(items, transform, keep_decoded_bytes=budget)
    opened.clear()
    first = epoch(kept)
    assert len(opened) == 4
    opened.clear()
    second = epoch(kept)
    assert len(opened) == 2  # the two that fit the budget were not read again
    torch.testing.assert_close(first, plain, atol=0, rtol=0)
    torch.testing.assert_close(second, plain, atol=0, rtol=0)


def test_describe_datasets_reports_found_counts_and_hints_without_writing(tmp_path):
    make_dtd(tmp_path)
    make_imagenet_a(tmp_path)
    rows = {r["name"]: r for r in describe_datasets(tmp_path)}
    assert "imagefolder" not in rows and "csv" not in rows
    assert set(rows) >= set(list_datasets()) - {"imagefolder", "csv"}
    assert rows["dtd"]["found"] and (rows["dtd"]["n_classes"], rows["dtd"]["n_train"]) == (3, 15)
    assert (rows["dtd"]["n_val"], rows["dtd"]["n_test"]) == (6, 9)
    assert rows["imagenet_a"]["found"] and rows["imagenet_a"]["n_test"] == 4
    assert not rows["sun397"]["found"] and "DATASETS.md" in rows["sun397"]["hint"]
    assert not list((tmp_path / "dtd").glob("split_zhou_*.json"))  # describe writes nothing
    table = format_datasets_table(list(rows.values()))
    dtd_line = next(line for line in table.splitlines() if line.startswith("dtd "))
    assert dtd_line.split()[:6] == ["dtd", "yes", "3", "15", "6", "9"]
    assert "sun397: Download" in table


def test_a_raised_crop_min_scale_narrows_the_random_crop():
    t = build_transform(16, MEAN, STD, train=True, crop_min_scale=0.5)
    assert type(t.transforms[0]).__name__ == "RandomResizedCrop"
    assert t.transforms[0].scale == (0.5, 1.0)


def test_crop_min_scale_one_is_the_test_view_or_its_mirror(tmp_path):
    """No crop: every training view is the test transform's image, flipped or not."""
    img = Image.open(write_image(tmp_path / "r.png", size=8).parent / "r.png").resize((40, 40))
    expect = build_transform(16, MEAN, STD, train=False)(img)
    t = build_transform(16, MEAN, STD, train=True, crop_min_scale=1)
    seen = set()
    torch.manual_seed(0)
    for _ in range(12):
        out = t(img)
        flipped = not torch.equal(out, expect)
        if flipped:
            torch.testing.assert_close(out, expect.flip(-1), atol=0, rtol=0)
        seen.add(flipped)
    assert seen == {False, True}  # the flip stays random


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "0.5", True, None])
def test_a_crop_min_scale_outside_0_1_is_a_clear_error(bad):
    with pytest.raises(DataError, match=r"crop_min_scale=.*expected a number in \(0, 1\]"):
        build_transform(16, MEAN, STD, train=True, crop_min_scale=bad)
    with pytest.raises(ConfigError, match=r"crop_min_scale must be a number in \(0, 1\]"):
        EngineSettings(crop_min_scale=bad)
