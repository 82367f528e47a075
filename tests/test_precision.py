"""The mixed-precision paths, run on the CPU: `--precision bf16` puts every training step and every
evaluation under `torch.autocast("cpu", torch.bfloat16)` (`vlprompt.precision.autocast_for`), the
same code path as fp16/bf16 autocast on CUDA. For every registered vlprompt method (and RPO with the
ProGrad rule), on a tiny random CLIP: one step gives a finite loss and gradients within bf16
tolerance of fp32; the fast paths equal the reference under autocast; evaluation under autocast
gives fp32's predictions; cached features never cross precisions. ProGrad's rule and KD are
checked with a scaler that really scales (a constant factor), as a GradScaler does on CUDA.

Tolerances. bf16 keeps 8 significant bits (rounding error up to 2^-9 = 0.2% per operation),
and the errors of ~10 rounded operations per layer compound over the layers, forward and back:
- gradients: cosine similarity with fp32 > 0.99 and relative norm error |g - g32| / |g32| < 0.1.
  Measured here: cosine >= 0.9997, relative error <= 0.03 (benchmarks/gpu_check.py --quick, on
  other tiny models and the mini CLIP: >= 0.998, <= 0.06). A broken path (a lost mask, a gradient
  that does not flow, a wrong layout) gives a relative error near 1.
- logits: |logit - logit32| <= 0.02 * logit_scale, i.e. an error of 0.02 in the cosine
  similarity the logit scales (5 bf16 steps at 1); measured <= 0.007 * logit_scale.
Every comparison also checks that bf16 really ran (the result is not bit-equal to fp32's).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import TINY_VIT
from vlprompt.backbone import load_clip
from vlprompt.config import EngineSettings, RunError
from vlprompt.data.types import Datum
from vlprompt.engine import fit
from vlprompt.evaluation import compute_logits
from vlprompt.methods import create_method, get_method_class, list_methods
from vlprompt.methods.gradient_rules import prograd_backward, prograd_kl
from vlprompt.precision import autocast_for, effective_precision

CPU = torch.device("cpu")
CLASSES = ["dog", "golden_retriever", "a rather long class name here", "x"]
# vlprompt's own methods (other test modules register tiny test methods in the registry)
OWN = [n for n in list_methods() if get_method_class(n).__module__.startswith("vlprompt.")]
TRAINED = [n for n in OWN if get_method_class(n).needs_training]
SMALL = {"rpo": {"K": 3}, "ivlp": {"depth_text": 2, "depth_vision": 2}, "coop": {"n_ctx": 4}, "prograd": {"n_ctx": 4},
         "linear_probe": {"c_grid": (1.0,), "search_steps": 0}, "clip_adapter": {"reduction": 2}, "tcp": {},
         "maple": {"depth": 2}, "promptsrc": {"depth_text": 2, "depth_vision": 2, "templates": ("a photo of a {}.",)},
         "clip_lora": {"logit_scale": 0.0, "dropout": 0.0}, "tip_adapter": {"search_step": (5, 4)},
         "tip_adapter_f": {"search_step": (5, 4), "epochs": 2}, "gda": {}, "lp_plus_plus": {"epochs": 20},
         "clap": {"epochs": 5}, "two_stage": {},
         "skiptuning": {"start_layer": 1},
         "mmrl": {"n_rep_tokens": 2, "rep_dim": 16}}  # fmt: skip
# trained methods whose evaluation is fp32 whatever the autocast (fp32 cached image features and
# zero-shot text features, and a learned part computed in fp32)
FP32_EVALUATION = {"clip_adapter"}
# every trained method, and RPO with ProGrad's rule (it wraps RPO's two prompt tensors)
STEPS = [(n, {}) for n in TRAINED] + [("rpo", {"gradient_rule": "prograd"})]
STEP_IDS = [n + "".join(f"-{v}" for v in s.values()) for n, s in STEPS]
GRAD_COS, GRAD_REL, LOGIT_TOL = 0.99, 0.1, 0.02
# methods whose logits use a fixed scale instead of CLIP's logit_scale (MMRL's official 100)
FIXED_LOGIT_SCALE = {"mmrl": 100.0}


def _logit_scale(name: str, clip) -> float:
    return FIXED_LOGIT_SCALE.get(name, float(clip.logit_scale))


@pytest.fixture(scope="module")
def clip():
    """A tiny random CLIP whose every weight is perturbed (random init leaves LayerNorms at 1/0)."""
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT)
    with torch.no_grad():
        for p in clip.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return clip


def _method(name, clip, **settings):
    """The method with its learned tensors moved away from their init: at init ProGrad's student
    equals its teacher, so the KL gradient is rounding noise, whose direction bf16 cannot keep."""
    torch.manual_seed(1)
    method = create_method(name, clip, CLASSES, **{**SMALL.get(name, {}), **settings})
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    if not method.needs_training:  # the linear probe: fitted on features
        images, labels = _batch(clip, 8, seed=3)
        feats = clip.encode_image(images, normalize=True)
        method.fit_features(feats, labels, feats, labels)
    return method


def _batch(clip, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, clip.image_size, clip.image_size, generator=g)
    return images, torch.arange(n) % len(CLASSES)


def _step(method, images, labels, precision, scale=lambda t: t):
    """One `backward_step` under the engine's autocast; (loss, logits, flat gradient)."""
    method.zero_grad(set_to_none=True)
    with autocast_for(CPU, precision):
        assert torch.is_autocast_enabled("cpu") == (precision == "bf16")
        out = method.backward_step(images, labels, scale)
    # the parts that learn now (a later stage's, e.g. two_stage's head, have none yet)
    grads = [p.grad.flatten() for p in method.trainable_parameters() if p.grad is not None]
    return out.loss, out.logits, torch.cat(grads)


