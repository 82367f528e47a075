"""benchmarks/mini_docs.py: every docs table has a sweep that remakes it; a partial rerun replaces
only its own rows; a real (tiny) sweep is run, stored and resumed."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import docs_tables  # noqa: E402
import mini_docs  # noqa: E402

# the kinds read from a stored sweep
RECORD_KINDS = {None, "recipe_check", *docs_tables.RECORD_RENDERERS}


def _markers():
    for doc in docs_tables.DOCS:
        text = (docs_tables.ROOT / doc).read_text(encoding="utf-8")
        for match in docs_tables.MARKER.finditer(text):
            yield doc, match.group("name"), docs_tables._args(match.group("args")).get("kind")


def test_every_stored_table_of_the_mini_docs_has_a_sweep_that_remakes_it():
    for doc, name, kind in _markers():
        if doc in ("README.md", "docs/mini-world.md") and kind in RECORD_KINDS:
            assert name in mini_docs.SWEEPS, f"{doc}: {name} has no sweep in mini_docs.SWEEPS"


def test_every_sweep_is_stored_with_its_command():
    for name in mini_docs.SWEEPS:
        source = json.loads((mini_docs.RESULTS_DIR / name / "source.json").read_text())
        assert source["command"], name
        assert mini_docs.stored_records(name), f"{name}: no stored records"


def test_the_docs_have_only_one_typed_numeric_table_left():
    """Every other table of numbers is generated: the tiny CLIP's pre-training log (checkpoints
    not kept) is the one typed table of docs/mini-world.md, the README has none."""
    for doc in ("README.md", "docs/mini-world.md"):
        text = docs_tables.MARKER.sub("", (docs_tables.ROOT / doc).read_text(encoding="utf-8"))
        lines = text.splitlines()
        numeric = []
        for i, line in enumerate(lines):
            if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
                body = lines[i + 2 : i + 5]
                if any(re.search(r"\| [-+]?\d+\.\d", row) for row in body):
                    numeric.append(line)
        expected = ["| checkpoint | steps | pool | patch | final loss | shapes | patterns | counts "
                    "| sizes | colors | objects |"] if doc.startswith("docs") else []  # fmt: skip
        assert numeric == expected, doc


def _record(key, accuracy, version="0.1.0+gold"):
    return {"key": key, "accuracy": accuracy, "vlprompt_version": version, "run_dir": "/x/y"}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A stored sweep `toy` of methods a and b (a ScriptSweep keyed by `key`)."""
    monkeypatch.setattr(mini_docs, "RESULTS_DIR", tmp_path)
    sweep = mini_docs.ScriptSweep(lambda runs, methods: [], ("a", "b"), ("key",))
    monkeypatch.setitem(mini_docs.SWEEPS, "toy", sweep)
    stored = [_record("a|1", 10.0), _record("b|1", 20.0)]
    mini_docs.store("toy", stored, None)
    return tmp_path / "toy"


def test_a_partial_rerun_replaces_its_rows_keeps_the_others_and_names_both_commands(toy):
    mini_docs.store("toy", [_record("a|1", 11.0, "0.1.0+gnew"), _record("a|2", 12.0, "0.1.0+gnew")],
                    ["a"])  # fmt: skip
    rows = [json.loads(x) for x in (toy / "records.jsonl").read_text().splitlines()]
    assert [(r["key"], r["accuracy"], r["vlprompt_version"]) for r in rows] == [
        ("a|1", 11.0, "0.1.0+gnew"), ("b|1", 20.0, "0.1.0+gold"), ("a|2", 12.0, "0.1.0+gnew")]  # fmt: skip
    assert all("run_dir" not in r for r in rows)  # no machine paths
    command = json.loads((toy / "source.json").read_text())["command"]
    assert command == ("python benchmarks/mini_docs.py run toy; "
                       "then python benchmarks/mini_docs.py run toy --methods a")  # fmt: skip
    mini_docs.store("toy", [_record("a|1", 11.0), _record("b|1", 21.0)], None)  # a full rerun
    assert json.loads((toy / "source.json").read_text())["command"] == (
        "python benchmarks/mini_docs.py run toy"
    )


