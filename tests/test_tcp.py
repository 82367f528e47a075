"""TCP: the method's logits and gradients equal a plain reference built by hand (the meta-net on
open_clip's own hand-crafted text features, explicit concatenation at the injection block over
open_clip's blocks); the injected tokens sit where the official code puts them; the loss is
CE + 8 * (1 - mean cos); official defaults and parameter count; save -> load is exact; base-to-new
class lists; one clear error per bad setting; only the learned tensors learn; ProGrad composes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import VIT_SHAPES
from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.tcp import TCP, TCPTrainOutput, knowledge_net, resolve_inject_layer

CLASSES = ["dog", "cat", "red_car", "oak tree"]
NEW_CLASSES = ["sea_lion", "tulip", "fire truck"]
TEMPLATE = "a photo of a {}, a type of thing."
PROMPT_TEMPLATE = "{}, a type of thing."
DEEP = sorted(n for n, s in VIT_SHAPES.items() if s.get("text_layers", 2) >= 2)


def _method(clip, classnames=CLASSES, **config) -> TCP:
    torch.manual_seed(1)
    config = {"template": TEMPLATE, "prompt_template": PROMPT_TEMPLATE, **config}
    m = create_method("tcp", clip, classnames, **config)
    with torch.no_grad():  # far from init
        for p in m.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _images(clip, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, clip.image_size, clip.image_size)


def handcrafted(clip, classnames) -> torch.Tensor:
    """open_clip's own encode_text of the hand-crafted prompts, normalised."""
    tokens = clip.tokenize([TEMPLATE.format(c.replace("_", " ")) for c in classnames])
    return F.normalize(clip.model.encode_text(tokens), dim=-1)


def reference_class_tokens(m: TCP, classnames) -> torch.Tensor:
    net = m.meta_net
    h = F.linear(handcrafted(m.clip, classnames), net.linear1.weight, net.linear1.bias)
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    out = F.linear(h, net.linear2.weight, net.linear2.bias)
    return out.reshape(len(classnames), -1, m.clip.text_width)


def reference_text(m: TCP, classnames, layer: int) -> torch.Tensor:
    """Full-length prompts `SOS ctx template(name) EOS`; at the input of block `layer` the
    positions 1..k take the class tokens, by hand."""
    clip, model = m.clip, m.clip.model
    n = m.ctx.shape[0]
    names = [PROMPT_TEMPLATE.format(c.replace("_", " ")) for c in classnames]
    tokens = clip.tokenize([" ".join(["X"] * n) + f" {c}" for c in names])
    emb = model.token_embedding(tokens)
    ctx = m.ctx[None].expand(len(names), -1, -1)
    x = torch.cat([emb[:, :1], ctx, emb[:, 1 + n :]], dim=1) + model.positional_embedding
    cls = reference_class_tokens(m, classnames)
    for i, block in enumerate(model.transformer.resblocks):
        if i == layer:
            x = torch.cat([x[:, :1], cls, x[:, 1 + cls.shape[1] :]], dim=1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x[torch.arange(len(names)), tokens.argmax(dim=-1)])
    return F.normalize(x @ model.text_projection, dim=-1)


def reference_loss(m: TCP, images, labels, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    clip = m.clip
    text = reference_text(m, m.classnames, layer)
    img = F.normalize(clip.model.encode_image(images), dim=-1)
    logits = clip.model.logit_scale.exp() * img @ text.t()
    cos = (text * handcrafted(clip, m.classnames)).sum(-1)  # both unit norm
    return logits, F.cross_entropy(logits, labels) + 8.0 * (1.0 - cos.mean())


SETTINGS = [
    {"implementation": "fast"},
    {"implementation": "reference"},
    {"implementation": "fast", "text_chunk_size": 3, "text_checkpoint": "always"},
]


@pytest.mark.parametrize("name", DEEP)
@pytest.mark.parametrize("settings", SETTINGS, ids=["fast", "reference", "chunked"])
def test_logits_and_gradients_equal_the_plain_reference(name, settings):
    clip = _clip(name)
    m = _method(clip, **settings)
    images, labels = _images(clip), torch.tensor([0, 2, 3])
    params = m.trainable_parameters()
    out = m.forward_train(images)
    g_ours = torch.autograd.grad(m.loss(out, labels), params)
    logits, loss = reference_loss(m, images, labels, m.inject_layer)
    g_theirs = torch.autograd.grad(loss, params)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(m(images), logits, atol=1e-5, rtol=0)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_an_earlier_injection_block_equals_the_reference():
    clip = _clip("vlprompt-test-vit-d")  # 3 text blocks
    m = _method(clip, inject_layer=1)
    images, labels = _images(clip), torch.tensor([0, 2, 3])
    out = m.forward_train(images)
    logits, loss = reference_loss(m, images, labels, 1)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.loss(out, labels), loss, atol=1e-5, rtol=0)


