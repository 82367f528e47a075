"""Method labels (vlprompt.methods.labels): a run's method plus the rules it runs with, as
results name it (``coop+dept``), and how sweeps and presets read them."""

from __future__ import annotations

import pytest

from vlprompt.errors import MethodError, PresetError
from vlprompt.methods.labels import canonical_label, method_label, parse_label
from vlprompt.presets import presets_for_methods
from vlprompt.protocols import _label_of_config


@pytest.mark.parametrize(
    ("method", "feature_rule", "gradient_rule", "label"),
    [
        ("coop", "none", "none", "coop"),  # plain runs keep the method's name
        ("coop", "dept", "none", "coop+dept"),
        ("coop", "none", "prograd", "coop+prograd"),
        ("coop", "dept", "prograd", "coop+dept+prograd"),
        ("prograd", "none", "prograd", "prograd"),  # ProGrad's own rule is its default
        ("prograd", "dept", "prograd", "prograd+dept"),
        ("prograd", "none", "kd", "prograd+kd"),
        ("prograd", "none", "none", "prograd+none"),
    ],
)
def test_labels_name_the_rules_other_than_the_methods_own(method, feature_rule, gradient_rule,
                                                          label):  # fmt: skip
    assert method_label(method, feature_rule, gradient_rule) == label
    base, settings = parse_label(label)
    assert base == method
    assert settings.get("feature_rule", "none") == feature_rule
    if "gradient_rule" in settings:
        assert settings["gradient_rule"] == gradient_rule
    assert canonical_label(label) == label


def test_a_label_naming_the_default_rule_is_the_plain_name():
    assert canonical_label("prograd+prograd") == "prograd"
    assert canonical_label("coop+none") == "coop"


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("coop+foo", "'foo' is not a rule"),
        ("coop+dept+dept", "'dept' is not a rule"),
        ("coop+prograd+kd", "'kd' is not a rule"),
        ("coop+prograd+dept", "then its feature rule, then its gradient rule"),
        ("+dept", "write METHOD first"),
    ],
)
def test_bad_labels_are_one_clear_error(label, message):
    with pytest.raises(MethodError, match=message) as info:
        parse_label(label)
    assert "\n" not in str(info.value)


def test_a_runs_label_comes_from_its_resolved_config():
    """A preset that sets the rule labels the run, whatever name the sweep gave it."""
    kwargs = {"shots": 16, "subsample": "base"}
    assert _label_of_config("coop", "mini_shapes", kwargs) == "coop"
    assert _label_of_config("coop", "mini_shapes", {**kwargs, "feature_rule": "dept"}) == (
        "coop+dept"
    )
    preset = {**kwargs, "preset": "coop_dept_base2new"}
    assert _label_of_config("coop", "mini_shapes", preset) == "coop+dept"
    assert _label_of_config("prograd", "mini_shapes", kwargs) == "prograd"


def test_presets_go_to_the_label_their_rules_make():
    both = presets_for_methods(["coop_base2new", "coop_dept_base2new"], ["coop", "coop+dept"])
    assert both == {"coop": "coop_base2new", "coop+dept": "coop_dept_base2new"}
    # a plain name takes its method's preset, rules and all (the run is then labelled coop+dept)
    assert presets_for_methods(["coop_dept_base2new"], ["coop"]) == {"coop": "coop_dept_base2new"}
    # a label whose rules no preset makes takes its method's preset
    assert presets_for_methods(["coop_base2new"], ["coop+dept"]) == {"coop+dept": "coop_base2new"}
    assert presets_for_methods("mini", ["coop", "coop+dept"]) == {
        "coop": "mini", "coop+dept": "mini"
    }  # fmt: skip
    with pytest.raises(PresetError, match="runs as coop\\+dept, coop\\+prograd"):
        presets_for_methods(["coop_base2new"], ["coop+dept", "coop+prograd"])
    with pytest.raises(PresetError, match="which this sweep does not run"):
        presets_for_methods(["coop_dept_base2new"], ["kgcoop+dept"])
