"""What a recipe costs: steps, epochs and image passes for a task size; paper-sized recipes named
with a CPU setting in `vlprompt methods`, `train --method NAME --help` and a CPU run's header."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from vlprompt import cli
from vlprompt.methods import get_method_class, list_methods
from vlprompt.training_cost import (
    CPU_SETTINGS,
    LONG_EPOCHS,
    REFERENCE_TASKS,
    long_recipe_note,
    reference_costs,
    training_cost,
)


def _default(name):
    cls = get_method_class(name)
    return cls, cls.config_class()


def test_an_iterations_recipe_does_not_scale_with_the_data():
    cls, config = _default("clip_lora")
    small, large = (training_cost(cls, config, n) for n in (160, 1600))
    assert (small.steps, small.epochs) == (8000, 1600)
    assert (large.steps, large.epochs) == (8000, 160)
    assert small.image_passes == 8000 * 32 and small.image_backward


def test_an_epochs_recipe_counts_full_batches_as_the_engine_loader():
    cls, config = _default("coop")  # 200 epochs of batch 32, frozen image tower
    assert training_cost(cls, config, 100).steps == 200 * 3  # 100 // 32: the last 4 dropped
    assert training_cost(cls, config, 20).steps == 200  # smaller than a batch: one short batch
    assert not training_cost(cls, config, 100).image_backward


@pytest.mark.parametrize("name", [n for n in list_methods() if get_method_class(n).needs_training])
def test_every_paper_sized_recipe_names_a_cpu_setting_that_is_not(name):
    cls, config = _default(name)
    longest = max(cost.epochs for _, _, cost in reference_costs(cls, config))
    assert (name in CPU_SETTINGS) == (longest > LONG_EPOCHS), (name, longest)
    if name in CPU_SETTINGS:
        shorter = replace(config, **CPU_SETTINGS[name][0])
        assert max(c.epochs for _, _, c in reference_costs(cls, shorter)) <= LONG_EPOCHS


def test_the_note_follows_the_run_not_the_class_defaults():
    cls, config = _default("clip_lora")
    note = long_recipe_note("clip_lora", cls, config, 160)
    assert note.startswith("clip_lora: 8,000 steps (1,600 epochs) is its paper recipe")
    assert "--iterations 500 (500 steps;" in note
    assert long_recipe_note("clip_lora", cls, replace(config, iterations=2000), 64) is not None
    assert long_recipe_note("clip_lora", cls, replace(config, iterations=480), 160) is None
    assert long_recipe_note("coop", *_default("coop"), 160) is None


def test_methods_prints_each_trained_methods_cost(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in list_methods():
        cls, config = _default(name)
        for shots, classes, cost in reference_costs(cls, config) if cls.needs_training else []:
            assert f"{shots} shots x {classes} classes: {cost.describe()}" in out, name
    assert "long on a CPU: try --iterations 500" in out
    assert out.count("long on a CPU") == len(CPU_SETTINGS)
    assert len(REFERENCE_TASKS) == 2


def test_train_help_of_a_method_gives_its_cost(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--method", "clip_lora", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "16 shots x 10 classes: 8,000 steps = 1,600 epochs of 160 images" in out
    assert "long on a CPU: try --iterations 500" in out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "what it costs: `vlprompt methods`" in " ".join(capsys.readouterr().out.split())


@pytest.mark.usefixtures("isolated_home")
def test_a_cpu_run_longer_than_its_cpu_setting_says_so_in_its_header(
    world, tmp_path, monkeypatch, caplog
):
    import vlprompt
    from test_engine_helpers import TINY_VIT

    # the note's rule at a size that trains in a second: 3 iterations where the setting gives 1
    monkeypatch.setitem(CPU_SETTINGS, "clip_lora", ({"iterations": 1}, "a test's reason"))
    with caplog.at_level(logging.INFO, logger="vlprompt"):
        vlprompt.train("clip_lora", "imagefolder", root=world["data"], backbone=TINY_VIT,
                       pretrained=world["ckpt"], output_dir=tmp_path / "run", shots=2,
                       progress=False, evaluate=False, iterations=3, batch_size=2)  # fmt: skip
    notes = [r.getMessage() for r in caplog.records if "paper recipe" in r.getMessage()]
    assert notes == ["clip_lora: 3 steps (1 epochs) is its paper recipe, long on a CPU: try "
                     "--iterations 1 (1 steps; a test's reason)"]  # fmt: skip


def test_a_reader_that_stops_early_is_no_error():
    """`vlprompt methods | head -1`: exit 0 and nothing on stderr (was "cannot use: Broken
    pipe"). The reader here has gone before the first write, so every write meets a closed
    pipe."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen([sys.executable, "-m", "vlprompt", "methods"], stdout=write_end,
                            stderr=subprocess.PIPE)  # fmt: skip
    os.close(write_end)
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (0, b"")
