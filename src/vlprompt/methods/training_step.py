"""The training step's plumbing: what a training forward and a step return to the engine, and
the step itself (the method's loss, plus its feature rule's term: "dept", `vlprompt.methods.dept`;
then the gradient rule of its config on the total: "none", "kd" or "prograd",
`vlprompt.methods.gradient_rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from vlprompt.methods.dept import dept_loss_term
from vlprompt.methods.gradient_rules import prograd_backward, prograd_kl

if TYPE_CHECKING:
    from vlprompt.methods.contract import PromptMethod


@dataclass
class TrainOutput:
    """A training forward: the logits and, when the method has them for free, the frozen CLIP
    image features (L2-normalised) that ProGrad's zero-shot teacher reuses."""

    logits: torch.Tensor  # [batch, classes]
    image_features: torch.Tensor | None = None  # [batch, embed_dim], normalised, no grad
    # the features the logits were computed from, before L2 normalisation (with autograd where
    # they are learned): set under feature_rule "dept", whose head reads them; keyword-only, so
    # that subclasses' positional fields keep their places
    raw_image_features: torch.Tensor | None = field(default=None, kw_only=True)  # [batch, E]
    raw_text_features: torch.Tensor | None = field(default=None, kw_only=True)  # [classes, E]


@dataclass
class StepOutput:
    """What one training step returns to the engine (after gradients are in `.grad`)."""

    loss: torch.Tensor  # detached scalar, the loss that was minimised
    logits: torch.Tensor  # detached [batch, classes], for running accuracy
    # the gradients are already the global batch's (averaged over DDP processes by the step
    # itself, as the ProGrad rule does), so the engine does not average them again
    gradients_synced: bool = False


GradScale = Callable[[torch.Tensor], torch.Tensor]  # e.g. GradScaler.scale; identity on CPU


def backward_step(
    method: PromptMethod,
    images: torch.Tensor,
    labels: torch.Tensor,
    scale: GradScale = lambda t: t,
) -> StepOutput:
    """`method`'s loss on one batch, its gradient left in `.grad` of the trainable parameters
    after the config's gradient rule: "none" (the loss's gradient), "kd" (loss + lambda * the
    KL towards zero-shot CLIP) or "prograd" (the loss gradient projected where it conflicts with
    the KL's, already averaged over processes). Under feature_rule "dept" the loss is DePT's
    (the method's, its cross-entropy weighted 1 - w, plus w times the head's) and the KL reads
    the method's own logits."""
    config = method.config
    out = method.forward_train(images)
    loss = method.loss(out, labels)
    if config.feature_rule == "dept":
        loss = loss + dept_loss_term(method, out, labels)
    if config.gradient_rule == "kd":
        teacher = method.zeroshot_logits(images, out.image_features)
        kl = prograd_kl(out.logits, teacher, config.prograd_temperature)
        loss = loss + config.prograd_lambda * kl
    if config.gradient_rule == "prograd":
        teacher = method.zeroshot_logits(images, out.image_features)
        prograd_backward(
            method.trainable_parameters(),
            loss,
            out.logits,
            teacher,
            lam=config.prograd_lambda,
            temperature=config.prograd_temperature,
            scale=scale,
        )
        return StepOutput(loss.detach(), out.logits.detach(), gradients_synced=True)
    scale(loss).backward()
    return StepOutput(loss.detach(), out.logits.detach())