def _assert_bf16_close(got, want, what):
    """Gradients `got` (bf16 autocast) within the module's bf16 tolerance of `want`."""
    cos = F.cosine_similarity(got, want, dim=0).item()
    rel = ((got - want).norm() / want.norm()).item()
    assert cos > GRAD_COS and rel < GRAD_REL, f"{what}: cosine {cos:.5f}, relative error {rel:.4f}"


# ---- which precision runs where -----------------------------------------------------------------
def test_effective_precision_on_cpu_and_cuda():
    cuda = torch.device("cuda")
    assert [effective_precision(CPU, p) for p in ("auto", "fp32", "bf16")] == [
        "fp32", "fp32", "bf16"
    ]  # fmt: skip
    assert [effective_precision(cuda, p) for p in ("auto", "fp16", "bf16", "fp32")] == [
        "fp16", "fp16", "bf16", "fp32"
    ]  # fmt: skip
    with pytest.raises(RunError, match="'fp16' needs a CUDA device; on cpu use --precision bf16"):
        effective_precision(CPU, "fp16")
    with pytest.raises(RunError, match="on mps use --precision fp32"):
        effective_precision(torch.device("mps"), "bf16")


def test_fit_in_bf16_on_cpu_trains_under_autocast_without_a_grad_scaler(clip, monkeypatch):
    method = create_method("coop", clip, CLASSES, n_ctx=4, epochs=1, batch_size=4,
                           warmup_epochs=0)  # fmt: skip
    images, labels = _batch(clip, 8)
    seen = []
    step = method.backward_step

    def recording_step(inputs, targets, scale):
        seen.append((torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                     scale(torch.tensor(3.0)).item()))  # fmt: skip
        return step(inputs, targets, scale)

    monkeypatch.setattr(method, "backward_step", recording_step)
    data = list(zip(images, labels.tolist()))
    result = fit(method, data, settings=EngineSettings(precision="bf16"), seed=0)
    assert seen == [(torch.bfloat16, 3.0)] * 2  # 2 steps, autocast on, no scaling
    assert torch.isfinite(torch.tensor(result.history[0].loss))
    with pytest.raises(RunError, match="needs a CUDA device"):
        fit(method, data, settings=EngineSettings(precision="fp16"), seed=0)


# ---- one training step per method -------------------------------------------------------------
@pytest.mark.parametrize("name,settings", STEPS, ids=STEP_IDS)
def test_one_bf16_training_step_gives_a_finite_loss(name, settings, clip):
    images, labels = _batch(clip)
    loss, logits, grad = _step(_method(name, clip, **settings), images, labels, "bf16")
    assert torch.isfinite(loss) and torch.isfinite(logits).all() and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name,settings", STEPS, ids=STEP_IDS)
def test_bf16_gradients_are_within_bf16_tolerance_of_fp32(name, settings, clip):
    images, labels = _batch(clip)
    method = _method(name, clip, **settings)
    loss32, logits32, grad32 = _step(method, images, labels, "fp32")
    loss16, logits16, grad16 = _step(method, images, labels, "bf16")
    assert not torch.equal(grad16, grad32)  # bf16 really ran
    _assert_bf16_close(grad16, grad32, f"{name} gradient")
    tol = LOGIT_TOL * _logit_scale(name, clip)
    assert (logits16 - logits32).abs().max() <= tol
    assert logits16.dtype == torch.float32  # logits are computed in fp32 under autocast too
    assert abs(loss16.item() - loss32.item()) <= tol


