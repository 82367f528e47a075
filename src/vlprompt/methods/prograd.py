"""ProGrad — Prompt-aligned Gradient (Zhu et al., ICCV 2023; official code BeierZhu/Prompt-align,
`trainers/prograd.py` and `prograd_backward_and_update` in its Dassl fork).

A CoOp context trained with ProGrad's gradient rule (`vlprompt.methods.gradient_rules`): the
cross-entropy gradient of every parameter tensor loses its component along the gradient of the KL
towards zero-shot CLIP (template `config.template`, temperature T) whenever the two conflict. The
teacher's image features are the student's own frozen ones, so no second image-encoder pass runs.
The rule lives in the base class: any method can set `gradient_rule="prograd"`.

Defaults (official `configs/trainers/ProGrad/rn50.yaml` + `scripts/prograd.sh`): 16 context
vectors, class token at the end, shared context; lambda 1.0 (0.8 for 8/16-shot Flowers, DTD,
EuroSAT), T = 1; SGD lr 0.002, batch 32, cosine, 1 warm-up epoch at 1e-5; 200 epochs (the 8-16-shot
setting; official: 50 for 1 shot, 100 for 2-4 shots — its base-to-new script uses 4 shots and 100
epochs). The official configs are RN50; the ViT-B/16 rows usually quoted come from later papers'
re-runs with these settings.

Templates and context init, as the official `trainers/prograd.py` (`CUSTOM_TEMPLATES`, read from
BeierZhu/Prompt-align): ProGrad has its own template table (`PROGRAD_TEMPLATES`), which differs
from CoOp's for five data sets (Oxford Pets "a type of pet, a photo of a {}.", Flowers "a type of
flower, a photo of a {}.", FGVC Aircraft "a type of aircraft, a photo of a {}.", DTD "a texture
of {}.", Food-101 "a type of food, a photo of {}."). It is the teacher's prompt and, with
`ctx_from_template=True` (the official `CTX_INIT`), the context's init: the template's words
before " {}." count `w` space-separated words; the context is `n_ctx - w` zero vectors, then the
embeddings of the words' first `w` BPE tokens. Where a comma makes the tokens outnumber the
words (e.g. "pet," is two tokens), the remaining tokens stay fixed text between the learned
context and the class name: "a type of pet, a photo of a" learns 8 vectors ("a type of pet ,
a photo of") and keeps "a" as text. User data and data sets outside the table get the data
set's template (default "a photo of a {}."). The layout and the teacher prompt equal the
official rule on every template of the table (tests/test_prograd.py writes that rule out).
Departures from the official code, on purpose:
- Precision: the official default is PREC "fp16" (`ProGrad.public/train.py`:
  `TRAINER.COOP.PREC`): CLIP, the context, the zero-shot teacher and the SGD updates are fp16,
  with no loss scaling. Here the context is fp32, the KL and the gradient projection are
  computed in fp32, and the engine's precision applies to the passes (`--precision`: fp32 on
  the CPU; on CUDA fp16 autocast with a GradScaler by default).
- The official code takes `CTX_INIT` from the template whatever its text says; here
  `ctx_from_template=False` gives CoOp's init from `ctx_init` (padded ProGrad's way, or random).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import MethodConfig
from vlprompt.methods.coop import CoOp, CoOpConfig
from vlprompt.methods.registry import register_method

# where the official trainers/prograd.py CUSTOM_TEMPLATES differ from CoOp's (vlprompt's
# data-set names; the others are CoOp's, i.e. vlprompt.data.templates.TEMPLATES)
PROGRAD_TEMPLATES: dict[str, str] = {
    "oxford_pets": "a type of pet, a photo of a {}.",
    "oxford_flowers": "a type of flower, a photo of a {}.",
    "fgvc_aircraft": "a type of aircraft, a photo of a {}.",
    "dtd": "a texture of {}.",
    "food101": "a type of food, a photo of {}.",
}


@dataclass
class ProGradConfig(CoOpConfig):
    """ProGrad (defaults: the official configs, see the module docstring)."""

    ctx_from_template: bool = field(
        default=True,
        metadata={
            "help": "initialise the context from the template's words, the official CTX_INIT "
            "(false: CoOp's init from ctx_init)"
        },
    )
    ctx_init: str = field(
        default="",
        metadata={"help": "with ctx_from_template false: init words ('' = N(0, 0.02^2))"},
    )
    pad_ctx_init: bool = field(
        default=True,
        metadata={"help": "ProGrad's init layout: n_ctx vectors, the words at the end"},
    )
    gradient_rule: str = field(
        default="prograd",
        metadata={"help": "project the CE gradient when it conflicts with the KL's"},
    )
    prograd_lambda: float = field(
        default=1.0, metadata={"help": "lambda (0.8 for 8/16-shot Flowers, DTD, EuroSAT)"}
    )
    prograd_temperature: float = field(default=1.0, metadata={"help": "KL temperature T"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ctx_from_template and self.ctx_init:
            raise MethodError(
                f"ctx_init {self.ctx_init!r} is ignored while ctx_from_template is true (the "
                "context starts from the template, as the official ProGrad); set "
                "ctx_from_template=false to initialise from ctx_init"
            )


def template_context(clip: ClipBackbone, template: str, n_ctx: int) -> tuple[torch.Tensor, str]:
    """The official ProGrad init from `template`: the context [n_ctx, D] and the fixed text
    that follows it (see the module docstring)."""
    if not template.endswith(" {}."):
        raise MethodError(
            f"ProGrad's context init needs a template ending in ' {{}}.' (the class name last), "
            f"got {template!r}; pass ctx_from_template=false to use ctx_init instead"
        )
    words_text = template[: -len(" {}.")].replace("_", " ")
    words = words_text.split(" ")
    ids = te.text_token_ids(clip, words_text)
    if n_ctx < len(words):
        raise MethodError(
            f"ProGrad's context init {words_text!r} (the words of the template {template!r}) "
            f"has {len(words)} tokens but n_ctx is {n_ctx}; use n_ctx >= {len(words)}"
        )
    if len(ids) < len(words):
        raise MethodError(f"template {template!r} has fewer BPE tokens than words")
    fixed_ids = ids[len(words) :]
    fixed = ""
    if len(fixed_ids):
        tails = (" ".join(words[-k:]) for k in range(1, len(words) + 1))
        fixed = next((t for t in tails if torch.equal(te.text_token_ids(clip, t), fixed_ids)), None)
        if fixed is None:
            raise MethodError(
                f"template {template!r}: its tokens after the first {len(words)} are not whole "
                "words; pass ctx_from_template=false"
            )
    with torch.no_grad():
        vectors = clip.token_embedding(ids[None, : len(words)])[0].float()
    ctx = torch.zeros(n_ctx, clip.text_width, device=vectors.device)
    ctx[n_ctx - len(words) :] = vectors
    return ctx, fixed


@register_method
class ProGrad(CoOp):
    """CoOp + the prompt-aligned gradient rule."""

    name: ClassVar[str] = "prograd"
    config_class: ClassVar[type[MethodConfig]] = ProGradConfig
    config: ProGradConfig

    @classmethod
    def template_for(cls, dataset: str, dataset_template: str) -> str | None:
        """The official ProGrad template of `dataset`: its own where it differs from CoOp's,
        else the data set's (CoOp's)."""
        return PROGRAD_TEMPLATES.get(dataset, dataset_template)

    def initial_context(self, n_classes: int | None) -> torch.Tensor:
        if not self.config.ctx_from_template:
            return super().initial_context(n_classes)
        ctx, _ = template_context(self.clip, self.config.template, self.config.n_ctx)
        return ctx if n_classes is None else ctx[None].repeat(n_classes, 1, 1)

    def fixed_text(self) -> str:
        if not self.config.ctx_from_template:
            return ""
        _, fixed = template_context(self.clip, self.config.template, self.config.n_ctx)
        if fixed and self.config.class_token_position != "end":
            raise MethodError(
                f"template {self.config.template!r} leaves {fixed!r} as fixed text before the "
                "class name, which needs class_token_position 'end'"
            )
        return fixed
