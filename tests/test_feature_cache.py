"""The frozen-feature cache: hits skip the computation, any change of what the features depend on
recomputes, a broken entry is recomputed with a warning, and cached features equal fresh ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from conftest import TINY_VIT
from vlprompt import load_clip
from vlprompt.data.transforms import transform_for
from vlprompt.data.types import Datum
from vlprompt.errors import DataError
from vlprompt.feature_cache import (
    FeatureCache,
    encode_images,
    encode_images_cached,
    transform_id,
)


@pytest.fixture
def images(tmp_path) -> list[str]:
    paths = []
    gen = torch.Generator().manual_seed(0)
    for i in range(5):
        pixels = torch.randint(0, 256, (40, 36, 3), generator=gen, dtype=torch.uint8)
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels.numpy()).save(path)
        paths.append(str(path))
    return paths


class Counter:
    """A compute_fn that counts its calls and returns features that change with each call."""

    def __init__(self, n: int, dim: int = 8) -> None:
        self.calls = 0
        self.n = n
        self.dim = dim

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return torch.full((self.n, self.dim), float(self.calls))


def test_second_call_hits_the_cache(tiny_clip, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    compute = Counter(len(images))
    first = cache.get_or_compute(tiny_clip, "t", images, compute)
    second = cache.get_or_compute(tiny_clip, "t", images, compute)
    assert compute.calls == 1
    torch.testing.assert_close(second, first)
    # a fresh cache object on the same folder (a new process) hits too
    third = FeatureCache(tmp_path / "cache").get_or_compute(tiny_clip, "t", images, compute)
    assert compute.calls == 1
    torch.testing.assert_close(third, first)


def test_changed_weights_recompute(tiny_clip, images, tmp_path):
    cache = FeatureCache(tmp_path)
    compute = Counter(len(images))
    cache.get_or_compute(tiny_clip, "t", images, compute)
    torch.manual_seed(123)
    other = load_clip(TINY_VIT)  # same architecture, other weights
    assert other.weights_id != tiny_clip.weights_id
    cache.get_or_compute(other, "t", images, compute)
    assert compute.calls == 2


def test_changed_transform_recomputes(tiny_clip, images, tmp_path):
    cache = FeatureCache(tmp_path)
    compute = Counter(len(images))
    a = transform_id(T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]))
    b = transform_id(T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor()]))
    cache.get_or_compute(tiny_clip, a, images, compute)
    cache.get_or_compute(tiny_clip, b, images, compute)
    assert compute.calls == 2
    cache.get_or_compute(tiny_clip, a, images, compute)
    assert compute.calls == 2


def test_changed_image_list_recomputes(tiny_clip, images, tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute_for(paths):
        def fn():
            calls.append(list(paths))
            return torch.zeros(len(paths), 4)

        return fn

    for paths in (images, images[:-1], list(reversed(images)), images):
        cache.get_or_compute(tiny_clip, "t", paths, compute_for(paths))
    assert calls == [images, images[:-1], list(reversed(images))]


def test_touched_or_rewritten_file_recomputes(tiny_clip, images, tmp_path):
    cache = FeatureCache(tmp_path)
    compute = Counter(len(images))
    cache.get_or_compute(tiny_clip, "t", images, compute)
    st = os.stat(images[2])
    os.utime(images[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    cache.get_or_compute(tiny_clip, "t", images, compute)
    assert compute.calls == 2
    Path(images[3]).write_bytes(Path(images[3]).read_bytes() + b"\0")  # size changes
    os.utime(images[3], ns=(st.st_atime_ns, os.stat(images[3]).st_mtime_ns))
    cache.get_or_compute(tiny_clip, "t", images, compute)
    assert compute.calls == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_count"])
def test_broken_entry_is_recomputed_with_a_warning(tiny_clip, images, tmp_path, damage):
    cache = FeatureCache(tmp_path)
    compute = Counter(len(images))
    cache.get_or_compute(tiny_clip, "t", images, compute)
    entry = cache.path_for(cache.key(tiny_clip, "t", images))
    if damage == "garbage":
        entry.write_bytes(b"not safetensors at all")
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:-7])
    else:
        from vlprompt.io import atomic_save_tensors

        key = cache.key(tiny_clip, "t", images)
        atomic_save_tensors(entry, {"features": torch.zeros(2, 8)}, metadata={"key": key})
    with pytest.warns(UserWarning, match=r"feature cache entry .* is unreadable"):
        again = cache.get_or_compute(tiny_clip, "t", images, compute)
    assert compute.calls == 2
    torch.testing.assert_close(again, torch.full((len(images), 8), 2.0))
    # and the rewritten entry is good again
    torch.testing.assert_close(cache.get_or_compute(tiny_clip, "t", images, compute), again)
    assert compute.calls == 2


def test_no_temp_files_left_behind(tiny_clip, images, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    cache.get_or_compute(tiny_clip, "t", images, Counter(len(images)))
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".safetensors"]


def test_wrong_feature_count_from_compute_fn_is_refused(tiny_clip, images, tmp_path):
    with pytest.raises(ValueError, match=r"expected \[5, embed_dim\]"):
        FeatureCache(tmp_path).get_or_compute(tiny_clip, "t", images, lambda: torch.zeros(4, 8))


def test_missing_image_is_named(tiny_clip, images, tmp_path):
    os.remove(images[1])
    with pytest.raises(DataError, match=r"cannot read image .*1\.png"):
        FeatureCache(tmp_path).get_or_compute(tiny_clip, "t", images, Counter(5))


def test_transform_id_is_stable_and_refuses_unstable_or_random(tiny_clip):
    assert transform_id(transform_for(tiny_clip, train=False)) == transform_id(
        transform_for(tiny_clip, train=False)
    )
    assert "Normalize" in transform_id(transform_for(tiny_clip, train=False))
    with pytest.raises(ValueError, match="no stable description"):
        transform_id(T.Lambda(lambda x: x))  # repr "Lambda()" hides which function

    class Custom:
        def __call__(self, x):
            return x

    with pytest.raises(ValueError, match="no stable description"):
        transform_id(T.Compose([Custom(), T.ToTensor()]))  # repr shows "at 0x..."
    with pytest.raises(ValueError, match="is random"):
        transform_id(transform_for(tiny_clip, train=True))


def test_encode_images_cached_equals_direct_encoding(tiny_clip, images, tmp_path):
    items = [Datum(p, i % 2, "a" if i % 2 == 0 else "b") for i, p in enumerate(images)]
    transform = transform_for(tiny_clip, train=False)
    from vlprompt.data.dataset import open_image

    batch = torch.stack([transform(open_image(p)) for p in images])
    with torch.no_grad():
        oracle = tiny_clip.model.encode_image(batch, normalize=True)
    cache = FeatureCache(tmp_path / "cache")
    feats, labels = encode_images_cached(tiny_clip, items, transform, cache, batch_size=2)
    torch.testing.assert_close(feats, oracle, atol=1e-5, rtol=0)
    assert labels.tolist() == [0, 1, 0, 1, 0] and labels.dtype == torch.long
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(5))

    # the second call reads the cache: the image tower is never run
    def fail(*args, **kwargs):
        raise AssertionError("encode_image called on a cache hit")

    tiny_clip.encode_image = fail
    again, _ = encode_images_cached(tiny_clip, items, transform, cache, batch_size=2)
    torch.testing.assert_close(again, feats)
    # without a cache it computes
    with pytest.raises(AssertionError, match="cache hit"):
        encode_images_cached(tiny_clip, items, transform, None)


def test_encode_images_of_nothing(tiny_clip):
    assert encode_images(tiny_clip, [], transform_for(tiny_clip, False)).shape == (0, 32)