# ---- fast paths = reference, under autocast ---------------------------------------------------
FAST_VS_REFERENCE = [  # the fp32 comparisons of test_rpo.py, test_methods_coop.py and
    ("rpo", {}),  # test_shared_prefix.py, run under bf16 autocast
    ("coop", {"n_ctx": 4}),  # shared prefix (SOS + context) encoded once
    ("coop", {"n_ctx": 6, "class_token_position": "middle"}),
    ("coop", {"n_ctx": 5, "class_token_position": "front", "csc": True}),
    ("coop", {"n_ctx": 3, "text_chunk_size": 3, "text_checkpoint": "always"}),
    ("cocoop", {"text_chunk_size": 5}),
    ("kgcoop", {}),
    ("prograd", {"n_ctx": 8}),
    ("tcp", {}),
    ("mmrl", {"text_chunk_size": 3}),  # frozen lower blocks once, pooled rows
]


@pytest.mark.parametrize(
    "name,settings",
    FAST_VS_REFERENCE,
    ids=[f"{n}-{i}" for i, (n, _) in enumerate(FAST_VS_REFERENCE)],
)
def test_fast_path_equals_the_reference_under_bf16_autocast(name, settings, clip):
    images, labels = _batch(clip)
    fast = _method(name, clip, implementation="fast", **settings)
    ref = _method(name, clip, implementation="reference", **settings)
    _, logits_f, grad_f = _step(fast, images, labels, "bf16")
    _, logits_r, grad_r = _step(ref, images, labels, "bf16")
    _assert_bf16_close(grad_f, grad_r, f"{name} fast vs reference gradient")
    tol = LOGIT_TOL * _logit_scale(name, clip)
    assert (logits_f - logits_r).abs().max() <= tol
    with torch.no_grad(), autocast_for(CPU, "bf16"):  # evaluation's forward (cached text side)
        assert (fast(images) - ref(images)).abs().max() <= tol


# ---- evaluation -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """16 PNG images of random colour blocks (labels cycle over the classes)."""
    root = tmp_path_factory.mktemp("precision-images")
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(16):
        blocks = torch.randint(0, 256, (4, 4, 3), generator=g, dtype=torch.uint8)
        pixels = blocks.repeat_interleave(8, 0).repeat_interleave(8, 1).numpy()
        Image.fromarray(pixels).save(root / f"{i}.png")
        out.append(Datum(str(root / f"{i}.png"), i % len(CLASSES), CLASSES[i % len(CLASSES)]))
    return out


@pytest.mark.parametrize("name", OWN)
def test_evaluation_under_bf16_autocast_gives_the_fp32_predictions(name, clip, items):
    """The logits stay within the bf16 tolerance and the predictions agree on at least 15 of the
    16 images. Why not all: on this tiny random model the median top-2 margin is 0.02-0.08 *
    logit_scale against a measured bf16 logit error <= 0.004 * logit_scale, so a near-tie may
    flip (none did when measured, over 32 images); a broken path (logits unrelated to fp32's)
    would agree on about 1 image in 4."""
    method = _method(name, clip)
    logits32, _ = compute_logits(method, items, precision="fp32", batch_size=8)
    logits16, _ = compute_logits(method, items, precision="bf16", batch_size=8)
    if method.needs_training and name not in FP32_EVALUATION:  # its text ran under autocast
        assert not torch.equal(logits16, logits32)
    assert (logits16 - logits32).abs().max() <= LOGIT_TOL * _logit_scale(name, clip)
    agree = (logits16.argmax(-1) == logits32.argmax(-1)).float().mean().item()
    assert agree >= 15 / 16, f"bf16 and fp32 predictions agree on {agree:.0%} of the images"


@pytest.mark.parametrize("name", ["rpo", "coop", "zsclip", "kgcoop", "tcp"])
def test_cached_features_never_cross_precisions(name, clip):
    """Text features cached without autograd (RPO's frozen keys/values and evaluation prompts,
    CoOp's evaluation prompts, the zero-shot features) are keyed by the autocast dtype: an fp32
    pass after a bf16 one gives exactly the first fp32 logits."""
    images, _ = _batch(clip)
    method = _method(name, clip)
    with torch.no_grad():
        first = method(images)
        with autocast_for(CPU, "bf16"):
            low = method(images)
        again = method(images)
    assert torch.equal(again, first)
    if method.needs_training:
        assert not torch.equal(low, first)


