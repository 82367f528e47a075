"""A torch Dataset over a list of `Datum`s, and an up-front check for unreadable images."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace

from PIL import Image
from torch.utils.data import Dataset

from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError


def open_image(path: str):
    """Open an image fully decoded and as RGB; a missing, unreadable or truncated file -> DataError."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not in a worker later
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot read image {path}: {e}. Replace or delete the file, or build the data set "
            "with skip_bad_images=True to leave unreadable images out"
        ) from e


class ImageListDataset(Dataset):
    """`(transform(image), label)` for each `Datum`; images are opened with PIL as RGB.

    `keep_decoded_bytes` > 0 keeps decoded images in memory, up to that many bytes of pixels,
    so that later epochs skip reading and decoding the files (few-shot training sets are small
    and read many times). Same pixels either way; the transform still runs on every access.
    """

    def __init__(
        self, items: list[Datum], transform: Callable | None = None, keep_decoded_bytes: int = 0
    ):
        self.items = list(items)
        self.transform = transform
        self.keep_decoded_bytes = keep_decoded_bytes
        self._decoded: dict[int, Image.Image] = {}
        self._decoded_bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, index: int) -> Image.Image:
        image = self._decoded.get(index)
        if image is not None:
            return image
        image = open_image(self.items[index].path)
        size = image.width * image.height * len(image.getbands())
        if self._decoded_bytes + size <= self.keep_decoded_bytes:
            self._decoded[index] = image
            self._decoded_bytes += size
        return image

    def __getitem__(self, index: int):
        image = self._image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.items[index].label


def is_readable(path: str) -> bool:
    try:
        open_image(path)
    except DataError:
        return False
    return True


def drop_bad_images(splits: DatasetSplits) -> DatasetSplits:
    """Open every image once and leave out those that fail, warning with the count."""
    bad: list[str] = []
    seen: dict[str, bool] = {}

    def keep(items: list[Datum]) -> list[Datum]:
        out = []
        for d in items:
            if d.path not in seen:
                seen[d.path] = is_readable(d.path)
                if not seen[d.path]:
                    bad.append(d.path)
            if seen[d.path]:
                out.append(d)
        return out

    result = replace(splits, train=keep(splits.train), val=keep(splits.val), test=keep(splits.test))
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {splits.name}, first: {bad[0]}",
            stacklevel=2,
        )
        result.extra = {**result.extra, "skipped_images": bad}
    return result
