"""Few-shot sampling (Dassl semantics), its JSON cache, base/new split and template overrides."""

from __future__ import annotations

import json
import math
import random
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

from test_data_trees import make_dtd, make_oxford_pets
from vlprompt.data import (
    IMAGENET_TEMPLATES,
    TEMPLATES,
    Datum,
    build_dataset,
    few_shot_sample,
    load_full,
    subsample_classes,
)
from vlprompt.data import fewshot as fewshot_module
from vlprompt.errors import DataError


def _items(n_labels: int, per_label: int) -> list[Datum]:
    # labels interleaved, so "order of first appearance" matters
    return [Datum(f"/x/{y}_{i}.jpg", y, f"c{y}") for i in range(per_label) for y in range(n_labels)]


def dassl_generate_fewshot(data_source, num_shots):
    """Oracle: Dassl's DatasetBase.generate_fewshot_dataset after random.seed(seed)."""
    tracker = defaultdict(list)
    for item in data_source:
        tracker[item.label].append(item)
    dataset = []
    for items in tracker.values():
        dataset.extend(random.sample(items, num_shots) if len(items) >= num_shots else items)
    return dataset


def test_few_shot_sample_matches_dassl_with_the_global_seed():
    train, val = _items(5, 20), _items(5, 6)
    random.seed(3)
    expect_train = dassl_generate_fewshot(train, 4)
    expect_val = dassl_generate_fewshot(val, min(4, 4))
    rng = random.Random(3)
    assert few_shot_sample(train, 4, rng) == expect_train
    assert few_shot_sample(val, 4, rng) == expect_val  # one stream: train, then val (as CoOp)


def test_same_seed_same_files_different_seed_different_files(tmp_path):
    root = make_dtd(tmp_path)
    a = build_dataset("dtd", root, shots=2, seed=1, cache_dir=False)
    b = build_dataset("dtd", root, shots=2, seed=1, cache_dir=False)
    c = build_dataset("dtd", root, shots=2, seed=2, cache_dir=False)
    assert [d.path for d in a.train] == [d.path for d in b.train]
    assert [d.path for d in a.train] != [d.path for d in c.train]
    assert len(a.train) == 6 and len(a.val) == 6  # 3 classes x 2 shots; val min(2, 4) = 2 each


def test_val_gets_min_shots_4_and_fewer_items_warn_and_keep_all(tmp_path):
    root = make_dtd(tmp_path, per_class=20)  # train 10, val 4, test 6 per class
    splits = build_dataset("dtd", root, shots=8, seed=1, cache_dir=False)
    assert len(splits.train) == 3 * 8 and len(splits.val) == 3 * 4
    with pytest.warns(UserWarning, match="fewer than 16 train images"):
        splits = build_dataset("dtd", root, shots=16, seed=1, cache_dir=False)
    assert len(splits.train) == 3 * 10
    per_label = {y: sum(d.label == y for d in splits.train) for y in range(3)}
    assert per_label == {0: 10, 1: 10, 2: 10}


def test_shots_zero_keeps_everything_and_bad_shots_are_rejected(tmp_path):
    root = make_dtd(tmp_path)
    full = load_full("dtd", root)
    assert build_dataset("dtd", root, shots=0).train == full.train
    for bad in (-1, 1.5, "4", True):
        with pytest.raises(DataError, match=r"shots=.*integer >= 1"):
            build_dataset("dtd", root, shots=bad)


def test_fewshot_cache_is_json_next_to_the_data_and_read_back(tmp_path, monkeypatch):
    root = make_oxford_pets(tmp_path)
    first = build_dataset("oxford_pets", root, shots=1, seed=5)
    cache = tmp_path / "oxford_pets" / "split_fewshot" / "shot_1-seed_5.json"
    assert cache.is_file() and first.extra["fewshot_cache"] == str(cache)
    data = json.loads(cache.read_text())
    assert data["shots"] == 1 and data["seed"] == 5 and len(data["train"]) == 3
    assert not Path(data["train"][0][0]).is_absolute()  # portable: relative to the data set

    def boom(*args, **kwargs):
        raise AssertionError("the sampler must not run when the cache exists")

    monkeypatch.setattr(fewshot_module, "sample_splits", boom)
    second = build_dataset("oxford_pets", root, shots=1, seed=5)
    assert second.train == first.train and second.val == first.val