def test_injected_tokens_have_the_official_shape_and_position():
    clip = _clip("vlprompt-test-vit-d")
    m = _method(clip, inject_layer=2)
    m.zeroshot_text_features()  # its frozen pass through the blocks is not captured below
    inputs: list[torch.Tensor] = []
    hooks = [
        b.register_forward_pre_hook(lambda _m, a: inputs.append(a[0])) for b in clip.text_blocks
    ]
    outputs: list[torch.Tensor] = []
    hooks += [
        b.register_forward_hook(lambda _m, _a, o: outputs.append(o)) for b in clip.text_blocks
    ]
    with torch.no_grad():
        m.text_features()
        tokens = m.class_tokens()
    for h in hooks:
        h.remove()
    assert tokens.shape == (len(CLASSES), 4, clip.text_width)
    torch.testing.assert_close(tokens, reference_class_tokens(m, CLASSES), atol=1e-6, rtol=0)
    # block 2's input: positions 1..4 are the class tokens, the rest is block 1's output
    torch.testing.assert_close(inputs[2][:, 1:5], tokens, atol=0, rtol=0)
    torch.testing.assert_close(inputs[2][:, :1], outputs[1][:, :1], atol=0, rtol=0)
    torch.testing.assert_close(inputs[2][:, 5:], outputs[1][:, 5:], atol=0, rtol=0)
    assert not torch.allclose(outputs[1][:, 1:5], tokens)
    # earlier blocks carry the learned context (block 0: context + positional embedding)
    pos = clip.model.positional_embedding[1:5]
    torch.testing.assert_close(
        inputs[0][:, 1:5], (m.ctx + pos).expand(4, -1, -1), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(inputs[1], outputs[0], atol=0, rtol=0)


def test_loss_equals_a_hand_computation():
    clip = _clip("vlprompt-test-vit-a")
    m = _method(clip)
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 3.0, -2.0, 1.0]])
    labels = torch.tensor([2, 1])
    text = F.normalize(
        torch.arange(4 * clip.embed_dim, dtype=torch.float32).view(4, -1).cos(), dim=-1
    )
    loss = m.loss(TCPTrainOutput(logits, None, text), labels)
    ce = -(logits.log_softmax(-1)[torch.arange(2), labels]).mean()
    zs = handcrafted(clip, CLASSES).detach()
    cos = [float(t @ z / (t.norm() * z.norm())) for t, z in zip(text, zs, strict=True)]
    expected = float(ce) + 8.0 * (1.0 - sum(cos) / len(cos))
    assert float(loss) == pytest.approx(expected, abs=1e-5)


# the official CUSTOM_TEMPLATES (trainers/tcp.py), whose first 4 words the context replaces
OFFICIAL_PROMPTS = {
    "oxford_pets": "X X X X {}, a type of pet.",
    "oxford_flowers": "X X X X {}, a type of flower.",
    "fgvc_aircraft": "X X X X {}, a type of aircraft.",
    "dtd": "X X X X {} texture.",
    "eurosat": "X X X X {}.",
    "stanford_cars": "X X X X {}, a type of car",
    "food101": "X X X X {}, a type of food.",
    "sun397": "X X X X {}.",
    "caltech101": "X X X X {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}


@pytest.mark.parametrize("dataset", sorted(OFFICIAL_PROMPTS))
@pytest.mark.parametrize("preset", [None, "tcp"])
def test_the_prompt_after_the_context_is_the_official_one_with_or_without_the_preset(
    dataset, preset
):
    from vlprompt.api import resolve_config

    official = OFFICIAL_PROMPTS[dataset].split(" ", 4)[4]  # without the 4 replaced words
    config = resolve_config("tcp", dataset, backbone="ViT-B-16", pretrained=None, preset=preset)
    assert config.method_config["prompt_template"] == official
    asked = resolve_config("tcp", dataset, backbone="ViT-B-16", pretrained=None, preset=preset,
                           overrides={"prompt_template": "{}!"})  # fmt: skip
    assert asked.method_config["prompt_template"] == "{}!"  # a setting given wins


def test_official_defaults():
    cfg = TCP.config_class()
    assert (cfg.n_ctx, cfg.ctx_init, cfg.prompt_template) == (4, "", "{}.")
    assert (cfg.n_class_tokens, cfg.inject_layer, cfg.kg_weight) == (4, None, 8.0)
    assert resolve_inject_layer(None, 12) == 8
    assert resolve_inject_layer(None, 3) == 2
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.002, 50, 32)
    assert (cfg.warmup_epochs, cfg.warmup_lr, cfg.weight_decay) == (1, 1e-5, 5e-4)
    assert TCP.template_for("fgvc_aircraft", "x {}") == "a photo of an aircraft {}."
    assert TCP.template_for("dtd", "{} texture.") == "a photo of a {}, a type of texture."
    assert TCP.template_for("oxford_pets", "a photo of a {}, a type of pet.") == (
        "a photo of a {}, a type of pet."
    )
    net = knowledge_net(512, 512, 4)
    assert [type(layer).__name__ for layer in net] == ["Linear", "QuickGELU", "Linear"]
    assert (net.linear1.in_features, net.linear1.out_features) == (512, 128)
    assert (net.linear2.in_features, net.linear2.out_features) == (128, 2048)


