"""DePT — Decoupled Prompt Tuning (Zhang et al., CVPR 2024; official code Koorye/DePT at
d4ff41684bac42da30ebb6898496772dec3157f2: `trainers/elp_coop.py`, `elp_kgcoop.py`,
`elp_maple.py` (`FiLM`, `CustomCLIP._forward_base/_forward_new/_loss`), `elp_cocoop.py`,
`trainers/optim.py`, `train.py` (`extend_cfg`), `configs.py`), as a feature rule any method
with separate image and class features can use: `feature_rule="dept"`.

What it adds (the channel-wise transformation head, "CAT"): on the features *before* their L2
normalisation, image features v [B, E] and class features t [C, E] (the method's own, prompts
and all), two channel-wise affine maps `v' = a_v * v + b_v`, `t' = a_t * t + b_t` (official
`FiLM`: scale initialised to ones, bias to zeros) and a linear classifier `W x + b` over the
training classes (PyTorch's default Linear init). Training loss:

    (1 - w) * CE(method logits, y) + w * CE(W [t'_y ; v'] + b, [y ; y]) + the method's other terms

i.e. the linear classifier is trained on the transformed image features and on the transformed
text feature of each image's label, stacked (official `_forward_logits_linear_probe`; CoCoOp,
whose class features depend on the image, takes each image's label feature from its own
prompts' class features [B, C, E], as `elp_cocoop.py` does); the
method's own cross-entropy keeps weight 1 - w and its regularisers keep theirs (official
`elp_kgcoop._loss`: `(1 - w) CE + w CE_lp + W * kg`). Implemented as `method.loss + w *
(CE_lp - CE)`, which is that sum for every method whose loss is `CE(out.logits) + terms`.

Inference (official `forward`): on the classes the head was trained on (base classes; all of
ImageNet for cross-data-set) the logits are the fusion `(1 - w) * method logits + w * W v' + b`
(`TEST_TIME_FUSION` True); on any other class list (new classes, other data sets) the method's
plain logits: the head learned nothing for them. Here the rule is "the current class list equals
the head's" (`PromptMethod.dept_active`), which gives the official choice in both protocols.

Official hyper-parameters (`train.py extend_cfg` + `configs/trainers/ExtrasLinearProbe*/`):
w = 0.7 (`LINEAR_PROBE.WEIGHT`), the head's learning rate 6.5 x the prompts' (`OPTIM.LR_EXP`,
`STAGED_LR`: prompts 0.0035, head 0.02275; during the warm-up epoch both at 1e-5, as Dassl's
constant warm-up sets every group), SGD momentum 0.9, weight decay 5e-4 on everything,
10 epochs, batch 4, cosine after 1 constant warm-up epoch at 1e-5; base methods as DePT runs
them: CoOp 16 random context vectors, KgCoOp 4 from "a photo of a" with W = 2.0, MaPLe 2 from "a
photo of a" at depth 9 (presets `coop_dept_base2new`, `kgcoop_dept_base2new`,
`maple_dept_base2new`, and `*_dept_xd` for its ImageNet cross-data-set runs); CoCoOp + DePT
is CoCoOp's own recipe (4 context vectors from "a photo of a", lr 0.002, batch 1, 10 epochs)
with the head (`cocoop_dept_base2new`, `ExtrasLinearProbeCoCoOp/vit_b16_c4_ep10_batch1_ctxv1`).
PromptSRC + DePT has no official recipe, so no preset: `--preset promptsrc_base2new --set
feature_rule=dept` (in a sweep: `--methods promptsrc+dept --preset promptsrc_base2new`) gives
PromptSRC's recipe with DePT's head.

Published (the official README's base-to-new table, `examples/base_to_new_performance.png`,
ViT-B/16, 16 shots, average of 11 data sets, base / new / H): CoOp + DePT 83.66 / 71.82 / 77.29,
CoCoOp + DePT 83.80 / 72.89 / 77.97, KgCoOp + DePT 83.62 / 75.04 / 79.10, MaPLe + DePT
84.85 / 74.82 / 79.52, PromptSRC + DePT 85.19 / 76.17 / 80.43 (CoOp alone in the same table:
81.50 / 69.77 / 75.18). They are in `assets/published.csv` under the labels `coop+dept`,
`cocoop+dept`, ... that runs with the rule carry in their results (`vlprompt.methods.labels`),
so `vlprompt report --published` sets a DePT run beside DePT's numbers, not its base method's.

Composition: a method-config field, like `gradient_rule`, rather than a wrapper method. The head
needs the base method's features before normalisation and its loss terms; a wrapper would have
to re-implement every base method's forward to reach them, while a field lets each method hand
them over in its `TrainOutput` (`raw_image_features`, `raw_text_features`) and lets the one
training step (`vlprompt.methods.training_step`) apply the feature rule's loss and then the
gradient rule on the total: `feature_rule="dept"` with `gradient_rule="prograd"` projects the
gradient of the DePT loss where it conflicts with the KL towards zero-shot CLIP (the KL is taken
on the method's logits, the ones new classes get). The saved run is the base method's: its
learned tensors plus `dept.*` in `prompts.safetensors`, the head's class list in `method.json`.

Departures from the official code:
- precision: fp32 weights (autocast where the run asks) instead of the official fp16 CLIP;
- PromptSRC + DePT is not in the official code (its README and `configs.py` list CoOp, CoCoOp,
  KgCoOp and MaPLe); it is composed by the same rule: PromptSRC's cross-entropy takes weight
  1 - w, its self-regulating terms keep theirs, and GPA averages the head with the prompts.

Agreement with the official code (harness outside the repository): the official
`trainers/elp_coop.py`, `elp_kgcoop.py` and `elp_maple.py` `CustomCLIP` (Dassl stubbed, their CLIP
built by their own `build_model` from the state dict of the same random open_clip ViT, QuickGELU,
every weight perturbed and rounded to fp16-representable values, reloaded in fp32; MaPLe's
`.half()` casts made no-ops), their FiLM scales and biases moved off identity at random, the same
prompts, FiLM and linear weights copied into ours; 4 images, 5 base classes, 3 new ones; one
training forward + backward (base), then eval on base (fusion) and new (plain). Worst
|difference| (loss / gradients of every learned tensor / base logits / new logits):
- CoOp (16 random context vectors), two shapes (vision 128x2 / text 128x2, 32 px; vision
  192x3 / text 64x3, 48 px): 2.4e-7 / 5.7e-7 / 8.3e-7 / 1.7e-6 (|loss| ~1.8, |grad| <= 0.46);
- KgCoOp ("a photo of a", W 2.0, the Oxford Pets anchor "a photo of a {}, a type of pet."),
  the same two shapes: 2.4e-7 / 1.2e-6 / 7.2e-7 / 3.6e-6 (|grad| <= 1.03);
- MaPLe (2 context vectors from "a photo of a"), widths 768 / 512 (the official code's fixed
  widths) at depth 9 (9 + 9 blocks) and depth 3 (3 + 4 blocks): 4.8e-7 / 2.1e-6 / 1.8e-6 /
  7.0e-6 (|grad| <= 1.19);
- CoCoOp (4 context vectors from "a photo of a", the meta-net as built, PREC fp32; official
  `trainers/elp_cocoop.py`, its meta-net copied into ours too), the two CoOp shapes, our fast
  and our reference path: 4.8e-7 / 3.9e-7 / 9.5e-7 / 2.9e-6 (|loss| ~1.7-1.8, |grad| <= 0.33);
- PromptSRC: no official DePT code to compare with; tests/test_dept.py checks it against the
  plain formula above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.errors import MethodError

if TYPE_CHECKING:
    from vlprompt.methods.contract import PromptMethod
    from vlprompt.methods.training_step import TrainOutput


class ChannelTransform(nn.Module):
    """x * scale + bias per channel (official `FiLM(dim)`: scale ones, bias zeros)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.to(x.dtype) * x + self.bias.to(x.dtype)


