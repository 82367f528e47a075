"""`vlprompt.chunking`: the one chunk-and-checkpoint loop of every text side, with one meaning of
`text_chunk_size` (rows per pass, in training and evaluation; 0 = one pass)."""

from __future__ import annotations

import pytest
import torch

from vlprompt.chunking import checkpoints, chunk_bounds, encode_in_chunks
from vlprompt.methods import create_method


def test_chunk_bounds_cover_every_row_once_in_order():
    assert chunk_bounds(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert chunk_bounds(10, 0) == [slice(0, 10)]
    assert chunk_bounds(3, 256) == [slice(0, 3)]


@pytest.mark.parametrize(
    ("mode", "n_chunks", "grad", "expected"),
    [
        ("auto", 1, True, False),
        ("auto", 2, True, True),
        ("always", 1, True, True),
        ("never", 5, True, False),
        ("always", 5, False, False),  # nothing to recompute without autograd
    ],
)
def test_checkpoints_only_while_autograd_records(mode, n_chunks, grad, expected):
    with torch.set_grad_enabled(grad):
        assert checkpoints(n_chunks, mode) is expected


def test_chunks_give_the_unchunked_values_and_gradients():
    x = torch.randn(7, 3, requires_grad=True)

    def encode(rows: slice) -> torch.Tensor:
        return (x[rows] ** 2).sum(dim=-1, keepdim=True).tanh()

    whole = encode(slice(0, 7))
    (g_whole,) = torch.autograd.grad(whole.sum(), x)
    for mode in ("auto", "always", "never"):
        chunked = encode_in_chunks(encode, 7, 3, mode)
        (g,) = torch.autograd.grad(chunked.sum(), x)
        assert torch.equal(chunked, whole) and torch.equal(g, g_whole)


def test_rpo_chunks_its_text_rows_in_evaluation_too(tiny_clip, monkeypatch):
    """RPO's `text_chunk_size` now means what it means for every method: 4 classes in chunks of
    3 are two passes without autograd as well, with the logits of one pass."""
    names = ["dog", "cat", "red_car", "oak tree"]
    whole = create_method("rpo", tiny_clip, names, K=2, text_chunk_size=0).eval()
    chunked = create_method("rpo", tiny_clip, names, K=2, text_chunk_size=3).eval()
    chunked.load_state_dict(whole.state_dict())
    calls = []
    original = type(chunked)._text_rows

    def counted(self, *args):
        calls.append(args[2:])
        return original(self, *args)

    monkeypatch.setattr(type(chunked), "_text_rows", counted)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = whole(images)
        calls.clear()
        torch.testing.assert_close(chunked(images), expected, atol=1e-6, rtol=1e-6)
    assert calls == [(0, 3), (3, 4)]