def test_parameter_count():
    clip = _clip("vlprompt-test-vit-b")  # text width 32, embedding 24
    m = create_method("tcp", clip, CLASSES)
    e, d = clip.embed_dim, clip.text_width
    assert m.num_trainable_parameters() == 4 * d + e * (e // 4) + e // 4 + (e // 4) * 4 * d + 4 * d
    vit_b16 = 4 * 512 + sum(p.numel() for p in knowledge_net(512, 512, 4).parameters())
    assert vit_b16 == 331_904


def test_save_load_gives_identical_logits(tmp_path):
    clip = _clip("vlprompt-test-vit-b")
    m = _method(clip)
    images = _images(clip)
    m.save(tmp_path / "tcp")
    loaded = TCP.load(tmp_path / "tcp", clip)
    assert set(loaded.learned_state_dict()) == {
        "ctx",
        *(f"meta_net.{k}" for k in m.meta_net.state_dict()),
    }
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), m(images), atol=0, rtol=0)


def test_new_classes_get_their_own_class_tokens():
    clip = _clip("vlprompt-test-vit-a")
    m = _method(clip)
    images = _images(clip)
    with torch.no_grad():
        m(images)  # fills the caches of the base classes
        m.set_classnames(NEW_CLASSES)
        torch.testing.assert_close(
            m.class_tokens(), reference_class_tokens(m, NEW_CLASSES), atol=1e-6, rtol=0
        )
        fresh = create_method(
            "tcp", clip, NEW_CLASSES, template=TEMPLATE, prompt_template=PROMPT_TEMPLATE
        )
        fresh.load_state_dict(m.state_dict())
        torch.testing.assert_close(m(images), fresh(images), atol=0, rtol=0)
        assert m(images).shape == (3, len(NEW_CLASSES))


def test_evaluation_cache_follows_a_step():
    clip = _clip("vlprompt-test-vit-a")
    m = _method(clip)
    feats = clip.encode_image(_images(clip), normalize=True)
    with torch.no_grad():
        before = m.logits_from_features(feats)
        m.meta_net.linear2.bias.add_(torch.randn_like(m.meta_net.linear2.bias))
        after = m.logits_from_features(feats)
        m._text_cache.clear()
        torch.testing.assert_close(after, m.logits_from_features(feats), atol=0, rtol=0)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize(
    ("name", "bad", "fragment"),
    [
        ("vlprompt-test-vit-d", {"inject_layer": 0}, "inject_layer must be >= 1"),
        ("vlprompt-test-vit-d", {"inject_layer": 3}, "inject_layer 3 is deeper"),
        ("vlprompt-test-vit-c", {}, "2 or more text blocks"),  # a 1-block text tower
        (
            "vlprompt-test-vit-d",
            {"n_ctx": 30},
            "n_ctx must be at most 17 \\(the 20-token text context",
        ),
        ("vlprompt-test-vit-d", {"kg_weight": -1.0}, "kg_weight must be >= 0"),
        ("vlprompt-test-vit-d", {"n_class_tokens": 0}, "n_class_tokens must be >= 1"),
        ("vlprompt-test-vit-d", {"n_class_tokens": 9}, "would overwrite the EOS"),
        ("vlprompt-test-vit-d", {"prompt_template": "no name"}, "prompt_template"),
    ],
)
def test_a_bad_setting_is_one_clear_error(name, bad, fragment):
    clip = _clip(name)
    with pytest.raises(MethodError, match=fragment):
        create_method("tcp", clip, CLASSES, **bad)


def test_only_learned_tensors_get_gradients():
    clip = _clip("vlprompt-test-vit-d")
    m = _method(clip)
    images, labels = _images(clip), torch.tensor([0, 1, 2])
    m.backward_step(images, labels)
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert names == {"ctx", *(f"meta_net.{k}" for k in m.meta_net.state_dict())}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.trainable_parameters())
    assert all(p.grad is None for p in clip.parameters())


def test_prograd_composes():
    clip = _clip("vlprompt-test-vit-d")
    plain, ruled = _method(clip), _method(clip, gradient_rule="prograd")
    images, labels = _images(clip), torch.tensor([0, 1, 2])
    plain.backward_step(images, labels)
    out = ruled.backward_step(images, labels)
    assert out.gradients_synced and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, plain.loss(plain.forward_train(images), labels).detach())
    opt = torch.optim.SGD(ruled.trainable_parameters(), lr=0.01)
    opt.step()
    assert all(torch.isfinite(p).all() for p in ruled.trainable_parameters())
    with torch.no_grad():
        assert torch.isfinite(ruled(images)).all()
