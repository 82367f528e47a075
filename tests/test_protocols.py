"""Protocol sweeps (vlprompt.protocols) on a fake engine: planning, resuming, deduplication."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlprompt.errors import VlpromptError
from vlprompt.protocols import Backend, BenchError, plan_bench, read_records, run_bench
from vlprompt.report import harmonic_mean

METHODS = ("alpha", "beta")


def fake_accuracy(method: str, dataset: str, subsample: str, seed: int, shots: int = 16) -> float:
    """Deterministic, different per method / data set / classes / seed / shots."""
    value = 50.0 + 7.0 * METHODS.index(method) + 2.5 * seed + 0.3 * len(dataset) + shots / 4
    return value + {"base": 15.0, "new": 0.0, "all": 5.0}[subsample] + (seed % 2) * 1.25


class FakeEngine:
    """train / evaluate / load_run / is_finished with call counts and injectable interrupts."""

    def __init__(self, interrupt_train_at: int | None = None, interrupt_eval_at: int | None = None):
        self.interrupt_train_at = interrupt_train_at
        self.interrupt_eval_at = interrupt_eval_at
        self.train_calls: list[dict] = []
        self.completed: Counter = Counter()
        self.loaded: list[Path] = []
        self.eval_calls: list[tuple] = []

    def backend(self, variants: dict[str, list[str]] | None = None) -> Backend:
        return Backend(
            train=self.train,
            evaluate=self.evaluate,
            load_run=self.load_run,
            is_finished=lambda d: (Path(d) / "done").is_file(),
            variants_of=(lambda s: (variants or {}).get(s, [])),
        )

    def train(self, method, dataset, *, shots, seed, subsample, output_dir, resume, **kw):
        self.train_calls.append(
            dict(method=method, dataset=dataset, seed=seed, resume=resume, **kw)
        )
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        config = dict(method=method, dataset=dataset, shots=shots, seed=seed, subsample=subsample)
        (out / "config.json").write_text(json.dumps(config))
        if len(self.train_calls) == self.interrupt_train_at:
            raise KeyboardInterrupt  # killed mid-training: config written, not finished
        (out / "done").write_text("")
        self.completed[str(out)] += 1
        return config

    def load_run(self, run_dir, device="cpu"):
        self.loaded.append(Path(run_dir))
        return json.loads((Path(run_dir) / "config.json").read_text())

    def evaluate(self, run, dataset=None, subsample="all", split="test"):
        self.eval_calls.append((run["method"], dataset, subsample, run["seed"]))
        if len(self.eval_calls) == self.interrupt_eval_at:
            raise KeyboardInterrupt
        name = dataset or run["dataset"]
        acc = fake_accuracy(run["method"], name, subsample, run["seed"], run["shots"])
        return {
            "method": run["method"],
            "dataset": name,
            "backbone": "fake-vit",
            "shots": run["shots"],
            "seed": run["seed"],
            "subsample": subsample,
            "split": split,
            "accuracy": acc,
            "n_images": 10,
            "epochs": 1,
            "wall_s": 0.01,
        }


def sweep(engine, tmp_path, protocol="base2new", **kw):
    kw.setdefault("seeds", (1, 2))
    kw.setdefault("plots", False)
    return run_bench(
        protocol,
        list(METHODS),
        kw.pop("datasets", ["pets"]),
        output_dir=tmp_path / "bench",
        backend=engine.backend(kw.pop("variants", None)),
        **kw,
    )


def test_plan_base2new_order_keys_and_evaluations():
    specs = plan_bench("base2new", ["a", "b"], ["d1"], seeds=[1, 2])
    assert [s.key for s in specs] == [
        "base2new/d1/a/shots16_seed1",
        "base2new/d1/b/shots16_seed1",
        "base2new/d1/a/shots16_seed2",
        "base2new/d1/b/shots16_seed2",
    ]
    assert {s.subsample for s in specs} == {"base"}
    assert [(e.dataset, e.subsample) for e in specs[0].evaluations] == [
        ("d1", "base"),
        ("d1", "new"),
    ]


def test_plan_fewshot_default_shots_and_xd_dg_targets():
    fewshot = plan_bench("fewshot", "m", "d", seeds=1)
    assert [s.shots for s in fewshot] == [1, 2, 4, 8, 16]
    assert all(s.subsample == "all" for s in fewshot)
    xd = plan_bench("xd", "m", "src", seeds=1, targets=["t1", "src", "t2"])
    assert [(e.dataset, e.subsample) for e in xd[0].evaluations] == [
        ("src", "all"),
        ("t1", "all"),
        ("t2", "all"),
    ]
    dg = plan_bench("dg", "m", "imagenet", seeds=1, variants_of=lambda s: ["imagenet_v2", "sk"])
    assert [e.dataset for e in dg[0].evaluations] == ["imagenet", "imagenet_v2", "sk"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(protocol="b2n"), "unknown protocol 'b2n'; choices: base2new, fewshot, xd, dg"),
        (dict(protocol="xd"), "protocol 'xd' needs target data sets"),
        (dict(protocol="dg"), "data set 'd' has no registered variants"),
        (dict(seeds=[1, 1]), r"seeds \[1, 1\] repeat a value"),
        (dict(seeds=[1.5]), "seeds must be whole numbers, got 1.5"),
        (dict(shots=[0]), "shots must be >= 1, got 0"),
        (dict(methods=[]), "no methods given"),
        (dict(targets=["t"]), "protocol 'base2new' takes no targets"),
    ],
)
def test_plan_rejects_bad_input(kwargs, match):
    args = dict(protocol="base2new", methods=["m"], datasets=["d"]) | kwargs
    with pytest.raises(BenchError, match=match) as info:
        plan_bench(args.pop("protocol"), args.pop("methods"), args.pop("datasets"), **args)
    assert isinstance(info.value, VlpromptError)


def test_base2new_sweep_killed_after_first_run_resumes_each_run_once(tmp_path):
    """The issue's acceptance test: 2 methods x 2 seeds, killed on the 2nd run, restarted."""
    first = FakeEngine(interrupt_train_at=2)
    with pytest.raises(KeyboardInterrupt):
        sweep(first, tmp_path)
    out = tmp_path / "bench"
    assert len(read_records(out / "results.jsonl")) == 2  # the first run's base + new
    assert (out / "summary.md").is_file() and (out / "summary.csv").is_file()

    second = FakeEngine()
    result = sweep(second, tmp_path)
    assert result.skipped == ["base2new/pets/alpha/shots16_seed1"]
    assert len(result.trained) == 3 and result.ok
    # every run completed training exactly once over both sweeps
    done = first.completed + second.completed
    assert sorted(done.values()) == [1, 1, 1, 1] and len(done) == 4
    # the run killed mid-training was resumed, the others started fresh
    resumed = [c for c in second.train_calls if c["resume"]]
    assert [(c["method"], c["seed"]) for c in resumed] == [("beta", 1)]

    records = read_records(out / "results.jsonl")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 8  # 4 runs x (base, new), no duplicates
    for r in records:
        assert r["accuracy"] == fake_accuracy(r["method"], "pets", r["subsample"], r["seed"])

    # a third call finds everything done: no training, no evaluation
    third = FakeEngine()
    result = sweep(third, tmp_path)
    assert third.train_calls == [] and third.eval_calls == [] and len(result.skipped) == 4
    assert len(read_records(out / "results.jsonl")) == 8

    # the summary's numbers equal those recomputed from results.jsonl
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for method in METHODS:
        base = [
            r["accuracy"] for r in records if r["method"] == method and r["subsample"] == "base"
        ]
        new = [r["accuracy"] for r in records if r["method"] == method and r["subsample"] == "new"]
        seeds_h = [harmonic_mean(b, n) for b, n in zip(base, new)]
        expected = {
            "base": (np.mean(base), np.std(base, ddof=1)),
            "new": (np.mean(new), np.std(new, ddof=1)),
            "H": (harmonic_mean(np.mean(base), np.mean(new)), np.std(seeds_h, ddof=1)),
        }
        for metric, (mean, std) in expected.items():
            (row,) = [
                r
                for r in rows
                if r["method"] == method and r["dataset"] == "pets" and r["metric"] == metric
            ]
            assert float(row["mean"]) == pytest.approx(mean, abs=1e-12)
            assert float(row["std"]) == pytest.approx(std, abs=1e-12)
            assert row["seeds"] == "1;2" and row["n_seeds"] == "2"
    table = (out / "summary.md").read_text()
    assert f"{np.mean(base):.2f} ± {np.std(base, ddof=1):.2f}" in table


