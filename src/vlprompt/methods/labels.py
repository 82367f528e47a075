"""A run's method label: its method's name plus the rules it runs with, e.g. ``coop+dept``.

The feature rule (`MethodConfig.feature_rule`, e.g. DePT) and the gradient rule
(`gradient_rule`, ProGrad or KD) change what a method learns, so results name them: a run's
label is ``METHOD[+FEATURE_RULE][+GRADIENT_RULE]``, each rule named where it is not the method's
own default. Plain runs keep the method's name (``coop``; ``prograd``, whose default gradient
rule is ProGrad's), so older results read the same; ``coop+prograd`` is CoOp's own recipe with
ProGrad's gradient rule, which the ``prograd`` method is not (its defaults are ProGrad's), and
``coop+dept+prograd`` adds DePT's head (the feature rule acts first, the gradient rule on the
total: `vlprompt.methods.training_step`). Sweeps take labels as method names
(`vlprompt.protocols.run_bench`) and summaries compare labels with published rows of the same
label (`vlprompt.published`).
"""

from __future__ import annotations

from typing import Any

from vlprompt.errors import MethodError
from vlprompt.methods.method_config import FEATURE_RULES, GRADIENT_RULES

SEPARATOR = "+"


def default_gradient_rule(method: str) -> str:
    """The gradient rule `method` runs with when none is named ("prograd" for ProGrad)."""
    from vlprompt.methods.registry import get_method_class

    return get_method_class(method).config_class().gradient_rule


def method_label(method: str, feature_rule: str = "none", gradient_rule: str | None = None) -> str:
    """``method``, then ``+feature_rule`` unless "none", then ``+gradient_rule`` unless it is
    the method's default (None: the default)."""
    label = method
    if feature_rule != "none":
        label += SEPARATOR + feature_rule
    if gradient_rule is not None and gradient_rule != default_gradient_rule(method):
        label += SEPARATOR + gradient_rule
    return label


def config_label(method: str, config: Any) -> str:
    """The label of a run of `method` with method config `config`."""
    return method_label(method, config.feature_rule, config.gradient_rule)


def parse_label(label: str) -> tuple[str, dict[str, str]]:
    """(method, the rule settings a label names): ``coop+dept+prograd`` -> ("coop",
    {"feature_rule": "dept", "gradient_rule": "prograd"}); a plain name -> (name, {}). The method
    name itself is not checked here (the registry does that). MethodError for anything else."""
    method, *rules = label.split(SEPARATOR)
    settings: dict[str, str] = {}
    for rule in rules:
        if rule in FEATURE_RULES[1:] and "feature_rule" not in settings:
            settings["feature_rule"] = rule
        elif rule in GRADIENT_RULES and "gradient_rule" not in settings:
            settings["gradient_rule"] = rule
        else:
            raise MethodError(
                f"method {label!r}: {rule!r} is not a rule it can add; write METHOD, then at most "
                f"one feature rule ({', '.join(FEATURE_RULES[1:])}), then at most one gradient "
                f"rule ({', '.join(GRADIENT_RULES)}), joined by '+' (e.g. coop+dept+prograd)"
            )
    if not method or list(settings) == ["gradient_rule", "feature_rule"]:
        raise MethodError(
            f"method {label!r}: write METHOD first, then its feature rule, then its gradient rule "
            "(e.g. coop+dept+prograd)"
        )
    return method, settings


def canonical_label(label: str) -> str:
    """The label a run of `label`'s method and rules gets in results (``prograd+prograd`` ->
    ``prograd``)."""
    method, settings = parse_label(label)
    return method_label(method, settings.get("feature_rule", "none"), settings.get("gradient_rule"))
