"""DePT as a feature rule (`feature_rule="dept"`, vlprompt.methods.dept): the fast path of each
base method with DePT's head against a plain reference written from the paper's formulation (the
base method's reference path for its features, the head and the loss written out here), the
inference rule (fusion on the head's classes, plain logits elsewhere), composition with ProGrad,
save -> load, the optimizer's staged group and one clear error per bad setting."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbone import load_clip
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.gradient_rules import prograd_kl
from vlprompt.methods.kgcoop import knowledge_guided_score
from vlprompt.methods.promptsrc import PromptSRCTrainOutput, self_regulating_losses

BASE = ["cat", "dog", "bird", "fish"]
NEW = ["car", "tree", "house"]
SHAPES = ["vlprompt-test-vit-a", "vlprompt-test-vit-b"]
METHODS = {
    "coop": dict(n_ctx=4),
    "cocoop": dict(),
    "kgcoop": dict(w=2.0),
    "maple": dict(),
    "promptsrc": dict(),
}
W = 0.7


def _pair(name: str, clip, **extra):
    """(fast method with DePT, the same weights on the base method's reference path, no DePT)."""
    torch.manual_seed(0)
    fast = create_method(name, clip, BASE, feature_rule="dept", **METHODS[name], **extra)
    with torch.no_grad():  # a head away from its identity init, so that every part counts
        for p in fast.dept.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ref = create_method(name, clip, BASE, implementation="reference", **METHODS[name])
    own = {k: v for k, v in fast.state_dict().items() if not k.startswith(("clip.", "dept."))}
    ref.load_state_dict(own, strict=False)
    return fast, ref


def _raw_features(ref, name: str, images: torch.Tensor):
    """The base method's image and class features before normalisation, by its reference path."""
    if name in ("coop", "kgcoop"):
        return ref.clip.encode_image(images).detach(), ref.encode_prompts(ref.prompt_embeddings())
    if name == "cocoop":  # each image's own class features [B, C, E] (the per-image loop)
        v = ref.clip.encode_image(images).detach()
        return v, ref.image_class_features(F.normalize(v, dim=-1))
    return ref.encode_image(images), ref.raw_text_features()


def _cosine(scale, v, t):
    """CLIP's logits of raw image features [B, E] and raw class features [C, E] or [B, C, E]."""
    vn, tn = v / v.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    if t.dim() == 3:
        return scale * torch.stack([vi @ ti.t() for vi, ti in zip(vn, tn)])
    return scale * vn @ tn.t()


def _plain_loss(ref, head, name, images, labels):
    """DePT's loss written out: (1 - w) CE(method) + w CE(head on [t'_y; v']) + other terms."""
    v, t = _raw_features(ref, name, images)
    scale = ref.clip.model.logit_scale.exp()
    vn, tn = v / v.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    logits = _cosine(scale, v, t)
    v2 = head["image_transform.scale"] * v + head["image_transform.bias"]
    t2 = head["text_transform.scale"] * t + head["text_transform.bias"]
    t2 = t2[torch.arange(len(labels)), labels] if t.dim() == 3 else t2[labels]
    feats = torch.cat([t2, v2])
    head_logits = feats @ head["classifier.weight"].t() + head["classifier.bias"]
    loss = (1 - W) * F.cross_entropy(logits, labels) + W * F.cross_entropy(
        head_logits, torch.cat([labels, labels])
    )
    if name == "kgcoop":
        loss = loss + 2.0 * knowledge_guided_score(tn, ref.zeroshot_text_features())
    if name == "promptsrc":  # its self-regulating terms on the same features
        out = PromptSRCTrainOutput(logits, ref.image_features(images), text_features=tn,
                                   prompted_image_features=vn)  # fmt: skip
        frozen = ref.frozen_text_features()
        zeroshot = scale * out.image_features @ frozen.t()
        text, image, kl = self_regulating_losses(out, frozen, zeroshot)
        loss = loss + kl + 25.0 * text + 10.0 * image
    return loss, logits


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(METHODS))
def test_fast_path_equals_the_plain_formulation(name, shape):
    torch.manual_seed(0)
    clip = load_clip(shape)
    fast, ref = _pair(name, clip)
    size = clip.image_size
    images, labels = torch.randn(3, 3, size, size), torch.tensor([0, 3, 1])
    head = {k: p.detach().clone().requires_grad_() for k, p in fast.dept.named_parameters()}
    fast.train()
    ref.train()
    step = fast.backward_step(images, labels)
    loss, sim = _plain_loss(ref, head, name, images, labels)
    loss.backward()
    torch.testing.assert_close(step.loss, loss.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(step.logits, sim.detach(), atol=1e-5, rtol=0)
    ref_grads = {k: p.grad for k, p in ref.named_parameters() if p.requires_grad}
    for k, p in fast.named_parameters():
        if not p.requires_grad:
            continue
        expected = head[k[len("dept.") :]].grad if k.startswith("dept.") else ref_grads[k]
        assert expected is not None and p.grad is not None, k
        torch.testing.assert_close(
            p.grad, expected, atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}"
        )
    assert all(float(p.grad.abs().max()) > 0 for p in fast.dept.parameters())

    # evaluation: the fusion on the head's classes, the base method's logits on new classes
    with torch.no_grad():
        v, t = _raw_features(ref, name, images)
        scale = ref.clip.model.logit_scale.exp()
        plain = _cosine(scale, v, t)
        v2 = head["image_transform.scale"] * v + head["image_transform.bias"]
        fused = (1 - W) * plain + W * (v2 @ head["classifier.weight"].t() + head["classifier.bias"])
    with fast.classifier():
        torch.testing.assert_close(fast(images), fused, atol=1e-5, rtol=0)
    fast.set_classnames(NEW)
    ref.set_classnames(NEW)
    with fast.classifier(), ref.classifier():
        torch.testing.assert_close(fast(images), ref(images), atol=1e-5, rtol=0)


