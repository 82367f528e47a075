"""Hand-crafted prompt templates: one per benchmark (CoOp's choice) and ImageNet's 7-template ensemble.

Each template holds one `{}` where the class name goes. Users pass their own through
`build_dataset(..., template=..., templates=[...])`.
"""

from __future__ import annotations

import string

from vlprompt.errors import DataError

DEFAULT_TEMPLATE = "a photo of a {}."

# The per-data-set template every CoOp-family paper uses (CoOp's `CUSTOM_TEMPLATES`).
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

# TCP's prompt after its 4 learned context vectors (htyao89/Textual-based_Class-aware_prompt_tuning
# trainers/tcp.py `CUSTOM_TEMPLATES` without the 4 words the context replaces: "X X X X {}, a
# type of pet."; UCF101's and ImageNet's have no X, so the context replaces "a photo of a").
# Every other data set: "{}." (EuroSAT, SUN397, Caltech101, ImageNet: "X X X X {}.").
TCP_PROMPT_TEMPLATES: dict[str, str] = {
    "oxford_pets": "{}, a type of pet.",
    "oxford_flowers": "{}, a type of flower.",
    "fgvc_aircraft": "{}, a type of aircraft.",
    "dtd": "{} texture.",
    "stanford_cars": "{}, a type of car",  # official: no final period
    "food101": "{}, a type of food.",
    "ucf101": "person doing {}.",
}
TCP_DEFAULT_PROMPT = "{}."

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


NEEDS_ONE_FIELD = (
    "a template needs exactly one '{}' where the class name goes, e.g. 'a photo of a {}.'"
)


def _field_text(name: str, spec: str, conversion: str | None) -> str:
    return (
        "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    )


def check_template(template: str) -> str:
    """Return `template` if `template.format(classname)` fills exactly one plain `{}` (checked with
    `string.Formatter().parse`), else raise DataError naming the bad field or brace. Literal
    braces are written `{{` and `}}`, as for str.format."""
    if not isinstance(template, str):
        raise DataError(
            f"template {template!r} is not a string ({type(template).__name__}); {NEEDS_ONE_FIELD}"
        )
    try:
        fields = [f[1:] for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError as e:  # a single '{' or '}'
        raise DataError(
            f"template {template!r}: {e} (write a literal brace as '{{{{' or '}}}}'); "
            f"{NEEDS_ONE_FIELD}"
        ) from e
    for name, spec, conversion in fields:
        if name or spec or conversion:
            field = _field_text(name, spec, conversion)
            raise DataError(
                f"template {template!r} has the field {field!r}: only a plain '{{}}' is filled "
                f"in; {NEEDS_ONE_FIELD}"
            )
    if len(fields) != 1:
        raise DataError(f"template {template!r} has {len(fields)} '{{}}' fields; {NEEDS_ONE_FIELD}")
    return template
