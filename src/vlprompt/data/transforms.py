"""CLIP image transforms built from the backbone's own image size, mean and std (CoOp's recipe).

train: RandomResizedCrop(size, scale=(0.08, 1), bicubic) + RandomHorizontalFlip + ToTensor +
Normalize; test: Resize(size, bicubic) of the short side + CenterCrop(size) + ToTensor + Normalize.

The crop's smallest area fraction (0.08, Dassl's `INPUT.RRCROP_SCALE`) can be raised: on images
whose object is small in the frame (the mini world's 64-px scenes, a user's photos of small parts)
an 8% crop often holds no object at all, or turns a small object into a large one.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

from vlprompt.errors import DataError

BICUBIC = T.InterpolationMode.BICUBIC
PAPER_CROP_MIN_SCALE = 0.08  # RandomResizedCrop's smallest area fraction in CoOp's recipe


def check_crop_min_scale(value) -> float:
    """`value` as a float in (0, 1], or a DataError saying what is expected."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise DataError(
            f"crop_min_scale={value!r}: expected a number in (0, 1] (the smallest area fraction a "
            f"training crop keeps; {PAPER_CROP_MIN_SCALE} = the papers, 1 = no crop, flips only)"
        )
    return float(value)


def _size(image_size) -> int:
    if isinstance(image_size, Sequence) and not isinstance(image_size, str):
        sizes = set(int(s) for s in image_size)
        if len(sizes) != 1:
            raise DataError(f"image_size={tuple(image_size)}: only square inputs are supported")
        image_size = sizes.pop()
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size={image_size!r} must be a positive integer")
    return image_size


def build_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    crop_min_scale: float = PAPER_CROP_MIN_SCALE,
) -> T.Compose:
    """The train or test transform for images of `image_size` normalized by `mean`/`std`.
    `crop_min_scale` (train only): the smallest area fraction of a random crop; 1 = no crop
    (the whole image resized to `image_size`, as the test transform does, then a random flip)."""
    size = _size(image_size)
    scale = check_crop_min_scale(crop_min_scale)
    tail = [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if train and scale >= 1:
        head = [T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size), T.RandomHorizontalFlip()]
    elif train:
        head = [
            T.RandomResizedCrop(size, scale=(scale, 1.0), interpolation=BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    else:
        head = [T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size)]
    return T.Compose(head + tail)


def transform_for(clip, train: bool, crop_min_scale: float = PAPER_CROP_MIN_SCALE) -> T.Compose:
    """`build_transform` from a ClipBackbone's `image_size`, `mean` and `std`."""
    return build_transform(clip.image_size, clip.mean, clip.std, train, crop_min_scale)