def test_killed_between_training_and_evaluation_loads_instead_of_retraining(tmp_path):
    # evaluation calls: run 1 base, run 1 new, run 2 base <- killed here
    first = FakeEngine(interrupt_eval_at=3)
    with pytest.raises(KeyboardInterrupt):
        sweep(first, tmp_path, seeds=[1])
    assert len(first.completed) == 2
    second = FakeEngine()
    sweep(second, tmp_path, seeds=[1])
    assert second.train_calls == []  # beta seed 1 finished training before the kill
    assert [p.name for p in second.loaded] == ["shots16_seed1"]
    assert second.eval_calls == [("beta", None, "base", 1), ("beta", None, "new", 1)]
    assert len(read_records(tmp_path / "bench" / "results.jsonl")) == 4


def test_truncated_last_line_is_dropped_before_appending(tmp_path):
    engine = FakeEngine()
    sweep(engine, tmp_path, seeds=[1])
    path = tmp_path / "bench" / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # a write cut by a kill
    again = FakeEngine()
    sweep(again, tmp_path, seeds=[1])
    assert again.eval_calls == [("beta", None, "new", 1)] and again.train_calls == []
    records = read_records(path)
    assert len(records) == 4 and len({r["key"] for r in records}) == 4


def test_broken_line_in_the_middle_is_a_clear_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(BenchError, match=r"results.jsonl, line 2: not a JSON object"):
        read_records(path)


