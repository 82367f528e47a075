"""The downstream few-shot data sets of the mini world (pure specs; files live in vlprompt.data.mini).

Each data set fixes one or two attributes per class (e.g. colour and shape for "red circle"). Most
also have a *look*: the attributes that do not define a class are fixed for the whole data set
(e.g. large white plain objects on a night background), as a real benchmark is a narrow slice of
the world photographed its own way. The tiny CLIP's zero-shot prompts do not name the look, so 16
shots have something to learn; drawn from the whole world instead, the data sets left prompt
learning almost nothing to gain over zero-shot (docs/mini-world.md). Position is always free;
what a look does not fix is drawn from the world's distribution. Class names are word combinations that the tiny
CLIP met in its pre-training captions but was never trained to classify. Class lists are ordered
so that the base half (first ceil(n/2) labels, as CoCoOp's split) and the new half both contain every
attribute word: new classes are new *combinations* of known words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vlprompt.mini import world

SPLITS = ("train", "val", "test")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class MiniDatasetSpec:
    """One mini data set: its classes (names + the attributes that define them) and sizes."""

    name: str
    classnames: tuple[str, ...]
    class_attributes: tuple[dict, ...]  # attributes fixed by each class, same order as classnames
    seed: int  # distinct per data set, so no two data sets share images
    description: str
    template: str = "a photo of a {}."
    fixed: dict = field(default_factory=lambda: {"style": "photo"})  # fixed for every image
    per_class: dict = field(default_factory=lambda: {"train": 24, "val": 8, "test": 30})
    variants: tuple[str, ...] = ()  # styles of the domain-shifted test sets (dg protocol)
    # when set, item i of every class and split is drawn in styles[i % len(styles)] (balanced)
    styles: tuple[str, ...] = ()

    def item(self, split: str, label: int, index: int, style: str | None = None) -> Image.Image:
        """Image `index` of class `label` in `split`, optionally re-drawn in another style
        (same objects, same layout, same background)."""
        attrs, rng = self.attributes(split, label, index)
        if style is not None:
            attrs = world.restyle(attrs, style)
        return world.render(attrs, rng)

    def attributes(
        self, split: str, label: int, index: int
    ) -> tuple[world.Attributes, np.random.Generator]:
        """The attributes of one item and the generator (in the state `render` must start from)."""
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[split], label, index])
        fixed = {**self.fixed, **self.class_attributes[label]}
        if self.styles:
            fixed["style"] = self.styles[index % len(self.styles)]
        return world.sample_attributes(rng, **fixed), rng


def _combos(pairs: list[tuple[str, str]], keys: tuple[str, str], fmt: str) -> tuple:
    names = tuple(fmt.format(a, b) for a, b in pairs)
    attrs = tuple({keys[0]: a, keys[1]: b} for a, b in pairs)
    return names, attrs


def _build_specs() -> dict[str, MiniDatasetSpec]:
    specs: list[MiniDatasetSpec] = []
    single = {"style": "photo", "count": 1}
    # the look of the shape data sets: everything but the class attributes (and position) fixed
    white_on_night = {"color": "white", "pattern": "plain", "size": "large", "background": "night"}

    def look(*class_keys: str) -> dict:
        return {k: v for k, v in white_on_night.items() if k not in class_keys}

    specs.append(
        MiniDatasetSpec(
            name="mini_shapes",
            classnames=world.SHAPES,
            class_attributes=tuple({"shape": s} for s in world.SHAPES),
            seed=101,
            description="10 shapes, large white plain objects on a night background",
            fixed={**single, **look("shape")},
            variants=("sketch", "cartoon", "inverted", "noisy"),
        )
    )
    colors = tuple(world.COLORS)
    specs.append(
        MiniDatasetSpec(
            name="mini_colors",
            classnames=tuple(f"{c} shape" for c in colors),
            class_attributes=tuple({"color": c} for c in colors),
            seed=102,
            description="10 colours of any shape",
            fixed=single,
        )
    )
    # 4 colours x 4 shapes; base = (colour + shape) even. In each half every colour and every
    # shape occurs twice, so neither the colour nor the shape alone names the class.
    colors4, shapes4 = ("red", "blue", "green", "yellow"), ("circle", "square", "star", "heart")
    grid = [
        (c, s) for i, c in enumerate(colors4) for j, s in enumerate(shapes4) if (i + j) % 2 == 0
    ]
    grid += [(c, s) for i, c in enumerate(colors4) for j, s in enumerate(shapes4) if (i + j) % 2]
    objects = grid
    names, attrs = _combos(objects, ("color", "shape"), "{} {}")
    specs.append(
        MiniDatasetSpec(
            name="mini_objects",
            classnames=names,
            class_attributes=attrs,
            seed=103,
            description="16 colour+shape combinations, large outlined objects on a night "
            "background; new classes recombine base words",
            fixed={**single, "pattern": "outlined", "size": "large", "background": "night"},
            variants=("cartoon", "noisy", "blurry", "pixelated"),
        )
    )
    patterns = [
        ("striped", "circle"), ("dotted", "square"), ("checkered", "star"),
        ("outlined", "circle"), ("striped", "square"), ("dotted", "star"),
        ("checkered", "circle"), ("outlined", "square"), ("striped", "star"),
        ("dotted", "circle"), ("checkered", "square"), ("outlined", "star"),
    ]  # fmt: skip
    names, attrs = _combos(patterns, ("pattern", "shape"), "{} {}")
    specs.append(
        MiniDatasetSpec(
            name="mini_patterns",
            classnames=names,
            class_attributes=attrs,
            seed=104,
            description="12 pattern+shape combinations, large white objects on a night background",
            fixed={**single, **look("pattern", "shape")},
        )
    )
    counts = [
        (1, "circle"), (2, "square"), (3, "triangle"), (4, "circle"), (1, "square"), (2, "triangle"),
        (3, "circle"), (4, "square"), (1, "triangle"), (2, "circle"), (3, "square"), (4, "triangle"),
    ]  # fmt: skip
    specs.append(
        MiniDatasetSpec(
            name="mini_counts",
            classnames=tuple(
                f"{world.NUMBER_WORDS[n]} {world.PLURALS[s] if n > 1 else s}" for n, s in counts
            ),
            class_attributes=tuple({"count": n, "shape": s} for n, s in counts),
            seed=105,
            description="12 count+shape combinations (one to four objects), large white plain "
            "objects on a night background",
            template="a photo of {}.",
            fixed={"style": "photo", **look("count", "shape")},
        )
    )
    sizes = [
        ("small", "circle"), ("large", "square"), ("small", "triangle"), ("large", "star"),
        ("small", "heart"), ("large", "hexagon"), ("large", "circle"), ("small", "square"),
        ("large", "triangle"), ("small", "star"), ("large", "heart"), ("small", "hexagon"),
    ]  # fmt: skip
    names, attrs = _combos(sizes, ("size", "shape"), "{} {}")
    specs.append(
        MiniDatasetSpec(
            name="mini_sizes",
            classnames=names,
            class_attributes=attrs,
            seed=106,
            description="12 size+shape combinations, yellow plain objects on a night background",
            fixed={**single, **look("size", "shape"), "color": "yellow"},
        )
    )
    specs.append(
        MiniDatasetSpec(
            name="mini_scenes",
            classnames=tuple(f"{s} background" for s in world.SCENES),
            class_attributes=tuple({"background": s} for s in world.SCENES),
            seed=107,
            description="8 background scenes behind any objects, in each of the 7 styles",
            fixed={},
            styles=world.STYLES,
        )
    )
    return {s.name: s for s in specs}


MINI_DATASETS: dict[str, MiniDatasetSpec] = _build_specs()


def get_spec(name: str) -> MiniDatasetSpec:
    try:
        return MINI_DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown mini data set {name!r}; known: {', '.join(MINI_DATASETS)}"
        ) from None