# ---- loss scaling (what a GradScaler does on CUDA) ---------------------------------------------
# (method, settings, factor, precision): a GradScaler's factor (a power of 2: exact in fp32 and
# bf16 alike) and one that is not (exact only to fp32 rounding; under bf16 it would move bf16's
# roundings, so it is checked in fp32). KD is one code path for every method: coop stands for all
SCALED = [
    (name, settings, factor, precision)
    for name, settings in (("prograd", {}), ("rpo", {"gradient_rule": "prograd"}))
    for factor, precision in ((1024.0, "fp32"), (1024.0, "bf16"), (1000.0, "fp32"))
]
SCALED += [("coop", {"gradient_rule": "kd"}, 1024.0, "fp32"),
           ("coop", {"gradient_rule": "kd"}, 1000.0, "fp32")]  # fmt: skip


def _against_the_teacher(method, images):
    """Labels the zero-shot teacher ranks last, and one SGD step (lr 0.5) of cross-entropy
    towards them: the CE gradient then points away from the teacher and the KL gradient back to
    it (cosine about -0.98 here), so ProGrad's projection really runs."""
    with torch.no_grad():
        out = method.forward_train(images)
        labels = method.zeroshot_logits(images, out.image_features).argmin(dim=-1)
    params = method.trainable_parameters()
    grads = torch.autograd.grad(
        F.cross_entropy(method.forward_train(images).logits, labels), params
    )
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(0.5 * g)
    return labels


@pytest.mark.parametrize(
    "name,settings,factor,precision", SCALED,
    ids=[f"{n}-{s.get('gradient_rule', 'prograd')}-{f:g}-{p}" for n, s, f, p in SCALED],
)  # fmt: skip
def test_gradient_rules_are_scale_consistent(name, settings, factor, precision, clip):
    """Scaling the losses by s (GradScaler.scale) and unscaling the gradients afterwards gives
    the unscaled step's gradient: ProGrad's projection (tested where it projects) and KD."""
    images, _ = _batch(clip)
    method = _method(name, clip, **settings)
    labels = _against_the_teacher(method, images)
    out = method.forward_train(images)
    teacher = method.zeroshot_logits(images, out.image_features)
    params = method.trainable_parameters()
    g_ce = torch.autograd.grad(F.cross_entropy(out.logits, labels), params, retain_graph=True)
    g_kl = torch.autograd.grad(prograd_kl(out.logits, teacher), params)
    if method.config.gradient_rule == "prograd":  # the projection runs on every tensor
        assert all(torch.dot(a.flatten(), b.flatten()) < 0 for a, b in zip(g_ce, g_kl))
    _, _, plain = _step(method, images, labels, precision)
    _, _, scaled = _step(method, images, labels, precision, lambda t: t * factor)
    if factor == 1024.0:  # multiplying by a power of 2 is exact: the same bits
        assert torch.equal(scaled / factor, plain)
    else:  # fp32 rounding of the loss gradient (the projection leaves a small difference of it)
        atol = 1e-5 * max(float(g.abs().max()) for g in g_ce)
        torch.testing.assert_close(scaled / factor, plain, rtol=0, atol=atol)


def test_an_overflowed_kl_gradient_reaches_the_grad_scaler():
    """Under fp16 loss scaling the KL gradient can overflow while the loss gradient does not;
    then the step's gradient must be non-finite, so that GradScaler.step skips it. Here the
    overflowed KL gradient (-inf) and the loss gradient (-3e36) "agree" (their dot is +inf), so
    without the check the loss gradient would pass as if nothing had overflowed."""
    p = torch.nn.Parameter(torch.zeros(1))
    student = torch.stack([10 * p, torch.zeros(1)], dim=-1)  # [1, 2] logits
    teacher = torch.tensor([[30.0, -30.0]])
    loss = -1e-3 * student[:, 0].sum()
    prograd_backward([p], loss, student, teacher, scale=lambda t: t * 3e38)
    assert not torch.isfinite(p.grad).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="refuses only where CUDA is missing")
def test_the_gpu_check_refuses_in_one_line_without_cuda(capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_check

    assert gpu_check.main([]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpu_check: no CUDA device here")
    assert "--device cpu --quick" in out


def test_fp16_on_cpu_is_refused_before_the_run_folder_is_written(tmp_path, world):
    import test_engine_helpers  # noqa: F401  (registers the method test_tiny)
    import vlprompt
    from vlprompt.errors import VlpromptError

    out = tmp_path / "run"
    with pytest.raises(VlpromptError, match="precision 'fp16' needs a CUDA device"):
        vlprompt.train(
            "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT,
            pretrained=world["ckpt"], shots=2, output_dir=out, precision="fp16",
        )  # fmt: skip
    assert not out.exists()
