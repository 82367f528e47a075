"""ProGrad — Prompt-aligned Gradient (Zhu et al., ICCV 2023; official code BeierZhu/Prompt-align,
`trainers/prograd.py` and `prograd_backward_and_update` in its Dassl fork).

A CoOp context trained with ProGrad's gradient rule (`vlprompt.methods.gradient_rules`): the
cross-entropy gradient of every parameter tensor loses its component along the gradient of the KL
towards zero-shot CLIP (template `config.template`, temperature T) whenever the two conflict. The
teacher's image features are the student's own frozen ones, so no second image-encoder pass runs.
The rule lives in the base class: any method can set `gradient_rule="prograd"`.

Defaults (official `configs/trainers/ProGrad/rn50.yaml` + `scripts/prograd.sh`): 16 context
vectors, class token at the end, shared context; the context is initialised ProGrad's way
(`CTX_INIT: True`): the words of the data set's template before the class name fill the last
positions and the first ones are zeros (`pad_ctx_init=True`, ctx_init "a photo of a" — set ctx_init
to your template's words, e.g. "a centered satellite photo of" for EuroSAT); lambda 1.0 (0.8 for
8/16-shot Flowers, DTD, EuroSAT), T = 1; SGD lr 0.002, batch 32, cosine, 1 warm-up epoch at 1e-5;
200 epochs (the 8-16-shot setting; official: 50 for 1 shot, 100 for 2-4 shots — its base-to-new
script uses 4 shots and 100 epochs). The official configs are RN50; the ViT-B/16 rows usually
quoted come from later papers' re-runs with these settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vlprompt.methods.base import MethodConfig
from vlprompt.methods.coop import CoOp, CoOpConfig
from vlprompt.methods.registry import register_method


@dataclass
class ProGradConfig(CoOpConfig):
    """ProGrad (defaults: the official configs, see the module docstring)."""

    ctx_init: str = "a photo of a"  # template words before the class name (official CTX_INIT)
    pad_ctx_init: bool = True  # ProGrad's init layout: n_ctx vectors, the words at the end
    gradient_rule: str = "prograd"  # project the CE gradient when it conflicts with the KL's
    prograd_lambda: float = 1.0  # lambda (0.8 for 8/16-shot Flowers, DTD, EuroSAT)
    prograd_temperature: float = 1.0  # KL temperature T


@register_method
class ProGrad(CoOp):
    """CoOp + the prompt-aligned gradient rule."""

    name: ClassVar[str] = "prograd"
    config_class: ClassVar[type[MethodConfig]] = ProGradConfig
