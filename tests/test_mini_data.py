"""The mini data sets: registered like the benchmarks, rendered once to files, right sizes."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from PIL import Image

from vlprompt.data import build_dataset, get_dataset_info, list_datasets
from vlprompt.data import mini as data_mini
from vlprompt.mini import world
from vlprompt.mini.datasets import MINI_DATASETS

EXPECTED_CLASSES = {
    "mini_shapes": 10,
    "mini_colors": 10,
    "mini_objects": 16,
    "mini_patterns": 12,
    "mini_counts": 12,
    "mini_sizes": 12,
    "mini_scenes": 8,
}
TINY = {"train": 3, "val": 2, "test": 2}


@pytest.fixture
def tiny_sizes(monkeypatch):
    """Every mini data set with 3/2/2 images per class, so rendering takes milliseconds."""
    for name, spec in list(MINI_DATASETS.items()):
        monkeypatch.setitem(MINI_DATASETS, name, dataclasses.replace(spec, per_class=TINY))


def test_every_mini_data_set_and_variant_is_registered():
    names = set(list_datasets())
    assert set(EXPECTED_CLASSES) <= names
    assert len(EXPECTED_CLASSES) >= 6
    for name, spec in MINI_DATASETS.items():
        assert len(spec.classnames) == EXPECTED_CLASSES[name]
        assert len(set(spec.classnames)) == len(spec.classnames)
        assert get_dataset_info(name).template == spec.template
        for style in spec.variants:
            info = get_dataset_info(f"{name}_{style}")
            assert info.variant_of == name
    assert get_dataset_info("mini_shapes_sketch").variant_of == "mini_shapes"


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_class_names_are_phrases_of_the_pretraining_captions(name):
    """Zero-shot can work: each class name occurs verbatim in captions of its own images."""
    spec = MINI_DATASETS[name]
    rng = np.random.default_rng(0)
    for label, classname in enumerate(spec.classnames):
        attrs = world.sample_attributes(rng, **spec.class_attributes[label])
        captions = [world.caption(attrs, rng) for _ in range(300)]
        assert any(classname in c for c in captions), classname


def test_loader_renders_files_once_with_the_right_splits(tiny_sizes, tmp_path):
    full = get_dataset_info("mini_patterns").load(tmp_path)
    n = EXPECTED_CLASSES["mini_patterns"]
    assert full.classnames == list(MINI_DATASETS["mini_patterns"].classnames)
    assert (len(full.train), len(full.val), len(full.test)) == (3 * n, 2 * n, 2 * n)
    assert {d.label for d in full.test} == set(range(n))
    first = full.test[0]
    assert first.path.startswith(str(tmp_path / "mini" / f"v{world.WORLD_VERSION}"))
    stamp = (tmp_path / "mini" / f"v{world.WORLD_VERSION}" / "mini_patterns").stat().st_mtime_ns
    again = get_dataset_info("mini_patterns").load(tmp_path)
    assert again.test == full.test
    folder = tmp_path / "mini" / f"v{world.WORLD_VERSION}" / "mini_patterns"
    assert folder.stat().st_mtime_ns == stamp  # not rendered a second time


def test_a_changed_data_set_definition_is_rendered_again(tiny_sizes, tmp_path, monkeypatch):
    """The rendered folder records what it was drawn from; a folder from an older definition of
    the data set (e.g. another seed) is replaced, never silently reused."""
    old = get_dataset_info("mini_patterns").load(tmp_path)
    changed = dataclasses.replace(MINI_DATASETS["mini_patterns"], seed=999)
    monkeypatch.setitem(MINI_DATASETS, "mini_patterns", changed)
    new = get_dataset_info("mini_patterns").load(tmp_path)
    assert [d.path for d in new.test] == [d.path for d in old.test]
    pixels = [np.asarray(Image.open(d.path)) for d in new.test[:1]]
    assert np.array_equal(pixels[0], np.asarray(changed.item("test", 0, 0)))
    assert not np.array_equal(
        pixels[0], np.asarray(dataclasses.replace(changed, seed=104).item("test", 0, 0))
    )


def test_scenes_cycle_through_every_style():
    spec = MINI_DATASETS["mini_scenes"]
    styles = [spec.attributes("train", 0, i)[0].style for i in range(len(world.STYLES))]
    assert styles == list(world.STYLES)


def test_rendered_files_equal_the_world(tiny_sizes, tmp_path):
    from PIL import Image

    full = get_dataset_info("mini_shapes").load(tmp_path)
    item = full.train[4]  # class 1, image 1
    on_disk = np.asarray(Image.open(item.path).convert("RGB"))
    fresh = np.asarray(MINI_DATASETS["mini_shapes"].item("train", 1, 1))
    assert item.label == 1 and item.classname == "square"
    assert np.array_equal(on_disk, fresh)


def test_base_new_and_few_shot_through_build_dataset(tiny_sizes, tmp_path):
    n = EXPECTED_CLASSES["mini_objects"]
    base = build_dataset("mini_objects", tmp_path, shots=2, seed=1, subsample="base")
    new = build_dataset("mini_objects", tmp_path, shots=2, seed=1, subsample="new")
    m = math.ceil(n / 2)
    assert base.classnames == list(MINI_DATASETS["mini_objects"].classnames[:m])
    assert new.classnames == list(MINI_DATASETS["mini_objects"].classnames[m:])
    assert len(base.train) == 2 * m and len(new.test) == 2 * (n - m)


def test_style_variant_is_the_test_split_redrawn(tiny_sizes, tmp_path):
    from PIL import Image

    source = get_dataset_info("mini_shapes").load(tmp_path)
    sketch = get_dataset_info("mini_shapes_sketch").load(tmp_path)
    assert sketch.train == [] and sketch.val == [] and sketch.extra["test_only"]
    assert [(d.label, d.classname) for d in sketch.test] == [
        (d.label, d.classname) for d in source.test
    ]
    a = np.asarray(Image.open(source.test[0].path), dtype=np.float32)
    b = np.asarray(Image.open(sketch.test[0].path), dtype=np.float32)
    assert np.abs(a - b).mean() > 5.0


def test_root_resolution(monkeypatch, tmp_path):
    version = f"v{world.WORLD_VERSION}"
    assert data_mini.mini_root(tmp_path) == tmp_path / "mini" / version
    monkeypatch.setenv(data_mini.ENV_ROOT, str(tmp_path / "env"))
    assert data_mini.mini_root(None) == tmp_path / "env" / version
    monkeypatch.delenv(data_mini.ENV_ROOT)
    assert data_mini.mini_root(None).parts[-3:] == ("vlprompt", "mini", version)


def test_a_copy_finished_by_another_process_is_kept(tiny_sizes, tmp_path, monkeypatch):
    """Two processes rendering the same data set: the second never deletes the first's copy."""
    folder = data_mini.mini_root(tmp_path) / "mini_scenes"
    real_render = data_mini._render

    def render_while_another_finishes(spec, tmp, style):
        folder.mkdir(parents=True)
        record = data_mini.spec_record(spec, style)
        (folder / data_mini.SPEC_FILE).write_text(json.dumps(record))
        (folder / data_mini.SPLIT_FILE).write_text('{"train": [], "val": [], "test": []}')
        return real_render(spec, tmp, style)

    monkeypatch.setattr(data_mini, "_render", render_while_another_finishes)
    assert data_mini.materialize("mini_scenes", tmp_path) == folder
    assert (folder / data_mini.SPLIT_FILE).read_text().startswith('{"train": []')
    assert [p.name for p in folder.parent.iterdir()] == ["mini_scenes"]  # temp folder removed


