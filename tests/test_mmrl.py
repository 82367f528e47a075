"""MMRL: the method (fast path and its `implementation="reference"`) equals a plain reference
written here from the paper's formulation over open_clip's own blocks (explicit insertion and
replacement of the representation tokens, full-length text, every row), in logits, loss and
gradients; the base/new inference rule; save -> load is exact; bad settings fail clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_RN
from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.backbone import load_clip
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.mmrl import MMRL, default_rep_layers

CLASSES = ["dog", "cat", "red_car", "oak tree"]
TEMPLATE = "a photo of a {}, a type of thing."
SHAPES = ["vlprompt-test-vit-a", "vlprompt-test-vit-d"]  # 2/2 and 3 text / 2 vision blocks


def _method(clip, **config) -> MMRL:
    torch.manual_seed(1)
    m = create_method("mmrl", clip, CLASSES, template=TEMPLATE, n_rep_tokens=3, **config)
    with torch.no_grad():  # far from init, every projection different
        for p in m.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _inf_mask(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((n, n), float("-inf"), dtype=like.dtype).triu(1)


def paper_text(clip, m: MMRL, classnames) -> torch.Tensor:
    """Prompts of the template; at each representation block the K mapped tokens go after SOS
    (inserted at the first, replaced after); causal mask of the current length; EOS + K."""
    model = clip.model
    k = m.config.n_rep_tokens
    tokens = clip.tokenize([TEMPLATE.format(c.replace("_", " ")) for c in classnames])
    x = model.token_embedding(tokens) + model.positional_embedding
    reps = {b - 1: m.r2t[j](m.rep_tokens) for j, b in enumerate(m.rep_layers)}
    first = m.rep_layers[0] - 1
    for i, block in enumerate(model.transformer.resblocks):
        if i in reps:
            r = reps[i][None].expand(len(classnames), -1, -1)
            x = torch.cat([x[:, :1], r, x[:, (1 if i == first else 1 + k) :]], dim=1)
        x = block(x, attn_mask=_inf_mask(x.shape[1], x))
    x = model.ln_final(x[torch.arange(len(classnames)), tokens.argmax(dim=-1) + k])
    return F.normalize(x @ model.text_projection, dim=-1)


def paper_image(clip, m: MMRL, images) -> tuple[torch.Tensor, torch.Tensor]:
    """(class-token, representation) features: tokens after CLS at the representation blocks;
    ln_post + proj of CLS; mean of ln_post over the K outputs times proj_rep."""
    v = clip.model.visual
    k = m.config.n_rep_tokens
    x = v.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
    x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding)
    reps = {b - 1: m.r2v[j](m.rep_tokens) for j, b in enumerate(m.rep_layers)}
    first = m.rep_layers[0] - 1
    for i, block in enumerate(v.transformer.resblocks):
        if i in reps:
            r = reps[i][None].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], r, x[:, (1 if i == first else 1 + k) :]], dim=1)
        x = block(x)
    img = F.normalize(v.ln_post(x[:, 0]) @ v.proj, dim=-1)
    rep = F.normalize(v.ln_post(x[:, 1 : 1 + k]).mean(dim=1) @ m.proj_rep, dim=-1)
    return img, rep


def paper_loss(clip, m: MMRL, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(fusion logits, the official MMRL_Loss) from the paper's formulation."""
    model = clip.model
    text = paper_text(clip, m, CLASSES)
    img, rep = paper_image(clip, m, images)
    lc, lr = 100 * img @ text.t(), 100 * rep @ text.t()
    a, w = m.config.alpha, m.config.reg_weight
    frozen_img = F.normalize(model.encode_image(images), dim=-1)
    tokens = clip.tokenize([TEMPLATE.format(c.replace("_", " ")) for c in CLASSES])
    frozen_text = F.normalize(model.encode_text(tokens), dim=-1)
    loss = a * F.cross_entropy(lc, labels) + (1 - a) * F.cross_entropy(lr, labels)
    loss = loss + w * (1 - F.cosine_similarity(img, frozen_img.detach()).mean())
    loss = loss + w * (1 - F.cosine_similarity(text, frozen_text.detach()).mean())
    return a * lc + (1 - a) * lr, loss


