"""The view pool: an opt-in, clearly labelled speed-up that pre-computes a fixed set of augmented
views of every training image once and reuses them across epochs (docs/reproduce.md says when it departs from the papers).

    vlprompt train ... --view-pool 8          # engine setting `view_pool` (0 = off, the default)

**It changes what training sees.** The papers draw a fresh random augmentation of every image in
every epoch; with a pool of N views, each epoch draws (seeded, per image) one of N views fixed at
the start. That is a different augmentation distribution (N views instead of unboundedly many),
so accuracy may change; BENCHMARKS.md reports the measured effect. With the pool off (the
default) nothing here runs and training is the papers'.

What makes it fast: the pool stores what the method's frozen image side computes from a view, so
a training step skips that computation. What is stored depends on the method:

- `"features"` — methods whose image encoder is frozen and untouched (`frozen_image_encoder`:
  CoOp, CoCoOp, KgCoOp, ProGrad): the normalised frozen image features of every view. A training
  step then runs no image encoder at all (CoCoOp's meta-net and ProGrad's teacher read the same
  features).
- `"frozen_state"` — RPO's fast path: per layer, the frozen keys/values of the CLS + patch tokens
  and the frozen CLS features (`RPO.frozen_image_state`). A step then runs only the K prompt rows
  through the image tower. This is large (ViT-B/16: ~14.5 MB per view), so when the pool would
  exceed `max_bytes` it falls back to `"images"` and says so in a log line.
- `"images_and_features"` — methods whose prompted image tower trains but whose loss also reads
  the frozen image features (`reads_frozen_image_features`: PromptSRC's regulariser and
  zero-shot teacher, ProGrad's rule on a prompted image tower): the augmented image tensors and
  their normalised frozen features. A step then runs the prompted tower only; the frozen pass
  is read from the pool.
- `"images"` — any other method, or the fallback: the augmented image tensors. A step then runs
  the method as usual on a stored view (only the decoding/augmentation is saved).

Exactness w.r.t. the same views: a step from the pool runs the method's own `backward_step`; the
only difference is that the method's frozen image function (`image_features` /
`frozen_image_state`) returns the stored rows instead of recomputing them (for that step only, on
that instance only). The tests check logits and gradients against a step on the same augmented
image tensors without the pool.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vlprompt.attention import KeyValues
from vlprompt.errors import ViewPoolError
from vlprompt.seeding import seed_worker

log = logging.getLogger(__name__)

KINDS = ("features", "frozen_state", "images_and_features", "images")
DEFAULT_MAX_BYTES = 8 * 1024**3  # pool memory above which a method's pool falls back to images
_VIEW_SEED = 7_919  # separates the views' augmentation seeds from the training seed
_DRAW_SEED = 104_729  # separates the per-epoch view draws from everything else


def pool_kind(method: Any) -> str:
    """What a pool for `method` stores (see the module docstring)."""
    if method.frozen_image_encoder:
        return "features"
    if method.has_frozen_image_state:
        return "frozen_state"
    if method.reads_frozen_image_features:
        return "images_and_features"
    return "images"


def view_seed(seed: int, view: int) -> int:
    """The augmentation seed of view `view` of a pool built with `seed`."""
    return seed * _VIEW_SEED + view


def augmented_views(
    dataset: Dataset, n_views: int, *, seed: int, batch_size: int = 64, num_workers: int = 0
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(view, first image index, augmented images [b, 3, H, W]) for every view and batch, in
    order. Deterministic in `seed` (and `num_workers`); the caller's RNG state is untouched."""

    for view in range(n_views):
        s = view_seed(seed, view)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)  # transforms in this process (num_workers=0) draw from here
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                worker_init_fn=seed_worker,
                generator=torch.Generator().manual_seed(s),  # the workers' seeds
            )
            start = 0
            for images, _ in loader:
                yield view, start, images
                start += images.shape[0]


