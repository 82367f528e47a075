"""CLIP image transforms built from the backbone's own image size, mean and std (CoOp's recipe).

train: RandomResizedCrop(size, scale=(0.08, 1), bicubic) + RandomHorizontalFlip + ToTensor +
Normalize; test: Resize(size, bicubic) of the short side + CenterCrop(size) + ToTensor + Normalize.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

from vlprompt.errors import DataError

BICUBIC = T.InterpolationMode.BICUBIC


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
    image_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], train: bool
) -> T.Compose:
    """The train or test transform for images of `image_size` normalized by `mean`/`std`."""
    size = _size(image_size)
    tail = [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if train:
        head = [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    else:
        head = [T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size)]
    return T.Compose(head + tail)


def transform_for(clip, train: bool) -> T.Compose:
    """`build_transform` from a ClipBackbone's `image_size`, `mean` and `std`."""
    return build_transform(clip.image_size, clip.mean, clip.std, train)