def _grads(m: MMRL, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, m.trainable_parameters()))


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("implementation", ["fast", "reference"])
@pytest.mark.parametrize("rep_layers", [None, (1, 2)])
def test_equals_the_paper_formulation_in_logits_loss_and_gradients(
    name, implementation, rep_layers
):
    clip = _clip(name).double()  # float64: the logits' scale 100 makes fp32 noise ~1e-5
    m = _method(clip, implementation=implementation, rep_layers=rep_layers).double()
    images = torch.randn(3, 3, clip.image_size, clip.image_size, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1])
    out = m.forward_train(images)
    ours = m.loss(out, labels)
    logits, theirs = paper_loss(clip, m, images, labels)
    assert out.class_logits.std() > 1  # logits that differ between classes
    torch.testing.assert_close(out.logits.double(), logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.double(), theirs, atol=1e-5, rtol=0)
    for a, b in zip(_grads(m, ours), _grads(m, theirs), strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", SHAPES)
def test_fast_path_equals_the_paper_formulation_in_fp32(name):
    """In fp32 the normalised features and the loss agree to 1e-5 (the logits are 100 x the
    features), the gradients (|g| ~ 1) to 1e-5 + 1e-4 relative."""
    clip = _clip(name)
    m = _method(clip)
    images = torch.randn(2, 3, clip.image_size, clip.image_size)
    with torch.no_grad():
        pair = m.encode_image(images)
        img, rep = paper_image(clip, m, images)
        torch.testing.assert_close(pair[:, 0], img, atol=1e-5, rtol=0)
        torch.testing.assert_close(pair[:, 1], rep, atol=1e-5, rtol=0)
        torch.testing.assert_close(m.text_features(), paper_text(clip, m, CLASSES), atol=1e-5,
                                   rtol=0)  # fmt: skip
    labels = torch.tensor([1, 2])
    ours, theirs = m.loss(m.forward_train(images), labels), paper_loss(clip, m, images, labels)[1]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    for a, b in zip(_grads(m, ours), _grads(m, theirs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)  # |grad| ~ 1


def test_text_chunks_give_the_same_features():
    clip = _clip()
    m = _method(clip)
    one = m.text_features()
    m.config.text_chunk_size = 1
    torch.testing.assert_close(m.text_features(), one, atol=1e-6, rtol=0)


def test_fusion_on_the_trained_classes_class_token_logits_on_others():
    clip = _clip()
    m = _method(clip)
    images = torch.randn(2, 3, clip.image_size, clip.image_size)
    with torch.no_grad():
        text = paper_text(clip, m, CLASSES)
        img, rep = paper_image(clip, m, images)
        a = m.config.alpha
        fusion = a * 100 * img @ text.t() + (1 - a) * 100 * rep @ text.t()
        torch.testing.assert_close(m(images), fusion, atol=1e-4, rtol=0)
        new = ["bus", "lamp"]
        m.set_classnames(new)
        only_cls = 100 * img @ paper_text(clip, m, new).t()
        torch.testing.assert_close(m(images), only_cls, atol=1e-4, rtol=0)
        m.config.inference = "fusion"
        assert (m(images) - only_cls).abs().max() > 1e-2
        m.set_classnames(CLASSES)
        m.config.inference = "class_token"
        torch.testing.assert_close(m(images), 100 * img @ text.t(), atol=1e-4, rtol=0)


def test_save_load_is_exact_and_keeps_the_trained_classes(tmp_path):
    clip = _clip()
    m = _method(clip, rep_layers=(1, 2))
    m.eval()
    images = torch.randn(2, 3, clip.image_size, clip.image_size)
    m.set_classnames(["bus", "lamp"])  # the saved class list is still the trained one
    m.save(tmp_path / "mmrl")
    m.set_classnames(CLASSES)
    loaded = MMRL.load(tmp_path / "mmrl", clip)
    assert loaded.classnames == CLASSES and loaded.trained_classnames == CLASSES
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), m(images), atol=0, rtol=0)
    other = MMRL.load(tmp_path / "mmrl", clip, ["bus", "lamp"])
    assert other.trained_classnames == CLASSES and not other.uses_fusion()
    learned = set(m.learned_state_dict())
    assert {"rep_tokens", "proj_rep", "r2v.0.weight", "r2t.1.bias"} <= learned
    assert not any(k.startswith("clip.") for k in learned)


def test_only_the_representation_parts_learn_and_projections_start_equal():
    clip = _clip()
    torch.manual_seed(0)
    m = create_method("mmrl", clip, CLASSES, rep_layers=(1, 2))
    assert {id(p) for p in m.trainable_parameters()} == {
        id(p) for n, p in m.named_parameters() if not n.startswith("clip.")
    }
    torch.testing.assert_close(m.r2v[0].weight, m.r2v[1].weight, atol=0, rtol=0)
    assert m.rep_tokens.std().item() == pytest.approx(0.02, rel=0.3)


def test_default_representation_blocks():
    assert default_rep_layers(12) == (6, 7, 8, 9, 10, 11, 12)
    assert default_rep_layers(2) == (2,)
    assert default_rep_layers(3) == (2, 3)
    assert default_rep_layers(1) == (1,)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"n_rep_tokens": 0}, "n_rep_tokens must be >= 1"),
        ({"rep_dim": 0}, "rep_dim must be >= 1"),
        ({"rep_layers": (2, 1)}, "rep_layers must be increasing"),
        ({"rep_layers": (0, 1)}, "rep_layers must be increasing"),
        ({"rep_layers": (2, 3)}, "shallower tower has 2 blocks"),
        ({"alpha": 1.5}, "alpha must be in [0, 1]"),
        ({"reg_weight": -1.0}, "reg_weight must be >= 0"),
        ({"inference": "base"}, "inference must be one of"),
        ({"implementation": "quick"}, "implementation must be one of"),
        ({"text_chunk_size": 0}, "text_chunk_size must be >= 1"),
    ],
)
def test_bad_settings_fail_with_one_clear_error(bad, fragment):
    with pytest.raises(MethodError, match=None) as err:
        create_method("mmrl", _clip(), CLASSES, **bad)
    assert fragment in str(err.value)


def test_a_resnet_is_refused():
    with pytest.raises(MethodError, match="needs a ViT"):
        create_method("mmrl", load_clip(TINY_RN), CLASSES)
