"""`predict` decodes one batch at a time at a bounded size (memory does not grow with the number
of images), gives the old path's predictions on small images, and never opens a named pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlprompt
from test_engine_helpers import TINY_VIT
from vlprompt.cli import main
from vlprompt.data import open_image, open_image_bounded, transform_for
from vlprompt.errors import DataError

TESTS = Path(__file__).parent
pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(out.parent / "home")
    try:
        return vlprompt.train(
            "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT,
            pretrained=world["ckpt"], output_dir=out, shots=4, epochs=1, deterministic=True,
            progress=False, evaluate=False,
        )  # fmt: skip
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old


def _old_predict(run, paths, topk):
    """The path before streaming: every image decoded in full, then one forward pass."""
    transform = transform_for(run.clip, train=False)
    batch = torch.stack([transform(open_image(str(p))) for p in paths])
    with torch.no_grad():
        probs = run.method(batch).float().softmax(dim=-1)
    values, indices = probs.topk(topk, dim=-1)
    return [
        [(run.classnames[i], v) for v, i in zip(vals, idxs)]
        for vals, idxs in zip(values.tolist(), indices.tolist())
    ]


def test_predictions_on_small_images_equal_the_old_path(run, world):
    paths = sorted((world["data"] / "test").rglob("*.png"))
    new = run.predict(paths, topk=2, batch_size=5)  # batches of 5, 5, 2
    old = _old_predict(run, paths, topk=2)
    assert [[c for c, _ in p] for p in new] == [[c for c, _ in p] for p in old]
    np.testing.assert_allclose(
        [[v for _, v in p] for p in new], [[v for _, v in p] for p in old], rtol=0, atol=1e-6
    )


def test_a_small_image_is_decoded_exactly_and_a_large_one_at_a_bounded_size(world, tmp_path):
    small = sorted((world["data"] / "test").rglob("*.png"))[0]
    assert np.array_equal(np.asarray(open_image_bounded(small, 128)), np.asarray(open_image(small)))
    big = tmp_path / "big.jpg"
    Image.linear_gradient("L").resize((3000, 2000)).convert("RGB").save(big, quality=90)
    assert open_image_bounded(big, 128).size == (192, 128)  # short side 128, aspect kept


# the peak resident memory of this process: VmHWM on Linux (ru_maxrss there keeps the forking
# parent's peak across exec, which would hide the child's own)
BIG_IMAGES_PREDICT = """
import re, resource, sys
sys.path.insert(0, sys.argv[1])
import conftest, test_engine_helpers  # the tiny CLIP's config and the test method
from vlprompt.cli import main
code = main(["predict", sys.argv[2], "--json", *sys.argv[3:]])
try:
    with open("/proc/self/status") as f:
        peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_KB", peak, "EXIT", code)
"""


def _peak_kb(run_dir: Path, images: list[Path]) -> int:
    out = subprocess.run(
        [sys.executable, "-c", BIG_IMAGES_PREDICT, str(TESTS), str(run_dir), *map(str, images)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    *_, peak, _, code = out.stdout.split()
    assert code == "0"
    predictions = json.loads(out.stdout[: out.stdout.rindex("PEAK_KB")])
    assert len(predictions) == len(images) and all("predictions" in p for p in predictions)
    return int(peak)


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_large_images(run, tmp_path):
    """40 images of 9 megapixels (27 MB each decoded): the old path held them all (~1 GB)."""
    gradient = Image.linear_gradient("L").resize((3000, 3000))
    photo = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient))
    png, jpeg = tmp_path / "big.png", tmp_path / "big.jpg"
    photo.save(png, compress_level=1)
    photo.save(jpeg, quality=85)
    few = [png, jpeg, jpeg, jpeg]
    many = few * 10
    peak_few, peak_many = _peak_kb(run.run_dir, few), _peak_kb(run.run_dir, many)
    growth_mb = (peak_many - peak_few) / 1024
    # measured: +32 MB streaming (allocator slack), +1237 MB on the path that decoded all first
    assert growth_mb < 200, f"peak memory grew by {growth_mb:.0f} MB from 4 to 40 images"


class _Hung(Exception):
    pass


def _alarm(signum, frame):
    raise _Hung("predict blocked on a named pipe")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_called_png_is_skipped_without_being_opened(run, world, tmp_path, capsys):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    good = sorted((world["data"] / "test").rglob("*.png"))[0]
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        assert main(["predict", str(run.run_dir), str(fifo), str(good), "--json"]) == 0
        captured = capsys.readouterr()
        assert f"skipping {fifo}: not a regular image file" in captured.err
        assert "no such file" not in captured.err
        assert [p["image"] for p in json.loads(captured.out)] == [str(good)]
        # a folder holding the pipe: skipped the same way
        assert main(["predict", str(run.run_dir), str(tmp_path), str(good)]) == 0
        assert f"skipping {fifo}: not a regular image file" in capsys.readouterr().err
        # the library names it too, without opening it
        with pytest.raises(DataError, match=r"x\.png is not a regular image file \(a named pipe\)"):
            run.predict([fifo])
        assert main(["predict", str(run.run_dir), str(fifo)]) == 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
