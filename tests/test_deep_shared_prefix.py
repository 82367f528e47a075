"""Deep prompts (IVLP, MaPLe, PromptSRC) and TCP, fast path: the text positions every class
prompt shares are encoded once (`deep_prompts.SharedPrefixDeepHook`) and give the reference's
logits and the gradients of every learned tensor; and a training step does no work that no
gradient or target needs (frozen weights, frozen image features, cached frozen text targets)."""

from __future__ import annotations

import pytest
import torch

from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt import deep_prompts
from vlprompt.deep_prompts import can_share_prefix, shared_prefix_length
from vlprompt.methods import create_method
from vlprompt.methods import promptsrc as promptsrc_module

# "red car" / "red apple" share their first name token: the prefix runs into the names
CLASSES = ["cat", "golden retriever", "red sports car", "a tree", "x"]
LABELS = torch.tensor([0, 3, 4])
SHAPES = ["vlprompt-test-vit-a", "vlprompt-test-vit-d"]  # different widths, heads and depths
METHODS = ["ivlp", "maple", "promptsrc", "tcp"]
CHUNKS = {  # chunks off; chunks of 2 classes (checkpointed while training); never checkpointed
    "one chunk": {},
    "chunks of 2": {"text_chunk_size": 2},
    "chunks of 2, no checkpoint": {"text_chunk_size": 2, "text_checkpoint": "never"},
}


def _settings(name: str, chunks: dict) -> dict:
    # TCP's template puts fixed words between the context and the name (a longer prefix)
    return {"prompt_template": "a photo of a {}.", **chunks} if name == "tcp" else dict(chunks)


def _pair(name: str, clip, dtype=torch.float32, **settings):
    """A fast and a reference method with the same learned values (far from their init)."""
    torch.manual_seed(1)
    fast = create_method(name, clip, CLASSES, **settings).to(dtype)
    with torch.no_grad():
        for p in fast.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref = create_method(name, clip, CLASSES, implementation="reference", **settings).to(dtype)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _step(method, images):
    """Logits and the gradient of each learned tensor of the method's whole training loss."""
    method.zero_grad(set_to_none=True)
    out = method.forward_train(images)
    method.loss(out, LABELS).backward()
    return out.logits.detach(), [p.grad.clone() for p in method.trainable_parameters()]


def _count_shared_calls(monkeypatch) -> list[int]:
    """Records the prefix length of every pass of the shared-prefix hook's first block."""
    calls: list[int] = []
    original = deep_prompts.SharedPrefixDeepHook.__call__

    def counted(self, i, block, x, mask):
        if i == 0:
            calls.append(self.prefix.shape[1])
        return original(self, i, block, x, mask)

    monkeypatch.setattr(deep_prompts.SharedPrefixDeepHook, "__call__", counted)
    return calls


def _assert_same(got, want, atol):
    (got_logits, got_grads), (want_logits, want_grads) = got, want
    torch.testing.assert_close(got_logits, want_logits, atol=atol, rtol=0)
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert float(w.abs().max()) > 0  # every learned tensor gets a gradient
        scale = max(1.0, float(w.abs().max()))
        torch.testing.assert_close(g / scale, w / scale, atol=atol, rtol=0)


@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", METHODS)
def test_shared_prefix_equals_the_reference(monkeypatch, name, shape, chunks):
    """fp32, atol 1e-5 on the logits and on each gradient divided by its largest entry."""
    clip = _clip(shape)
    fast, ref = _pair(name, clip, **_settings(name, CHUNKS[chunks]))
    images = torch.randn(3, 3, clip.image_size, clip.image_size)
    calls = _count_shared_calls(monkeypatch)
    got = _step(fast, images)
    expected = 1 + 4 + 4 if name == "tcp" else 5  # SOS + context (+ "a photo of a")
    n_chunks = 3 if "chunk_size" in str(CHUNKS[chunks]) else 1
    assert calls and set(calls) == {expected}  # the shared-prefix path ran
    # once per chunk, plus the recomputation of each checkpointed chunk in the backward pass
    assert len(calls) == n_chunks * (2 if chunks == "chunks of 2" else 1)
    calls.clear()
    _assert_same(got, _step(ref, images), atol=1e-5)
    assert not calls  # the reference does not take it


@pytest.mark.parametrize("name", METHODS)
def test_shared_prefix_is_the_same_math_in_fp64(name):
    """fp64: the shared-prefix path equals the full-sequence fast path to 1e-10 (logits,
    gradients), so the fp32 differences above are rounding."""
    clip = _clip(SHAPES[1])
    clip.model.double()
    fast, _ = _pair(name, clip, torch.float64, **_settings(name, {}))
    images = torch.randn(3, 3, clip.image_size, clip.image_size, dtype=torch.float64)
    got = _step(fast, images)
    fast.share_text_prefix = False
    _assert_same(got, _step(fast, images), atol=1e-10)