def test_the_rule_changes_logits_and_loss(tiny_clip):
    """With DePT the base logits are not the method's own (the fusion is really applied)."""
    torch.manual_seed(0)
    dept = create_method("coop", tiny_clip, BASE, n_ctx=4, feature_rule="dept")
    plain = create_method("coop", tiny_clip, BASE, n_ctx=4)
    plain.load_state_dict({"ctx": dept.ctx.detach()}, strict=False)
    images = torch.randn(2, 3, 32, 32)
    with dept.classifier(), plain.classifier():
        assert float((dept(images) - plain(images)).abs().max()) > 1e-2
    assert dept.frozen_image_encoder is False  # evaluation passes images: the head needs them
    assert plain.frozen_image_encoder is True


def test_composes_with_prograd(tiny_clip):
    """feature_rule dept + gradient_rule prograd: the DePT loss's gradient, projected where it
    conflicts with the gradient of the KL (on the method's logits) towards zero-shot CLIP."""
    seen = set()
    for trial in range(10):
        torch.manual_seed(trial)
        method = create_method(
            "coop", tiny_clip, BASE, n_ctx=4, ctx_init="", feature_rule="dept",
            gradient_rule="prograd",
        )  # fmt: skip
        images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))
        params = method.trainable_parameters()
        out = method.forward_train(images)
        from vlprompt.methods.dept import dept_loss_term

        loss = method.loss(out, labels) + dept_loss_term(method, out, labels)
        teacher = method.zeroshot_logits(images, out.image_features)
        g_kl = torch.autograd.grad(prograd_kl(out.logits, teacher), params, retain_graph=True,
                                   allow_unused=True)  # fmt: skip
        g_loss = torch.autograd.grad(loss, params)
        step = method.backward_step(images, labels)
        assert step.gradients_synced
        for p, gl, gk in zip(params, g_loss, g_kl):
            expected = gl
            if gk is not None and torch.any(gk != 0):
                dot = torch.dot(gl.flatten(), gk.flatten())
                if dot < 0:
                    expected = gl - dot / gk.pow(2).sum() * gk
                seen.add(bool(dot < 0))
            torch.testing.assert_close(p.grad, expected, atol=1e-6, rtol=1e-5)
    assert seen == {True, False}  # both the projected and the plain case were met


@pytest.mark.parametrize("name", ["coop", "maple"])
def test_save_load_gives_identical_logits(tmp_path, tiny_clip, name):
    torch.manual_seed(0)
    method = create_method(name, tiny_clip, BASE, feature_rule="dept", **METHODS[name])
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    images = torch.randn(3, 3, 32, 32)
    with method.classifier():
        base = method(images)
    method.set_classnames(NEW)
    with method.classifier():
        new = method(images)
    method.save(tmp_path)  # saved while pointing at the new classes: the head keeps its own
    info = json.loads((tmp_path / "method.json").read_text())
    assert info["head_classnames"] == BASE and info["classnames"] == NEW
    loaded = type(method).load(tmp_path, tiny_clip)
    assert loaded.classnames == NEW and loaded.head_classnames == BASE
    with loaded.classifier():
        assert torch.equal(loaded(images), new)
    again = type(method).load(tmp_path, tiny_clip, BASE)
    with again.classifier():
        assert torch.equal(again(images), base)
    assert sorted(k for k in again.learned_state_dict() if k.startswith("dept.")) == [
        "dept.classifier.bias", "dept.classifier.weight", "dept.image_transform.bias",
        "dept.image_transform.scale", "dept.text_transform.bias", "dept.text_transform.scale",
    ]  # fmt: skip


