"""The class side of the method contract (`PromptMethod.class_features`, `classifier()`): for
every method whose text does not depend on the image, evaluation and `Run.predict` compute the
class side once per call, with the same logits as computing it for every batch."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from test_method_matrix import CASES, CLASSNAMES, _method, own_methods
from vlprompt.data import ImageListDataset, transform_for
from vlprompt.data.types import Datum
from vlprompt.evaluation import compute_logits
from vlprompt.methods import get_method_class

N_IMAGES = 6


def text_static() -> list[str]:
    return [n for n in own_methods() if not get_method_class(n).text_depends_on_image]


@pytest.fixture
def items(tmp_path) -> list[Datum]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(N_IMAGES):
        pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path)
        label = i % len(CLASSNAMES)
        out.append(Datum(str(path), label, CLASSNAMES[label]))
    return out


def _batch_by_batch(method, items, batch_size: int, use_features: bool) -> torch.Tensor:
    """The per-batch computation: every forward computes the class side again."""
    clip = method.clip
    dataset = ImageListDataset(items, transform_for(clip, train=False))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    method.eval()
    rows = []
    with torch.no_grad():
        for batch in images.split(batch_size):
            if use_features:
                rows.append(method.logits_from_features(clip.encode_image(batch, normalize=True)))
            else:
                rows.append(method(batch))
    return torch.cat(rows).float()


def test_only_cocoop_declares_an_image_dependent_text_side():
    assert [n for n in own_methods() if n not in text_static()] == ["cocoop"]


@pytest.mark.parametrize("name", own_methods())
def test_once_per_call_gives_the_batch_by_batch_logits(name, tiny_clip, items):
    method = _method(name, tiny_clip)
    paths = [False, True] if method.frozen_image_encoder else [False]
    for use_features in paths:
        expected = _batch_by_batch(method, items, 2, use_features)
        logits, used = compute_logits(method, items, batch_size=2, use_features=use_features)
        assert used == use_features
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


class TextPasses:
    """Counts the text tower's passes (every text encoding runs `run_text_layers`)."""

    def __init__(self, clip, monkeypatch) -> None:
        self.count = 0
        run = clip.run_text_layers

        def counted(*args, **kwargs):
            self.count += 1
            return run(*args, **kwargs)

        monkeypatch.setattr(clip, "run_text_layers", counted)


@pytest.mark.parametrize("name", text_static())
def test_evaluation_runs_the_text_side_once_per_call_not_per_batch(
    name, tiny_clip, items, monkeypatch
):
    """An evaluation of 3 batches runs the text tower as often as one of 1 batch (fresh, equal
    methods: no cache carried over); the text side's own passes are counted, >= 1 where the
    evaluation computes it (Tip-Adapter and the linear probe have it from their fit)."""
    passes = TextPasses(tiny_clip, monkeypatch)
    counts = {}
    for batch_size in (2, N_IMAGES):
        torch.manual_seed(0)
        method = _method(name, tiny_clip)
        passes.count = 0
        compute_logits(method, items, batch_size=batch_size, use_features=False)
        counts[batch_size] = passes.count
    assert counts[2] == counts[N_IMAGES], counts
    if name not in ("linear_probe", "tip_adapter", "tip_adapter_f", "clap", "gda", "lp_plus_plus"):
        assert counts[N_IMAGES] >= 1, counts


def test_batch_by_batch_runs_the_text_side_per_batch(tiny_clip, items, monkeypatch):
    """The counter sees the difference: IVLP outside `classifier()` runs its text tower for
    every batch."""
    passes = TextPasses(tiny_clip, monkeypatch)
    method = _method("ivlp", tiny_clip)
    _batch_by_batch(method, items, 2, use_features=False)
    assert passes.count == N_IMAGES // 2


@pytest.mark.parametrize("name", ["ivlp", "coop", "rpo", "tip_adapter"])
def test_the_held_class_side_follows_parameters_and_class_names(name, tiny_clip, items):
    """Inside `classifier()` a changed learned tensor or class list is never served stale."""
    method = _method(name, tiny_clip)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    learned = method.trainable_parameters() or [method.cache_keys]
    with method.classifier():
        before = method(images)
        learned[0].add_(0.5 * torch.randn_like(learned[0]))
        after = method(images)
        method.set_classnames(CLASSNAMES[:2])
        two = method(images)
    assert not torch.allclose(before, after)
    assert two.shape == (3, 2)
    method.set_classnames(CLASSNAMES)
    with torch.no_grad():
        torch.testing.assert_close(method(images), after, atol=1e-6, rtol=1e-6)


def test_the_held_class_side_is_dropped_on_exit_and_on_train(tiny_clip):
    method = _method("ivlp", tiny_clip)
    images = torch.randn(2, 3, 32, 32)
    with method.classifier():
        method(images)
        assert method._held_class_side.value is not None
        method.train()
        assert method._held_class_side.value is None
        method(images)
    assert method._held_class_side.value is None and not method._holding


def test_training_inside_never_reads_a_held_class_side(tiny_clip):
    """With autograd on (a training step), the class side is computed afresh with gradients."""
    method = _method("ivlp", tiny_clip)
    with method.classifier(), torch.enable_grad():
        text = method.class_side()
    assert text.requires_grad and method._held_class_side.value is None


@pytest.mark.usefixtures("isolated_home")
def test_predict_runs_the_text_side_once_per_call(world, tmp_path, monkeypatch):
    """`Run.predict` over 3 batches runs the prompted text tower as often as over 1 batch, with
    the same top-k."""
    import vlprompt
    from test_engine_helpers import TINY_VIT

    run = vlprompt.train(
        "ivlp", "imagefolder", root=world["data"], backbone=TINY_VIT, pretrained=world["ckpt"],
        output_dir=tmp_path / "run", shots=2, progress=False, evaluate=False, epochs=1,
        **CASES["ivlp"][0],
    )  # fmt: skip
    images = sorted((world["data"] / "test").rglob("*.png"))[:3]
    passes = TextPasses(run.clip, monkeypatch)
    counts, answers = [], []
    for batch_size in (1, 3):
        passes.count = 0
        answers.append(run.predict(images, topk=2, batch_size=batch_size))
        counts.append(passes.count)
    assert counts == [1, 1]
    assert [[name for name, _ in a] for a in answers[0]] == [
        [name for name, _ in a] for a in answers[1]
    ]
    for a, b in zip(answers[0], answers[1], strict=True):
        assert [p for _, p in a] == pytest.approx([p for _, p in b], abs=1e-5)
