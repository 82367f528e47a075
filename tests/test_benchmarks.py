"""The benchmark's memory measure counts live torch CPU tensor bytes exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from run import peak_bytes  # noqa: E402


def test_peak_bytes_is_the_live_tensor_peak():
    def step():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # 4 MB more: 8 MB live
        del a  # back to 4 MB
        c = torch.ones(500, 1000)  # 2 MB: 6 MB live, below the peak
        return float(b.sum() + c.sum())

    peak = peak_bytes(step)
    assert 8_000_000 <= peak < 8_000_000 + 4096  # + scalar temporaries


def test_linear_extrapolation_and_the_kept_analysis(tmp_path):
    from run import ANALYSIS, linear_fit, with_analysis

    assert abs(linear_fit([(50, 1000.0), (100, 1950.0)], 1000) - 19050.0) < 1e-6
    old = tmp_path / "B.md"
    old.write_text(f"# B\n\n{ANALYSIS[0]}\nwhy it is so\n{ANALYSIS[1]}\n\nold numbers\n")
    new = with_analysis("# B\n\nnew numbers\n", old)
    assert new == f"# B\n\n{ANALYSIS[0]}\nwhy it is so\n{ANALYSIS[1]}\n\nnew numbers\n"
    assert with_analysis("# B\n\nx\n", tmp_path / "missing.md") == "# B\n\nx\n"


def test_batch_override_per_method():
    import argparse

    import pytest
    from run import BATCH, batch_size, parse_batches

    args = argparse.Namespace(batch=parse_batches("rpo=32"), quick=False)
    assert batch_size("rpo", args) == 32 and batch_size("coop", args) == BATCH["coop"]
    assert batch_size("coop", argparse.Namespace(batch={}, quick=True)) == 4
    for bad in ("rpo", "rpo=0", "nosuch=4"):
        with pytest.raises(SystemExit, match="--batch: expected METHOD=N"):
            parse_batches(bad)


def test_mini_world_replicas_never_reuse_the_real_images_and_cycle_the_given_styles(monkeypatch):
    """`benchmarks/mini_world_variants.py` measures world variants on replicas: the image seed is
    moved (so design choices never see the real splits) and `--styles` cycles item by item."""
    from mini_world_variants import REPLICA_SEED_OFFSET, use_replicas

    from vlprompt.mini import datasets as mini_datasets

    monkeypatch.setattr(mini_datasets, "MINI_DATASETS", dict(mini_datasets.MINI_DATASETS))
    real = mini_datasets.MINI_DATASETS["mini_objects"]
    use_replicas(["mini_objects"], None, ("photo", "cartoon", "noisy"))
    replica = mini_datasets.MINI_DATASETS["mini_objects"]
    assert replica.seed == real.seed + REPLICA_SEED_OFFSET and replica.variants == ()
    assert replica.classnames == real.classnames
    styles = [replica.attributes("train", 0, i)[0].style for i in range(6)]
    assert styles == ["photo", "cartoon", "noisy"] * 2
    assert replica.attributes("train", 0, 0)[0] != real.attributes("train", 0, 0)[0]

    use_replicas(["mini_shapes"], "sketch")  # one fixed style replaces the data set's own
    shapes = mini_datasets.MINI_DATASETS["mini_shapes"]
    assert {shapes.attributes("test", 1, i)[0].style for i in range(4)} == {"sketch"}

    with pytest.raises(ValueError, match="unknown style.*bogus.*known: photo"):
        use_replicas(["mini_colors"], None, ("photo", "bogus"))


def test_two_way_shares_split_additive_and_interacting_text_features():
    """`benchmarks/mini_text_additivity.py`: row + column + interaction shares add up to 1; an
    additive grid (feature = row vector + column vector) has no interaction, a grid with no
    main effects is all interaction."""
    from mini_text_additivity import two_way_shares

    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.randn(4, 1, 8, generator=gen), torch.randn(1, 5, 8, generator=gen)
    r, c, inter = two_way_shares(rows + cols)
    assert abs(r + c + inter - 1) < 1e-6 and inter < 1e-10 and r > 0.1 and c > 0.1

    noise = torch.randn(4, 5, 8, generator=gen)
    noise = noise - noise.mean(0, keepdim=True) - noise.mean(1, keepdim=True)
    noise = noise + noise.mean((0, 1), keepdim=True)  # remove both main effects exactly
    r, c, inter = two_way_shares(noise)
    assert abs(inter - 1) < 1e-5 and r < 1e-10 and c < 1e-10


def test_headroom_head_starts_at_zero_shot_and_fits_what_the_features_separate():
    """`benchmarks/mini_headroom.py`: the fitted class features start exactly at the zero-shot
    ones (so the validation-chosen head can only be zero-shot or better on validation), and on
    features the zero-shot classes get wrong, fitting learns the right classes."""
    import torch.nn.functional as F
    from mini_headroom import accuracy, best_snapshot, fit_class_features

    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(3, 16, generator=gen), dim=-1)
    labels = torch.arange(3).repeat_interleave(20)
    features = F.normalize(centres[labels] + 0.2 * torch.randn(60, 16, generator=gen), dim=-1)
    wrong = centres[[1, 2, 0]]  # zero-shot features that name every class as the next one
    assert accuracy(wrong, features, labels) == 0.0

    snapshots = fit_class_features(wrong, features, labels, scale=50.0, lr=0.05, steps=100)
    assert len(snapshots) == 11 and torch.equal(snapshots[0], wrong)
    assert accuracy(snapshots[-1], features, labels) == 100.0
    good = snapshots[-1]
    assert best_snapshot([wrong, good, good.clone()], features, labels) is good  # earliest best
    assert best_snapshot([wrong, wrong.clone()], features, labels) is wrong  # ties: the initial


def test_headroom_shots_are_distinct_per_class_and_seeded():
    from mini_headroom import SHOTS, shot_indices

    a, b = shot_indices(24, 5, seed=1), shot_indices(24, 5, seed=2)
    assert a == shot_indices(24, 5, seed=1) and a != b
    assert all(len(set(s)) == SHOTS and max(s) < 24 for s in a)


def test_replica_look_replaces_the_data_set_look_but_never_a_class_attribute(monkeypatch):
    """`--look` on the replica scripts: the given attributes replace the data set's own look,
    those that define its classes are skipped, `{}` draws the look from the whole world (the
    data sets before they had looks), and a wrong attribute or value is a clear error."""
    from mini_world_variants import use_replicas

    from vlprompt.mini import datasets as mini_datasets

    monkeypatch.setattr(mini_datasets, "MINI_DATASETS", dict(mini_datasets.MINI_DATASETS))
    real_sizes = mini_datasets.MINI_DATASETS["mini_sizes"]
    assert real_sizes.fixed["color"] == "yellow" and real_sizes.fixed["background"] == "night"
    use_replicas(
        ["mini_sizes", "mini_objects"], None, (), {"color": "white", "size": "small"}, 2000
    )
    sizes = mini_datasets.MINI_DATASETS["mini_sizes"]
    assert sizes.seed == real_sizes.seed + 2000
    assert sizes.fixed == {"style": "photo", "count": 1, "color": "white"}  # size is its class
    objects = mini_datasets.MINI_DATASETS["mini_objects"]  # colour defines its classes
    assert objects.fixed == {"style": "photo", "count": 1, "size": "small"}
    assert {objects.attributes("train", 0, i)[0].color for i in range(4)} == {"red"}

    use_replicas(["mini_shapes"], None, (), {})
    backgrounds = {
        mini_datasets.MINI_DATASETS["mini_shapes"].attributes("train", 0, i)[0].background
        for i in range(40)
    }
    assert len(backgrounds) > 3  # drawn from the whole world again

    with pytest.raises(ValueError, match="look attribute 'colour' unknown"):
        use_replicas(["mini_shapes"], None, (), {"colour": "red"})
    with pytest.raises(ValueError, match="look color 'teal' unknown; known: red"):
        use_replicas(["mini_shapes"], None, (), {"color": "teal"})


def test_seed_paper_experiments_name_valid_settings_and_relabel_their_arms(tmp_path, monkeypatch):
    import json

    import mini_seed_papers as sp

    from vlprompt.methods import make_config
    from vlprompt.quickstart import MINI_SETTINGS

    assert set(sp.EXPERIMENTS) == {"variance", "extreme", "ablations", "kd"}
    for experiment in sp.EXPERIMENTS.values():
        labels = [arm.label for arm in experiment.arms]
        assert len(set(labels)) == len(labels)
        for arm in experiment.arms:  # every arm's settings are real settings of its method
            make_config(arm.method, **{**MINI_SETTINGS.get(arm.method, {}), **arm.settings})

    def fake_mini_bench(protocol, output_dir, *, methods, settings, seeds, **_):
        output_dir.mkdir(parents=True)
        (method,) = methods
        bonus = 10.0 if settings[method] else 0.0
        lines = [
            dict(protocol=protocol, method=method, source="d", dataset="d", subsample=sub,
                 shots=16, seed=seed, accuracy=50.0 + bonus, split="test",
                 key=f"{protocol}/d/{method}/shots16_seed{seed}|d:{sub}:test")
            for seed in seeds for sub in ("base", "new")
        ]  # fmt: skip
        (output_dir / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    monkeypatch.setattr(sp, "mini_bench", fake_mini_bench)
    experiment = sp.Experiment(
        (sp.Arm("rpo", "rpo"), sp.Arm("rpo_mask_none", "rpo", {"mask": "none"})), ("d",), (1, 2, 3)
    )
    combined = sp.run_experiment("ablations", tmp_path, experiment)
    text = (combined / "summary.md").read_text()
    assert "| rpo | 50.00 ± 0.00 | 50.00 ± 0.00 |" in text
    assert "| rpo_mask_none | 60.00 ± 0.00 | 60.00 ± 0.00 |" in text
    assert "Spread over seeds" in text


def test_every_trained_method_has_a_row_in_the_speed_benchmark():
    """benchmarks/run.py times each method's step against a plain reference of it; a new
    registered method that trains must add its row (and its reference) there."""
    from run import BATCH

    from vlprompt.methods import get_method_class, list_methods

    trained = {
        n
        for n in list_methods()
        if get_method_class(n).__module__.startswith("vlprompt.")
        and get_method_class(n).needs_training
    }
    assert set(BATCH) == trained
