"""The method matrix, generated from the registry: every vlprompt method (not only the ones with
a frozen image encoder) trains on tiny data, saves and loads to identical logits, refuses a bad
setting with a clear error, and composes with the ProGrad rule. A new method must add its row
to CASES, or `test_every_method_has_a_row` fails."""

from __future__ import annotations

import pytest
import torch

from conftest import sgd_losses
from test_engine_helpers import TINY_VIT
from vlprompt.errors import MethodError
from vlprompt.methods import create_method, get_method_class, list_methods

CLASSNAMES = ["dog", "cat", "red_car", "oak tree"]


# name -> (small settings for speed, a bad setting, a fragment of its error)
CASES: dict[str, tuple[dict, dict, str]] = {
    "zsclip": ({}, {"template": "no placeholder"}, "template"),
    "linear_probe": ({"c_grid": (1.0, 100.0), "search_steps": 1}, {"c_grid": ()}, "c_grid"),
    "coop": ({"n_ctx": 4}, {"n_ctx": 0}, "n_ctx"),
    "cocoop": ({}, {"n_ctx": -1}, "n_ctx"),
    "kgcoop": ({}, {"kg_weight": -1.0}, "kg_weight"),
    "prograd": ({"n_ctx": 4}, {"prograd_lambda": -1.0}, "prograd_lambda"),
    "rpo": ({"K": 2}, {"K": 0}, "K"),
    "tcp": ({}, {"inject_layer": 0}, "inject_layer"),
    "clip_adapter": ({"reduction": 2}, {"residual_ratio": 1.5}, "residual_ratio"),
    "ivlp": (
        {"depth_text": 2, "depth_vision": 2, "ctx_init": ""},
        {"depth_vision": 0},
        "depth_vision",
    ),
    "maple": ({"depth": 2, "ctx_init": ""}, {"depth": 0}, "depth"),
    "promptsrc": (
        {
            "depth_text": 2,
            "depth_vision": 2,
            "ctx_init": "",
            "templates": ("a photo of a {}.", "art of the {}."),
        },
        {"gpa_std": 0.0},
        "gpa_std",
    ),
    "clip_lora": ({"iterations": 4}, {"rank": 0}, "rank"),
    "skiptuning": ({"start_layer": 1, "lr": 2e-3}, {"start_layer": 2}, "start_layer"),
    "tip_adapter": ({"search_step": (5, 4)}, {"search_scale": (-1.0, 3.0)}, "search_scale"),
    "tip_adapter_f": ({"search_step": (5, 4), "epochs": 2}, {"augment_epoch": 0}, "augment_epoch"),
    "gda": ({}, {"alpha_grid": (-1.0,)}, "alpha_grid"),
    "lp_plus_plus": ({"epochs": 20}, {"alpha_every": 0}, "alpha_every"),
    "clap": ({"epochs": 5}, {"constraint": "cosine"}, "constraint"),
    "two_stage": ({"iterations": 4}, {"stage1_fraction": 2.0}, "stage1_fraction"),
    # alpha 0.5: at these inits its loss and ProGrad's KL then conflict (at 0.7 they do not,
    # and the rule rightly leaves the gradient alone)
    "mmrl": ({"n_rep_tokens": 2, "rep_dim": 16, "alpha": 0.5}, {"alpha": 2.0}, "alpha"),
}


def own_methods() -> list[str]:
    return [n for n in list_methods() if get_method_class(n).__module__.startswith("vlprompt.")]


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % len(CLASSNAMES)


def _method(name: str, clip, **extra):
    method = create_method(name, clip, CLASSNAMES, **CASES[name][0], **extra)
    if not method.needs_training:  # the linear probe: fitted on features
        images, labels = _batch(16)
        feats = clip.encode_image(images, normalize=True)
        method.fit_features(feats, labels, feats, labels)
    return method


def test_every_method_has_a_row():
    assert set(CASES) == set(own_methods())


def _backbones() -> list[tuple[str, str]]:
    """Every method on the tiny ViT; the ones on frozen image features on a ResNet CLIP too."""
    cases = [(n, "tiny_clip") for n in own_methods()]
    return cases + [
        (n, "tiny_rn_clip")
        for n in own_methods()
        if get_method_class(n).frozen_image_encoder and get_method_class(n).needs_training
    ]