def test_overrides_and_engine_settings_reach_train(tmp_path):
    engine = FakeEngine()
    sweep(
        engine,
        tmp_path,
        seeds=[1],
        backbone="ViT-X",
        root="/data",
        config_overrides={"epochs": 2},
        method_overrides={"beta": {"lr": 0.1, "epochs": 3}},
        device="cuda",
    )
    alpha, beta = engine.train_calls
    assert alpha["epochs"] == 2 and "lr" not in alpha
    assert beta["epochs"] == 3 and beta["lr"] == 0.1
    for call in (alpha, beta):
        assert call["backbone"] == "ViT-X" and call["root"] == "/data"
        assert call["device"] == "cuda" and "pretrained" not in call  # None: engine default


def test_dg_and_xd_record_each_target_with_the_source(tmp_path):
    engine = FakeEngine()
    sweep(engine, tmp_path, "dg", seeds=[1], datasets=["inet"], variants={"inet": ["v2", "sk"]})
    sweep(engine, tmp_path, "xd", seeds=[1], datasets=["inet"], targets=["pets", "cars"])
    records = read_records(tmp_path / "bench" / "results.jsonl")
    got = sorted((r["protocol"], r["method"], r["source"], r["dataset"]) for r in records)
    assert got == sorted(
        (p, m, "inet", d)
        for m in METHODS
        for p, ds in (("dg", ["inet", "v2", "sk"]), ("xd", ["inet", "pets", "cars"]))
        for d in ds
    )
    # xd and dg share the source-trained run (transfer/...): trained once per method
    assert sorted(engine.completed.values()) == [1, 1] and len(engine.loaded) == 2
    assert {r["run"] for r in records} == {f"transfer/inet/{m}/shots16_seed1" for m in METHODS}
    # targets are evaluated with the target's name; the source with the run's own data set
    assert ("alpha", "v2", "all", 1) in engine.eval_calls
    assert ("alpha", None, "all", 1) in engine.eval_calls