def test_the_head_gets_its_own_learning_rate_group(tiny_clip):
    method = create_method("coop", tiny_clip, BASE, n_ctx=4, feature_rule="dept")
    groups = method.optimizer_groups()
    assert [g.get("lr_scale", 1.0) for g in groups] == [1.0, 6.5]
    assert groups[0]["params"] == [method.ctx]
    assert groups[1]["params"] == list(method.dept.parameters())
    plain = create_method("coop", tiny_clip, BASE, n_ctx=4)
    assert plain.optimizer_groups() == plain.param_groups()


def test_parameter_count_adds_the_head(tiny_clip):
    dept = create_method("maple", tiny_clip, BASE, feature_rule="dept")
    plain = create_method("maple", tiny_clip, BASE)
    e = tiny_clip.embed_dim
    assert dept.num_trainable_parameters() - plain.num_trainable_parameters() == (
        4 * e + (e + 1) * len(BASE)
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(feature_rule="film"), "feature_rule must be one of none, dept, got 'film'"),
        (dict(feature_rule="dept", dept_weight=1.5), r"dept_weight must be in \[0, 1\]"),
        (dict(feature_rule="dept", dept_lr_scale=0.0), "dept_lr_scale must be > 0"),
        (dict(dept_weight=0.5), "dept_weight set but feature_rule is 'none'"),
    ],
)
def test_bad_settings_one_clear_error_each(tiny_clip, settings, message):
    with pytest.raises(MethodError, match=message):
        create_method("coop", tiny_clip, BASE, n_ctx=4, **settings)


@pytest.mark.parametrize("name", ["zsclip", "linear_probe", "tip_adapter"])
def test_methods_without_separate_features_refuse_the_rule(tiny_clip, name):
    with pytest.raises(MethodError, match="feature_rule 'dept' needs a method with separate"):
        create_method(name, tiny_clip, BASE, feature_rule="dept")


def test_export_refuses_the_rule_with_one_line(tiny_clip):
    from vlprompt.errors import ExportError
    from vlprompt.export import build_exportable

    method = create_method("coop", tiny_clip, BASE, n_ctx=4, feature_rule="dept")
    with pytest.raises(ExportError, match="feature_rule 'dept' cannot be exported yet"):
        build_exportable(method)


def test_train_and_eval_from_the_cli(world, tmp_path, capsys, isolated_home):
    """`vlprompt train --feature-rule dept` on base classes: the run saves the head with its class
    list; `eval` on the new classes uses the method's plain logits (no head rows for them)."""
    from test_engine_helpers import TINY_VIT
    from vlprompt.api import load_run
    from vlprompt.cli import main

    run = tmp_path / "run"
    argv = [
        "train", "--method", "coop", "--dataset", "imagefolder", "--root", str(world["data"]),
        "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]), "--shots", "4",
        "--subsample", "base", "--epochs", "1", "--n-ctx", "4", "--feature-rule", "dept",
        "--deterministic", "-q", "-o", str(run),
    ]  # fmt: skip
    assert main(argv) == 0
    info = json.loads((run / "method.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["method_config"]["feature_rule"] == "dept"
    assert info["head_classnames"] == info["classnames"] and len(info["classnames"]) == 2
    capsys.readouterr()
    assert main(["eval", str(run), "--subsample", "new", "--json", "--no-record"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["n_classes"] == 1 and record["n_images"] == 4
    method = load_run(run).method
    assert method.dept_active and method.dept.classifier.weight.shape[0] == 2


def test_warm_up_sets_every_group_alike_then_the_head_runs_faster(tiny_clip):
    """Dassl's constant warm-up gives every group `warmup_lr`; afterwards the head's group runs
    at `dept_lr_scale` times the schedule's rate (official STAGED_LR)."""
    from vlprompt.schedule import set_lr

    method = create_method("coop", tiny_clip, BASE, n_ctx=4, feature_rule="dept")
    optimizer = torch.optim.SGD(method.optimizer_groups(), lr=1.0)
    set_lr(optimizer, 1e-5, warmup=True)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-5]
    set_lr(optimizer, 0.0035)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0035, 0.0035 * 6.5]