class DePTHead(nn.Module):
    """The channel-wise transformations of image and text features and the linear classifier
    over the `n_classes` training classes."""

    def __init__(self, embed_dim: int, n_classes: int) -> None:
        super().__init__()
        self.image_transform = ChannelTransform(embed_dim)
        self.text_transform = ChannelTransform(embed_dim)
        self.classifier = nn.Linear(embed_dim, n_classes)

    def image_logits(self, raw_image: torch.Tensor) -> torch.Tensor:
        """W v' + b [B, n_classes] of unnormalised image features [B, E]."""
        return self.classifier(self.image_transform(raw_image))

    def train_logits(
        self, raw_image: torch.Tensor, raw_text: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's logits on [t'_y ; v'] [2B, n_classes] and their targets [y ; y].
        `raw_text`: class features [C, E], or each image's own [B, C, E] (CoCoOp)."""
        if raw_text.dim() == 3:  # image i's label feature from its own class features
            raw_text = raw_text[torch.arange(len(labels), device=labels.device), labels]
        else:
            raw_text = raw_text[labels]
        text = self.text_transform(raw_text)
        feats = torch.cat([text, self.image_transform(raw_image).to(text.dtype)])
        return self.classifier(feats), torch.cat([labels, labels])


def check_feature_rule(method: PromptMethod) -> None:
    """MethodError unless `method`'s class supports its config's feature rule."""
    rule = method.config.feature_rule
    if rule == "none" or rule in type(method).feature_rules:
        return
    from vlprompt.methods.registry import get_method_class, list_methods

    able = [n for n in list_methods() if rule in get_method_class(n).feature_rules]
    raise MethodError(
        f"feature_rule {rule!r} needs a method with separate image and class features; "
        f"{method.name or type(method).__name__} has none. Use it with one of "
        f"{', '.join(able)}, or set feature_rule=none"
    )


def dept_loss_term(method: PromptMethod, out: TrainOutput, labels: torch.Tensor) -> torch.Tensor:
    """w * (CE of the head - CE of the method's logits): added to the method's loss it gives
    DePT's `(1 - w) CE + w CE_head + other terms`."""
    head = method.dept
    if head is None or out.raw_image_features is None or out.raw_text_features is None:
        raise MethodError(
            f"{method.name}: feature_rule 'dept' needs the training forward's unnormalised "
            "image and text features (raw_image_features, raw_text_features), which it did not "
            "return"
        )
    logits, targets = head.train_logits(out.raw_image_features, out.raw_text_features, labels)
    ce_head = F.cross_entropy(logits.float(), targets)
    ce = F.cross_entropy(out.logits.float(), labels)
    return method.config.dept_weight * (ce_head - ce)


def fused_logits(
    method: PromptMethod, logits: torch.Tensor, raw_image: torch.Tensor
) -> torch.Tensor:
    """The logits a forward returns: on the head's classes `(1 - w) logits + w head logits`,
    elsewhere `logits` unchanged (the official base / new inference)."""
    if not method.dept_active:
        return logits
    w = method.config.dept_weight
    head = method.dept.image_logits(raw_image)  # type: ignore[union-attr]
    return (1 - w) * logits.float() + w * head.float()


def head_param_groups(groups: list[dict], head: nn.Module, lr_scale: float) -> list[dict]:
    """`groups` without the head's parameters, plus one group of them at `lr_scale` times the
    schedule's rate (official STAGED_LR)."""
    ids = {id(p) for p in head.parameters()}
    out = []
    for group in groups:
        params = [p for p in group["params"] if id(p) not in ids]
        if params:
            out.append({**group, "params": params})
    out.append({"params": [p for p in head.parameters() if p.requires_grad], "lr_scale": lr_scale})
    return out
