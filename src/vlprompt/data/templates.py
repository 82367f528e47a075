"""Hand-crafted prompt templates: one per benchmark (CoOp's choice) and ImageNet's 7-template ensemble.

Each template holds one `{}` where the class name goes. Users pass their own through
`build_dataset(..., template=..., templates=[...])`.
"""

from __future__ import annotations

from vlprompt.errors import DataError

DEFAULT_TEMPLATE = "a photo of a {}."

# The per-data-set template every CoOp-family paper uses (DESIGN §5).
TEMPLATES: dict[str, str] = {
    "imagenet": DEFAULT_TEMPLATE,
    "caltech101": DEFAULT_TEMPLATE,
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": DEFAULT_TEMPLATE,
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "sun397": DEFAULT_TEMPLATE,
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenetv2": DEFAULT_TEMPLATE,
    "imagenet_sketch": DEFAULT_TEMPLATE,
    "imagenet_a": DEFAULT_TEMPLATE,
    "imagenet_r": DEFAULT_TEMPLATE,
}

# The 7-template ensemble CLIP selected for ImageNet and CoOp uses for zero-shot ImageNet.
IMAGENET_TEMPLATES: list[str] = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]


def check_template(template: str) -> str:
    """Return `template` if it holds exactly one `{}` placeholder, else raise DataError."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise DataError(
            f"template {template!r} must be a string with exactly one '{{}}' where the class name "
            "goes, e.g. 'a photo of a {}.'"
        )
    return template