def test_keep_going_records_a_failure_and_finishes_the_others(tmp_path):
    engine = FakeEngine()
    real_train = engine.train

    def train(method, dataset, **kw):
        if method == "alpha":
            raise RuntimeError("loss is NaN")
        return real_train(method, dataset, **kw)

    backend = engine.backend()
    backend.train = train
    result = run_bench(
        "fewshot", list(METHODS), ["d"], seeds=[1], shots=[2], output_dir=tmp_path,
        backend=backend, keep_going=True, plots=False,
    )  # fmt: skip
    assert result.failed == {"fewshot/d/alpha/shots2_seed1": "RuntimeError: loss is NaN"}
    assert result.trained == ["fewshot/d/beta/shots2_seed1"] and not result.ok
    with pytest.raises(RuntimeError, match="loss is NaN"):
        run_bench("fewshot", ["alpha"], ["d"], seeds=[1], shots=[2], output_dir=tmp_path,
                  backend=backend, plots=False)  # fmt: skip


def test_each_run_line_shows_zero_shot_beside_its_own_evaluation(tmp_path, caplog):
    """A record with zero-shot CLIP's accuracy (the run's own evaluation) shows it beside the
    run's; below it, the line says BELOW; a record without one shows the accuracy alone."""
    engine = FakeEngine()

    def evaluate(run, dataset=None, subsample="all", split="test"):
        record = engine.evaluate(run, dataset, subsample, split)
        if subsample == "base":  # the own evaluation: the engine adds zero-shot CLIP's
            record.update(zero_shot_accuracy=99.5 if run["method"] == "alpha" else 1.0,
                          n_classes=5)  # fmt: skip
        return record

    backend = engine.backend()
    backend.evaluate = evaluate
    caplog.set_level("INFO", logger="vlprompt")
    run_bench("base2new", ["alpha", "beta"], ["dtd"], seeds=1, output_dir=tmp_path / "b",
              backend=backend, report=False)  # fmt: skip
    lines = {r.getMessage().split("] ")[1].split(":")[0]: r.getMessage() for r in caplog.records
             if "] base2new" in r.getMessage()}  # fmt: skip
    alpha, beta = (next(v for k, v in lines.items() if f"/{m}/" in k or m in k) for m in METHODS)
    assert "(zero-shot 99.50: BELOW zero-shot; " in alpha
    assert "(zero-shot 1.00)" in beta and "BELOW" not in beta
    assert "new " in alpha and alpha.count("zero-shot 99.50") == 1  # new classes: no zero-shot
    records = read_records(tmp_path / "b" / "results.jsonl")
    assert {r["zero_shot_accuracy"] for r in records if r["subsample"] == "base"} == {99.5, 1.0}


def test_the_zero_shot_note_names_chance_and_the_likely_causes():
    from vlprompt.api import resolve_config
    from vlprompt.zero_shot_check import zero_shot_note

    record = {"accuracy": 60.0, "zero_shot_accuracy": 70.0, "n_classes": 5}
    assert zero_shot_note({"accuracy": 60.0}) is None  # no zero-shot: nothing to say
    assert zero_shot_note({**record, "accuracy": 70.0}) == "zero-shot 70.00%"  # not below
    assert zero_shot_note(record).startswith("zero-shot 70.00%: BELOW zero-shot; compare the")
    below_chance = zero_shot_note({**record, "accuracy": 10.0}, percent="")
    assert below_chance.startswith("zero-shot 70.00: BELOW chance (1/5 = 20.00)")
    # the causes that fit the config: the papers' crop on the mini world, a far learning rate,
    # few optimizer steps; none for the mini settings on a long enough run
    paper = resolve_config("coop", "mini_shapes", preset="paper", overrides={"lr": 0.5})
    note = zero_shot_note(record, paper, {"epochs": 2, "n_train_images": 80})
    assert "the papers' random crop (crop_min_scale 0.08)" in note
    assert "the learning rate 0.5 (the method's default: 0.002)" in note
    assert "only 4 optimizer steps" in note  # 2 epochs x 2 full batches of 32 (drop_last)
    mini = resolve_config("coop", "mini_shapes")
    note = zero_shot_note(record, mini, {"epochs": 40, "n_train_images": 80})
    assert "likely cause" not in note and "compare the settings" in note
    # a rate the run's preset names is its recipe's, not a cause (the mini ProGrad's 0.02, ten
    # times the paper's); ten times away from the preset's is
    prograd = resolve_config("prograd", "mini_shapes")
    assert prograd.method_config["lr"] == 0.02
    status = {"epochs": 40, "n_train_images": 80}
    assert "likely cause" not in zero_shot_note(record, prograd, status)
    far = resolve_config("prograd", "mini_shapes", overrides={"lr": 0.002 / 10})
    assert "the learning rate 0.0002 (the mini preset's: 0.02)" in zero_shot_note(
        record, far, status
    )