@pytest.mark.parametrize(("name", "backbone"), _backbones())
def test_trains_on_tiny_data(name, backbone, request):
    method = _method(name, request.getfixturevalue(backbone))
    images, labels = _batch()
    if not method.needs_training:
        with torch.no_grad():
            assert method(images).shape == (len(images), len(CLASSNAMES))
        assert method.num_trainable_parameters() == 0 or name == "linear_probe"
        return
    assert method.num_trainable_parameters() > 0
    losses = sgd_losses(method, images, labels)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", own_methods())
def test_save_then_load_gives_identical_logits(name, tiny_clip, tmp_path):
    method = _method(name, tiny_clip)
    images, labels = _batch()
    if method.needs_training:  # move away from the initial values first
        opt = torch.optim.SGD(method.trainable_parameters(), lr=0.01)
        method.backward_step(images, labels)
        opt.step()
    method.eval()
    method.save(tmp_path)
    loaded = get_method_class(name).load(tmp_path, tiny_clip)
    assert type(loaded) is type(method)
    with torch.no_grad():
        assert torch.equal(method(images), loaded.eval()(images))


@pytest.mark.usefixtures("isolated_home")
@pytest.mark.parametrize("name", own_methods())
def test_a_trained_run_folder_reloads_to_the_same_predictions(name, world, tmp_path):
    """`vlprompt.train` then `vlprompt.load_run` (what `vlprompt eval` and `predict` do, in a
    fresh backbone): the same test logits as the trained method in memory."""
    import vlprompt

    settings = dict(CASES[name][0])
    if get_method_class(name).needs_training and "iterations" not in settings:
        settings.setdefault("epochs", 1)
    run = vlprompt.train(
        name, "imagefolder", root=world["data"], backbone=TINY_VIT, pretrained=world["ckpt"],
        output_dir=tmp_path / "run", shots=4, progress=False, deterministic=True,
        evaluate=False, **settings,
    )  # fmt: skip
    loaded = vlprompt.load_run(tmp_path / "run")
    images = _batch(4)[0]
    with torch.no_grad():
        assert torch.equal(run.method.eval()(images), loaded.method(images))


@pytest.mark.parametrize("name", own_methods())
def test_a_bad_setting_is_a_clear_error(name, tiny_clip):
    _, bad, fragment = CASES[name]
    with pytest.raises(MethodError, match=fragment):
        create_method(name, tiny_clip, CLASSNAMES, **bad)
    with pytest.raises(MethodError, match="has no setting 'no_such_setting'"):
        create_method(name, tiny_clip, CLASSNAMES, no_such_setting=1)


@pytest.mark.parametrize("name", [n for n in own_methods() if get_method_class(n).needs_training])
def test_prograd_composes(name, tiny_clip):
    """With gradient_rule="prograd" the step leaves finite gradients on every learned tensor,
    and they differ from the plain loss's (the rule acted) whenever the two conflict."""
    torch.manual_seed(0)  # random inits: the same whatever ran before
    images, _ = _batch()
    with torch.no_grad():  # labels against zero-shot (its least likely class): a conflict
        labels = create_method("zsclip", tiny_clip, CLASSNAMES)(images).argmin(dim=-1)
    plain = _method(name, tiny_clip, gradient_rule="none")
    ruled = _method(name, tiny_clip, gradient_rule="prograd")
    ruled.load_state_dict(plain.state_dict())
    plain.backward_step(images, labels)
    out = ruled.backward_step(images, labels)
    assert out.gradients_synced and torch.isfinite(out.loss)
    waiting = _waiting(ruled)
    pairs = [
        (p, q)
        for p, q in zip(plain.trainable_parameters(), ruled.trainable_parameters())
        if id(q) not in waiting
    ]
    assert all(q.grad is None for q in ruled.trainable_parameters() if id(q) in waiting)
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for _, q in pairs)
    assert (
        any(not torch.allclose(p.grad, q.grad) for p, q in pairs) or name == "prograd"
    )  # prograd's "none" run is already CE on the same model


def _waiting(method) -> set[int]:
    """The parameters of a stage that has not begun at the first step (`lr_spans`: two_stage's
    head learns after its LayerNorms), which get no gradient yet."""
    spans = method.lr_spans(100)
    if spans is None:
        return set()
    return {
        id(p)
        for group, (start, _) in zip(method.param_groups(), spans, strict=True)
        if start > 0
        for p in group["params"]
    }