LOOKS = {
    "mini_shapes": {"color": "white", "pattern": "plain", "size": "large", "background": "night"},
    "mini_objects": {"pattern": "outlined", "size": "large", "background": "night"},
    "mini_patterns": {"color": "white", "size": "large", "background": "night"},
    "mini_counts": {"color": "white", "pattern": "plain", "size": "large", "background": "night"},
    "mini_sizes": {"color": "yellow", "pattern": "plain", "background": "night"},
}


@pytest.mark.parametrize("name", sorted(LOOKS))
def test_a_data_set_look_fixes_every_attribute_but_the_class_and_position(name):
    """Each shape data set is one narrow look (docs/mini-world.md): across its images only the
    class attributes and the position vary, in every split."""
    spec = MINI_DATASETS[name]
    class_keys = set(spec.class_attributes[0])
    seen = {key: set() for key in ("shape", "color", "pattern", "size", "count", "background")}
    for split in ("train", "val", "test"):
        for label in range(len(spec.classnames)):
            for index in range(3):
                attrs = spec.attributes(split, label, index)[0].to_dict()
                assert {k: attrs[k] for k in LOOKS[name]} == LOOKS[name]
                assert attrs["style"] == "photo"
                for key in seen:
                    seen[key].add(attrs[key])
    assert {key for key, values in seen.items() if len(values) > 1} == class_keys