def test_prefix_length_follows_the_tokens(tiny_clip):
    """The prefix covers SOS, the context and fixed words up to the first position where two
    class prompts differ: MaPLe's "of a" is in it; a first name token all classes share is too;
    it always ends before the shortest prompt's EOS."""
    maple = create_method("maple", tiny_clip, CLASSES)  # SOS, "a photo" (learned), "of a"
    assert shared_prefix_length(maple.layout) == 5
    ivlp = create_method("ivlp", tiny_clip, CLASSES)  # SOS + 4 learned
    assert shared_prefix_length(ivlp.layout) == 5
    ivlp.set_classnames(["red car", "red apple"])
    assert shared_prefix_length(ivlp.layout) == 6  # "red" is the same in both
    ivlp.set_classnames(["car"])  # one class: the prefix stops before the EOS
    assert shared_prefix_length(ivlp.layout) == int(ivlp.eot_index.min())


def test_no_sharing_where_it_would_not_be_exact(tiny_clip):
    eot = torch.tensor([7, 9])
    deep = [torch.zeros(4, 64)]
    assert can_share_prefix(tiny_clip, 5, eot, deep)
    assert not can_share_prefix(tiny_clip, 1, eot, [])  # nothing to share
    assert not can_share_prefix(tiny_clip, 8, eot, [])  # must end before every EOS
    assert not can_share_prefix(tiny_clip, 4, eot, deep)  # deep prompts reach past it
    assert not can_share_prefix(tiny_clip, 5, eot, [torch.zeros(2, 4, 64)])  # per class


# ---- no work without a gradient ----------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_frozen_weights_get_no_gradient_and_no_patch_embedding_backward(tiny_clip, name):
    """After a training step no CLIP weight requires or holds a gradient, every learned tensor
    has one, and the image tower's input (patch embedding) is never recorded by autograd: the
    backward stops at the first prompted block (TCP: the image tower runs without autograd)."""
    method = create_method(name, tiny_clip, CLASSES)
    seen: list[bool] = []
    visual = tiny_clip.model.visual
    handles = [
        visual.conv1.register_forward_hook(lambda m, i, out: seen.append(out.requires_grad)),
        # ln_pre: recorded only for the (few) prompt tokens, never for CLS + patches
        visual.ln_pre.register_forward_hook(
            lambda m, i, out: seen.append(out.requires_grad and out.shape[1] > 4)
        ),
    ]
    images = torch.randn(3, 3, tiny_clip.image_size, tiny_clip.image_size)
    try:
        method.backward_step(images, LABELS)
    finally:
        for handle in handles:
            handle.remove()
    assert seen and not any(seen)
    for p in tiny_clip.model.parameters():
        assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in method.trainable_parameters())


def test_promptsrc_reads_its_frozen_image_features_through_image_features(tiny_clip, monkeypatch):
    """Its regulariser and teacher read the frozen features through `image_features` (which a
    view pool shadows with stored ones): no frozen image pass of its own."""
    method = create_method("promptsrc", tiny_clip, CLASSES)
    images = torch.randn(3, 3, tiny_clip.image_size, tiny_clip.image_size)
    stored = method.image_features(images)
    method.image_features = lambda imgs: stored  # what the view pool does

    def no_frozen_pass(*args, **kwargs):
        raise AssertionError("a frozen image pass")

    monkeypatch.setattr(tiny_clip, "encode_image", no_frozen_pass)
    out = method.backward_step(images, LABELS)
    assert torch.isfinite(out.loss)


def test_frozen_text_targets_are_computed_once_per_class_list(tiny_clip, monkeypatch):
    """PromptSRC's template-mean text target and TCP's hand-crafted features: once per class
    list, over several steps; again after the class list changes."""
    calls = []
    original = promptsrc_module.template_mean_features
    monkeypatch.setattr(
        promptsrc_module,
        "template_mean_features",
        lambda *a: calls.append(1) or original(*a),
    )
    src = create_method("promptsrc", tiny_clip, CLASSES, templates=("a {}.", "the {}."))
    tcp = create_method("tcp", tiny_clip, CLASSES)
    encoded = []
    original_encode = tiny_clip.encode_text
    monkeypatch.setattr(
        tiny_clip, "encode_text", lambda *a, **k: encoded.append(1) or original_encode(*a, **k)
    )
    images = torch.randn(3, 3, tiny_clip.image_size, tiny_clip.image_size)
    for _ in range(3):
        src.backward_step(images, LABELS)
        tcp.backward_step(images, LABELS)
    assert len(calls) == 1
    assert len(encoded) == 2 + 1  # PromptSRC: one per template; TCP: one
    src.set_classnames([*CLASSES, "dog"])
    tcp.set_classnames([*CLASSES, "dog"])
    src.backward_step(images, LABELS)
    tcp.backward_step(images, LABELS)
    assert len(calls) == 2 and len(encoded) == 2 * 3