def test_runs_shared_by_two_sweeps_are_timed_once(toy, monkeypatch):
    b2n = mini_docs.BenchSweep("base2new", ("coop",))
    for name in ("one", "two"):
        monkeypatch.setitem(mini_docs.SWEEPS, name, b2n)
    run = {"protocol": "base2new", "run": "base2new/d/coop/shots16_seed1", "wall_s": 60.0,
           "key": "k", "method": "coop", "source": "d", "seed": 1, "shots": 16}  # fmt: skip
    monkeypatch.setattr(mini_docs, "stored_records", lambda name: [run, {**run, "wall_s": 30.0}])
    assert mini_docs.cpu_minutes(["one"]) == 1.0
    assert mini_docs.cpu_minutes(["one", "two"]) == 1.0


def test_a_bench_sweep_holds_only_its_selection():
    sweep = mini_docs.BenchSweep("base2new", ("coop",), ("mini_shapes",), seeds=(1, 2))
    record = {"method": "coop", "source": "mini_shapes", "seed": 1, "shots": 16}
    assert sweep.holds(record, ["coop"])
    assert not sweep.holds({**record, "seed": 3}, ["coop"])
    assert not sweep.holds({**record, "source": "mini_sizes"}, ["coop"])
    assert not sweep.holds(record, ["rpo"])


def test_unknown_sweeps_and_methods_get_one_clear_line(capsys):
    with pytest.raises(SystemExit):
        mini_docs.main(["run", "no-such-sweep"])
    assert "unknown: no-such-sweep" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="none of --methods rpo is in it"):
        mini_docs.main(["run", "mini-b2n/lora", "--methods", "rpo"])


def test_a_real_sweep_is_run_stored_and_resumed(tmp_path, monkeypatch):
    """Zero-shot CLIP on one mini data set through the real engine: stored with its command and
    code version; the second call trains nothing and stores the same records."""
    monkeypatch.setattr(mini_docs, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(docs_tables, "DOCS", ())
    sweep = mini_docs.BenchSweep("base2new", ("zsclip",), ("mini_shapes",), seeds=(1,))
    monkeypatch.setitem(mini_docs.SWEEPS, "tiny", sweep)
    mini_docs.run(["tiny"], tmp_path / "runs", None)
    stored = tmp_path / "results" / "tiny"
    first = (stored / "results.jsonl").read_text()
    records = [json.loads(x) for x in first.splitlines()]
    assert {r["subsample"] for r in records} == {"base", "new"} and len(records) == 2
    assert all(r["vlprompt_version"].startswith("0.") for r in records)
    assert json.loads((stored / "source.json").read_text()) == {
        "command": "python benchmarks/mini_docs.py run tiny"
    }
    mini_docs.run(["tiny"], tmp_path / "runs", None)
    assert (stored / "results.jsonl").read_text() == first


def test_a_table_without_stored_results_names_the_sweep_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_tables, "RESULTS_DIR", tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text('<!-- results:mini-b2n/lora parts="Base" -->\n<!-- /results -->\n')
    with pytest.raises(ValueError, match="run python benchmarks/mini_docs.py run mini-b2n/lora"):
        docs_tables.sync([doc], check=True)


def test_the_recipes_table_ignores_a_plugin_method(monkeypatch):
    """A method registered by a plugin (or another test) is not vlprompt's: the generated table
    does not change with it."""
    import mini_budgets

    before = mini_budgets.render_recipes()
    methods, get_class = mini_budgets.list_methods, mini_budgets.get_method_class
    plugin = type("Plugin", (), {"__module__": "someones_plugin"})
    monkeypatch.setattr(mini_budgets, "list_methods", lambda: [*methods(), "a_plugin"])
    monkeypatch.setattr(mini_budgets, "get_method_class",
                        lambda name: plugin if name == "a_plugin" else get_class(name))  # fmt: skip
    assert "a_plugin" in mini_budgets.list_methods()
    assert mini_budgets.render_recipes() == before