# ---- method labels: a method with its rules (vlprompt.methods.labels) ----------------------------
def test_a_sweep_runs_a_method_with_and_without_a_rule_side_by_side(tmp_path):
    engine = FakeEngine()
    result = run_bench(
        "base2new", ["alpha", "alpha+dept"], ["pets"], seeds=[1], plots=False,
        output_dir=tmp_path / "bench", backend=engine.backend(),
        method_overrides={"alpha": {"lr": 0.1}, "alpha+dept": {"epochs": 3}},
    )  # fmt: skip
    assert result.ok
    plain, dept = engine.train_calls
    assert plain["method"] == dept["method"] == "alpha"  # the registered method is trained
    assert "feature_rule" not in plain and dept["feature_rule"] == "dept"
    assert plain["lr"] == dept["lr"] == 0.1  # the method's overrides reach its labels too
    assert "epochs" not in plain and dept["epochs"] == 3  # a label's own only its runs
    records = read_records(tmp_path / "bench" / "results.jsonl")
    assert [r["method"] for r in records] == ["alpha"] * 2 + ["alpha+dept"] * 2
    assert [r.get("base_method") for r in records] == [None] * 2 + ["alpha"] * 2
    assert {r["run"] for r in records} == {
        "base2new/pets/alpha/shots16_seed1", "base2new/pets/alpha+dept/shots16_seed1"
    }  # fmt: skip
    summary = (tmp_path / "bench" / "summary.md").read_text()
    assert "| alpha+dept |" in summary and "| alpha |" in summary


def test_a_rule_set_by_settings_names_the_runs(tmp_path):
    """`--set feature_rule=dept` on plain names: the runs and records say alpha+dept."""
    engine = FakeEngine()
    run_bench("base2new", ["alpha"], ["pets"], seeds=[1], plots=False, report=False,
              output_dir=tmp_path / "bench", backend=engine.backend(),
              config_overrides={"feature_rule": "dept"})  # fmt: skip
    records = read_records(tmp_path / "bench" / "results.jsonl")
    assert {r["method"] for r in records} == {"alpha+dept"}
    assert (tmp_path / "bench" / "base2new" / "pets" / "alpha+dept" / "shots16_seed1").is_dir()


def test_two_names_of_the_same_runs_are_refused_before_any_work(tmp_path):
    engine = FakeEngine()
    with pytest.raises(BenchError, match="'alpha' and 'alpha\\+dept' of the sweep train the same"):
        run_bench("base2new", ["alpha", "alpha+dept"], ["pets"], seeds=[1], plots=False,
                  output_dir=tmp_path / "bench", backend=engine.backend(),
                  config_overrides={"feature_rule": "dept"})  # fmt: skip
    assert engine.train_calls == []


def test_a_bad_label_is_one_clear_error(tmp_path):
    engine = FakeEngine()
    with pytest.raises(BenchError, match="'dpt' is not a rule"):
        run_bench("base2new", ["alpha+dpt"], ["pets"], seeds=[1], plots=False,
                  output_dir=tmp_path / "bench", backend=engine.backend())  # fmt: skip
    assert engine.train_calls == [] and not (tmp_path / "bench").exists()