# ---- what is stored per kind ------------------------------------------------------------------
def _encode(method: Any, kind: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors a pool of `kind` stores for a batch of views; rows along dim `_ROW_DIM`."""
    if kind == "features":
        return {"features": method.image_features(images.to(method.clip.device))}
    if kind == "images_and_features":
        return {"images": images, "features": method.image_features(images.to(method.clip.device))}
    if kind == "frozen_state":
        kvs, cls = method.frozen_image_state(images.to(method.clip.device))
        return {
            "k": torch.stack([kv.k for kv in kvs]),  # [layers, b, heads, tokens, head_dim]
            "v": torch.stack([kv.v for kv in kvs]),
            "cls": cls,
        }
    return {"images": images}


_ROW_DIM = {"features": 0, "k": 1, "v": 1, "cls": 0, "images": 0}


def _row_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes per stored view (the batch holds tensors of several views)."""
    total = 0
    for name, t in tensors.items():
        total += t.numel() * t.element_size() // t.shape[_ROW_DIM[name]]
    return total


@dataclass
class ViewPool:
    """N stored views of each of `n_images` training images. Row `view * n_images + i` of every
    stored tensor is view `view` of image `i`."""

    kind: str
    n_images: int
    n_views: int
    seed: int
    store: dict[str, torch.Tensor]
    labels: torch.Tensor  # [n_images]
    build_s: float = 0.0  # seconds the build took (augmenting + encoding every view)
    notes: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.values())

    def views_of_epoch(self, epoch: int) -> torch.Tensor:
        """[n_images] the view each image shows in `epoch` (seeded, independent per image)."""
        generator = torch.Generator().manual_seed(self.seed * _DRAW_SEED + epoch)
        return torch.randint(self.n_views, (self.n_images,), generator=generator)

    def rows(self, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """Pool rows of the images `indices` [B] in `epoch`."""
        indices = indices.long().cpu()
        return self.views_of_epoch(epoch)[indices] * self.n_images + indices

    def index_dataset(self) -> Dataset:
        """A data set of (image index, label): what the training loader walks in pool mode."""
        return _IndexDataset(self.labels)

    def _take(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        tensor = self.store[name]
        return tensor.index_select(_ROW_DIM[name], rows.to(tensor.device))

    @contextlib.contextmanager
    def feed(self, method: Any, rows: torch.Tensor) -> Iterator[torch.Tensor]:
        """Inside the block, `method.backward_step(inputs, labels)` (or `forward_train`) with the
        yielded `inputs` trains on the stored views `rows`: for "features"/"frozen_state" the
        method's frozen image function returns the stored rows instead of computing them."""
        device = method.clip.device
        if self.kind == "images":
            yield self._take("images", rows).to(device)
            return
        if self.kind == "images_and_features":
            feats = self._take("features", rows).to(device)
            with _override(method, "image_features", lambda _inputs: feats):
                yield self._take("images", rows).to(device)
            return
        if self.kind == "features":
            feats = self._take("features", rows).to(device)
            with _override(method, "image_features", lambda _inputs: feats):
                yield rows
            return
        k, v = self._take("k", rows).to(device), self._take("v", rows).to(device)
        cls = self._take("cls", rows).to(device)
        state = ([KeyValues(k[i], v[i]) for i in range(k.shape[0])], cls)
        with _override(method, "frozen_image_state", lambda _inputs: state):
            yield rows


@contextlib.contextmanager
def _override(method: Any, name: str, fn: Callable) -> Iterator[None]:
    """Shadow the bound method `name` on this instance only, for the block."""
    if name in vars(method):
        raise ViewPoolError(f"{type(method).__name__}.{name} is already overridden")
    setattr(method, name, fn)
    try:
        yield
    finally:
        delattr(method, name)


class _IndexDataset(Dataset):
    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, int(self.labels[index])


# ---- building -----------------------------------------------------------------------------------
def build_view_pool(
    method: Any,
    dataset: Dataset,
    n_views: int,
    *,
    seed: int,
    batch_size: int = 64,
    num_workers: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    say: Callable[[str], None] = log.info,
) -> ViewPool:
    """Augment every image of `dataset` ((image, label) pairs with a random training transform)
    `n_views` times and store what `method`'s training steps need of each view (see the module
    docstring). `autocast` wraps the encoding as the training steps are wrapped (exactness under
    mixed precision). A pool over `max_bytes` falls back to storing images, or fails."""
    if n_views < 1:
        raise ViewPoolError(f"a view pool needs at least 1 view per image, got {n_views}")
    n_images = len(dataset)
    if n_images == 0:
        raise ViewPoolError("the training set is empty; there is nothing to pool")
    started = time.perf_counter()
    kind = pool_kind(method)
    notes: list[str] = []
    store: dict[str, torch.Tensor] = {}
    labels = torch.empty(n_images, dtype=torch.long)
    total_rows = n_views * n_images
    views = augmented_views(
        dataset, n_views, seed=seed, batch_size=batch_size, num_workers=num_workers
    )
    was_training = method.training
    method.eval()
    try:
        for view, start, images in views:
            with torch.no_grad(), autocast():
                tensors = _encode(method, kind, images)
            if not store:
                kind, tensors = _check_size(method, kind, tensors, images, total_rows, max_bytes,
                                            notes, say)  # fmt: skip
                store = {name: _allocate(name, t, total_rows) for name, t in tensors.items()}
            first = view * n_images + start
            for name, t in tensors.items():
                store[name].narrow(_ROW_DIM[name], first, t.shape[_ROW_DIM[name]]).copy_(t)
            if view == 0:
                labels[start : start + images.shape[0]] = _labels_of(dataset, start, images)
    finally:
        method.train(was_training)
    pool = ViewPool(kind, n_images, n_views, seed, store, labels, time.perf_counter() - started,
                    notes)  # fmt: skip
    say(
        f"view pool: {n_views} views x {n_images} images of {kind!r} "
        f"({pool.nbytes / 1024**2:.1f} MB) built in {pool.build_s:.1f} s; training draws one "
        "stored view per image and epoch (not the papers' fresh augmentations)"
    )
    return pool


def _labels_of(dataset: Any, start: int, images: torch.Tensor) -> torch.Tensor:
    items = getattr(dataset, "items", None)
    if items is not None:  # ImageListDataset: no need to load the images again
        return torch.tensor([items[i].label for i in range(start, start + images.shape[0])])
    with torch.random.fork_rng(devices=[]):  # loading an item may draw its random transform:
        # keep that draw out of the RNG stream the views are augmented from
        return torch.tensor([int(dataset[i][1]) for i in range(start, start + images.shape[0])])


def _allocate(name: str, t: torch.Tensor, rows: int) -> torch.Tensor:
    shape = list(t.shape)
    shape[_ROW_DIM[name]] = rows
    return torch.empty(shape, dtype=t.dtype, device=t.device)


def _check_size(method, kind, tensors, images, rows, max_bytes, notes, say):
    """Fall back from a method's frozen state to images when the pool would be too big."""
    need = _row_bytes(tensors) * rows
    if need <= max_bytes:
        return kind, tensors
    if kind != "images":
        image_need = _row_bytes({"images": images}) * rows
        note = (
            f"view pool: storing {kind!r} for {rows} views would take {need / 1024**3:.1f} GB "
            f"(limit {max_bytes / 1024**3:.1f} GB); storing the augmented images instead "
            f"({image_need / 1024**3:.1f} GB): steps then still run the frozen image encoder"
        )
        notes.append(note)
        say(note)
        kind, tensors, need = "images", {"images": images}, image_need
    if need > max_bytes:
        raise ViewPoolError(
            f"a view pool of {rows} views needs {need / 1024**3:.1f} GB even as images "
            f"(limit {max_bytes / 1024**3:.1f} GB); use fewer views (--view-pool) or none"
        )
    return kind, tensors
