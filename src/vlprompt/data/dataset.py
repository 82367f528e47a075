"""A torch Dataset over a list of `Datum`s, RGB decoding of every image mode, and an up-front
check for unreadable images."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError

ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
PREMULTIPLIED_MODES = frozenset({"RGBa", "La"})
KEYED_TRANSPARENCY_MODES = frozenset({"1", "L", "P", "RGB"})  # a `transparency` colour/index


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)).convert("RGB")


def _stretch(values: np.ndarray) -> np.ndarray:
    """Linear min..max -> 0..255 (float64 in, uint8 out); a constant image becomes black."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.floor((values - lo) * (255.0 / (hi - lo)) + 0.5).clip(0, 255).astype(np.uint8)


def _int_to_grey(raw: np.ndarray) -> np.ndarray:
    """Modes I and I;16*: 0..65535 -> 0..255 as round(v / 257), else min..max stretched."""
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) > 65535):
        return _stretch(raw.astype(np.float64))
    return ((raw.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_grey(raw: np.ndarray) -> np.ndarray:
    """Mode F: all values in 0..1 -> round(v * 255), any other range stretched min..max.
    NaN -> 0, +-inf -> as the largest / smallest finite value."""
    values = raw.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    if not finite.all():
        lo, hi = values[finite].min(), values[finite].max()
        values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    if values.min() >= 0.0 and values.max() <= 1.0:
        grey = np.floor(values * 255.0 + 0.5).astype(np.uint8)
    else:
        grey = _stretch(values)
    grey[np.isnan(raw)] = 0
    return grey


def _over_white(rgba: np.ndarray) -> Image.Image:
    """Straight (non-premultiplied) RGBA over white: round((c * a + 255 * (255 - a)) / 255)."""
    c = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:].astype(np.uint32)
    return Image.fromarray(((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as a new 8-bit RGB image, decoded correctly for every PIL mode.

    PIL's `convert("RGB")` clips instead of scaling for the high-bit-depth modes and drops alpha
    as it is; the rules here:

    - 1, L, P, RGB, RGBX, CMYK, YCbCr, HSV, LAB: PIL's own conversion (CMYK as
      (255 - c) * (255 - k) / 255, YCbCr with the JPEG (full-range) matrix).
    - I;16, I;16B, I;16L, I;16N (16-bit): 0..65535 scaled to 0..255 as round(v / 257).
    - I (32-bit int): when every value lies in 0..65535 the same 16-bit rule (PIL has opened
      16-bit PNGs as mode I); otherwise min..max is stretched linearly to 0..255.
    - F (float): values all in 0..1 map to round(v * 255); any other range is stretched min..max
      to 0..255. NaN becomes 0, +-inf the largest / smallest finite value; a constant image
      outside 0..1 becomes black.
    - Modes with alpha (RGBA, LA, PA, premultiplied RGBa / La) and 1 / L / P / RGB / I / I;16
      images with a `transparency` entry (PNG's tRNS, GIF's transparent index) are composited
      over a white background: that is how image viewers and browsers show them, and the RGB
      values under fully transparent pixels are arbitrary (often black or left-over colours),
      so dropping alpha would show the model noise.

    A value that is not a PIL image, or a mode PIL cannot convert, raises DataError.
    """
    if not isinstance(image, Image.Image):
        raise DataError(
            f"expected a PIL image, got {type(image).__name__}; open image files with "
            "PIL.Image.open or pass their paths"
        )
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image.copy()
    if mode.startswith("I"):
        raw = np.asarray(image)
        grey = _int_to_grey(raw)
        key = image.info.get("transparency")
        if isinstance(key, int) and not isinstance(key, bool):
            return _over_white(np.dstack([grey, grey, grey, np.where(raw == key, 0, 255)]))
        return _grey_to_rgb(grey)
    if mode == "F":
        return _grey_to_rgb(_float_to_grey(np.asarray(image)))
    if mode in PREMULTIPLIED_MODES:  # c' = c * a / 255, so over white: c' + 255 - a
        raw = np.asarray(image).astype(np.int32)
        colour = raw[..., :3] if mode == "RGBa" else np.repeat(raw[..., :1], 3, axis=-1)
        out = colour + 255 - raw[..., -1:]
        return Image.fromarray(out.clip(0, 255).astype(np.uint8))
    palette_alpha = mode == "P" and getattr(image.palette, "mode", "") == "RGBA"
    if (
        mode in ALPHA_MODES
        or palette_alpha
        or (mode in KEYED_TRANSPARENCY_MODES and "transparency" in image.info)
    ):
        return _over_white(np.asarray(image.convert("RGBA")))
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise DataError(
            f"cannot convert an image of mode {mode!r} to RGB ({e}); save it as an 8-bit RGB "
            "or greyscale PNG or JPEG"
        ) from e


def open_image(path: str):
    """Open an image fully decoded and as RGB (`to_rgb`); a missing, unreadable or truncated
    file -> DataError."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not in a worker later
            return to_rgb(img)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot read image {path}: {e}. Replace or delete the file, or build the data set "
            "with skip_bad_images=True to leave unreadable images out"
        ) from e


def regular_file_or_error(path: str | os.PathLike) -> None:
    """DataError unless `path` is a regular file (a named pipe, device or socket is never
    opened: reading one could block forever); a missing path says so."""
    try:
        mode = os.stat(path).st_mode  # follows a link to its target, opens nothing
    except FileNotFoundError:
        raise DataError(f"cannot read image {path}: no such file") from None
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else (
            "a folder" if stat.S_ISDIR(mode) else "a device or socket")  # fmt: skip
        raise DataError(
            f"{path} is not a regular image file ({kind}); vlprompt does not read it. Pass image "
            "files (PNG, JPEG, ...)"
        )


def _reduced(image: Image.Image, min_short_side: int) -> Image.Image:
    """`image` scaled down (bicubic) so that its short side is `min_short_side`, when it is
    longer; an image at most that large is returned as it is."""
    width, height = image.size
    short = min(width, height)
    if short <= min_short_side:
        return image
    size = (
        max(1, round(width * min_short_side / short)),
        max(1, round(height * min_short_side / short)),
    )
    return image.resize(size, Image.BICUBIC, reducing_gap=3.0)


def open_image_bounded(path: str | os.PathLike, min_short_side: int) -> Image.Image:
    """`open_image` for inference on photos of any size: only a regular file is opened, a JPEG
    is decoded at a reduced scale (PIL's `draft`, a DCT-domain reduction) and the image is then
    scaled down so that its short side is `min_short_side` (a few times the model's input), so a
    9-megapixel photo costs a fraction of its full decode. An image whose short side is at most
    `min_short_side` is decoded exactly as `open_image` does."""
    regular_file_or_error(path)
    try:
        with Image.open(path) as img:
            return decode_bounded(img, min_short_side)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot read image {path}: {e}. Replace or delete the file, or leave it out"
        ) from e


def decode_bounded(img: Image.Image, min_short_side: int) -> Image.Image:
    """An opened (header read, pixels not yet decoded) image as RGB at a short side of at most
    `min_short_side`: `open_image_bounded`'s decoding, for images that come from elsewhere
    than a file (the server's uploads). PIL's errors propagate."""
    short = min(img.size)
    if img.format == "JPEG" and short > 2 * min_short_side:
        factor = min_short_side / short  # draft keeps at least this size
        img.draft("RGB", (round(img.size[0] * factor), round(img.size[1] * factor)))
    img.load()
    if img.mode in ("RGB", "L") and "transparency" not in img.info:
        return to_rgb(_reduced(img, min_short_side))  # no full-size RGB copy
    return _reduced(to_rgb(img), min_short_side)


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