def test_explicit_cache_dir_and_stale_cache_is_resampled(tmp_path):
    root = make_dtd(tmp_path / "data")
    cache_dir = tmp_path / "cache"
    first = build_dataset("dtd", root, shots=1, seed=1, cache_dir=cache_dir)
    cache = cache_dir / "dtd" / "shot_1-seed_1.json"
    assert cache.is_file()
    assert not (tmp_path / "data" / "dtd" / "split_fewshot").exists()
    data = json.loads(cache.read_text())
    data["train"][0][0] = "images/banded/not-in-the-split.jpg"
    cache.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="not in the data set's current split"):
        again = build_dataset("dtd", root, shots=1, seed=1, cache_dir=cache_dir)
    assert again.train == first.train  # resampled with the same seed


def test_unwritable_data_folder_falls_back_to_home_cache(tmp_path, monkeypatch):
    root = make_dtd(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(fewshot_module, "_writable", lambda folder: False)
    build_dataset("dtd", root, shots=1, seed=1)
    assert list((tmp_path / "xdg" / "vlprompt" / "fewshot").glob("dtd-*/shot_1-seed_1.json"))


def _relabel_oracle(items, selected):
    """CoOp's OxfordPets.subsample_classes on one list."""
    relabeler = {y: i for i, y in enumerate(selected)}
    return [(d.path, relabeler[d.label]) for d in items if d.label in selected]


@pytest.mark.parametrize("n_classes", [3, 4, 5])
def test_base_new_split_sizes_and_relabelling_match_coop(n_classes):
    from vlprompt.data import DatasetSplits

    items = _items(n_classes, 3)
    splits = DatasetSplits("t", [f"c{y}" for y in range(n_classes)], items, items[:5], items)
    m = math.ceil(n_classes / 2)
    base, new = subsample_classes(splits, "base"), subsample_classes(splits, "new")
    assert base.classnames == [f"c{y}" for y in range(m)]
    assert new.classnames == [f"c{y}" for y in range(m, n_classes)]
    assert [(d.path, d.label) for d in base.test] == _relabel_oracle(items, list(range(m)))
    assert [(d.path, d.label) for d in new.test] == _relabel_oracle(
        items, list(range(m, n_classes))
    )
    assert new.extra["class_indices"] == list(range(m, n_classes))
    assert all(new.classnames[d.label] == d.classname for d in new.train + new.val + new.test)
    assert subsample_classes(splits, "all") is splits
    with pytest.raises(DataError, match="subsample='half'"):
        subsample_classes(splits, "half")


def test_base_new_is_applied_after_fewshot_sampling(tmp_path):
    root = make_dtd(tmp_path)
    all_ = build_dataset("dtd", root, shots=2, seed=3, cache_dir=False)
    base = build_dataset("dtd", root, shots=2, seed=3, subsample="base", cache_dir=False)
    new = build_dataset("dtd", root, shots=2, seed=3, subsample="new", cache_dir=False)
    assert base.classnames == ["banded", "blotchy"] and new.classnames == ["braided"]
    # the same sampled images, split by class: sampling did not depend on subsample
    assert [d.path for d in all_.train if d.label < 2] == [d.path for d in base.train]
    assert [d.path for d in all_.train if d.label == 2] == [d.path for d in new.train]
    assert {d.label for d in new.train + new.test} == {0}


def test_templates_per_dataset_and_user_override(tmp_path):
    root = make_oxford_pets(tmp_path)
    splits = build_dataset("oxford_pets", root, cache_dir=False)
    assert splits.template == TEMPLATES["oxford_pets"] == "a photo of a {}, a type of pet."
    assert len(IMAGENET_TEMPLATES) == 7 and IMAGENET_TEMPLATES[0] == "itap of a {}."
    mine = build_dataset(
        "oxford_pets", root, cache_dir=False, template="a {} pet.", templates=["x {}.", "y {}."]
    )
    assert mine.template == "a {} pet." and mine.templates == ["x {}.", "y {}."]
    with pytest.raises(DataError, match="exactly one"):
        build_dataset("oxford_pets", root, template="no placeholder")


def test_no_warning_when_enough_items():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(few_shot_sample(_items(2, 5), 5, 1)) == 10


def test_user_data_cache_goes_to_home_cache_keyed_by_source_and_options(tmp_path, monkeypatch):
    from test_data_trees import class_folders

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "mine"
    class_folders(root, ["a", "b"], 10)
    build_dataset("imagefolder", root, shots=2, seed=1)
    build_dataset("imagefolder", root, shots=2, seed=1, split=(0.6, 0.2, 0.2))
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]  # nothing written into it
    caches = list(
        (tmp_path / "xdg" / "vlprompt" / "fewshot").glob("imagefolder-*/shot_2-seed_1.json")
    )
    assert len(caches) == 2  # other split ratios -> another cache
