"""The docs' generated result tables equal what the stored results give, and the generator
finds a table that was edited by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from test_report import write
from test_report_statistics import b2n_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import docs_tables  # noqa: E402


def test_every_generated_part_of_the_docs_equals_its_stored_results():
    stale = docs_tables.sync([docs_tables.ROOT / doc for doc in docs_tables.DOCS], check=True)
    assert stale == [], "run: python benchmarks/docs_tables.py"


def test_sections_are_cut_at_their_level_and_moved_to_the_asked_one():
    markdown = "# S\n\n## A\n\na\n\n### A1\n\nx\n\n## B\n\nb\n\n### Pairwise tests\n\np\n"
    assert docs_tables.sections(markdown, ["A"], 4) == ["#### A", "", "a", "", "##### A1", "",
                                                        "x", ""]  # fmt: skip
    assert docs_tables.sections(markdown, ["Pairwise", "B"], 3) == [
        "### Pairwise tests", "", "p", "", "### B", "", "b", "", "#### Pairwise tests", "", "p", "",
    ]  # fmt: skip
    assert docs_tables.sections(markdown, ["B::Pairwise"], 4) == [
        "#### Pairwise tests",
        "",
        "p",
        "",
    ]
    with pytest.raises(ValueError, match="no section starting with 'Pairwise::A'"):
        docs_tables.sections(markdown, ["Pairwise::A"], 4)  # no A after the first Pairwise
    with pytest.raises(ValueError, match="no section starting with 'C'"):
        docs_tables.sections(markdown, ["C"], 4)


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """A stored sweep `toy` (3 methods, 6 data sets, 3 seeds; rpo 2 points above coop)."""
    monkeypatch.setattr(docs_tables, "RESULTS_DIR", tmp_path / "results")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    records = [{**r, "run_dir": "/home/someone/runs/x", "vlprompt_version": "0.1.0+gabc",
                "pretrained": "/home/someone/w/mine.safetensors"} for r in b2n_sweep()]  # fmt: skip
    write(sweep / "results.jsonl", records)
    folder = docs_tables.store(sweep / "results.jsonl", "toy", "python make_toy.py")
    return folder


def test_store_keeps_the_records_without_machine_paths(stored):
    lines = (stored / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(b2n_sweep())
    assert all("run_dir" not in json.loads(line) for line in lines)
    assert {json.loads(line)["pretrained"] for line in lines} == {"mine.safetensors"}
    assert json.loads((stored / "source.json").read_text()) == {"command": "python make_toy.py"}


def test_a_part_is_rendered_from_its_results_and_a_hand_edit_is_found(stored, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text('before\n\n<!-- results:toy parts="Pairwise tests|Seed variance" -->\n'
                   "old\n<!-- /results -->\n\nafter\n")  # fmt: skip
    assert docs_tables.sync([doc], check=True) == [doc]
    assert "old" in doc.read_text()  # --check changes nothing
    assert docs_tables.sync([doc], check=False) == [doc]
    text = doc.read_text()
    assert text.startswith("before\n\n<!-- results:toy") and text.endswith("after\n")
    assert "#### Pairwise tests" in text and "#### Seed variance (Brown–Forsythe)" in text
    assert "(108 evaluations, vlprompt 0.1.0+gabc; made with `python make_toy.py`)" in text
    assert "rpo" in text and "Friedman" not in text  # only the asked parts
    assert docs_tables.sync([doc], check=True) == []  # in step now
    doc.write_text(text.replace("rpo", "RPO", 1))
    assert docs_tables.sync([doc], check=True) == [doc]


def test_check_exits_1_naming_the_stale_file(stored, tmp_path, monkeypatch, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text('<!-- results:toy parts="Pairwise tests" -->\n<!-- /results -->\n')
    monkeypatch.setattr(docs_tables, "ROOT", tmp_path)
    monkeypatch.setattr(docs_tables, "DOCS", ("doc.md",))
    assert docs_tables.main(["--check"]) == 1
    assert capsys.readouterr().out == "doc.md is stale: run python benchmarks/docs_tables.py\n"
    assert docs_tables.main([]) == 0 and docs_tables.main(["--check"]) == 0


def test_tables_keeps_the_first_tables_only():
    lines = ["## A", "", "text", "", "| a |", "|---|", "| 1 |", "", "more", "| b |", "| 2 |"]
    assert docs_tables.tables(lines, 1) == ["| a |", "|---|", "| 1 |", ""]
    assert docs_tables.tables(lines, 2) == ["| a |", "|---|", "| 1 |", "", "| b |", "| 2 |", ""]


def test_a_malformed_marker_is_an_error_not_a_silent_skip(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text('<!-- results:toy parts="A>B" -->\n<!-- /results -->\n')
    with pytest.raises(ValueError, match="malformed"):
        docs_tables.sync([doc], check=True)


def _cell(method, metric, mean, std=0.5, protocol="base2new", shots=16):
    from vlprompt.report import Cell

    subsample = {"new": "new", "base": "base"}.get(metric, "all")
    return Cell("vlprompt-mini-vit", protocol, method, "average", "average", subsample, shots,
                metric, mean, std, (1, 2, 3), 7)  # fmt: skip


def _cells(*cells):
    return {(c.protocol, c.method, c.shots, c.metric): c for c in cells}


def test_fidelity_orderings_hold_fail_and_flag_gaps_inside_the_seed_noise():
    import fidelity

    coop_loses = fidelity.ORDERINGS[0]
    assert coop_loses.chain == ("zsclip", "coop") and coop_loses.metric == "new"
    real, mini, verdict = fidelity.check(
        coop_loses, _cells(_cell("zsclip", "new", 80.0, 0.0), _cell("coop", "new", 70.0))
    )
    # real CLIP's published averages (CoCoOp's Table 1 via the PromptSRC README rows)
    assert real == "zero-shot CLIP 74.22 > CoOp 63.22"
    assert verdict == "yes" and mini.startswith("zero-shot CLIP 80.00 ± 0.00 > CoOp 70.00")
    _, mini, verdict = fidelity.check(
        coop_loses, _cells(_cell("zsclip", "new", 80.0, 0.0), _cell("coop", "new", 80.3, 0.5))
    )
    assert verdict == "no (a gap inside the seed std)" and " vs " in mini
    _, _, verdict = fidelity.check(
        coop_loses, _cells(_cell("zsclip", "new", 80.0, 0.0), _cell("coop", "new", 79.8, 0.5))
    )
    assert verdict == "yes (a gap inside the seed std)"
    # a method without stored results: said, not guessed
    assert fidelity.check(coop_loses, _cells(_cell("zsclip", "new", 80.0))) == (
        "",
        "no stored mini-world result for CoOp yet",
        "not checked",
    )


def test_fidelity_top_rank_counts_every_measured_method():
    import fidelity

    lora = next(o for o in fidelity.ORDERINGS if o.top)
    cells = _cells(*(_cell(m, "base", v) for m, v in
                     [("clip_lora", 88.0), ("rpo", 89.0), ("coop", 85.0), ("zsclip", 80.0)]))  # fmt: skip
    _, mini, verdict = fidelity.check(lora, cells)
    assert (mini, verdict) == ("rank 2 of 4 (RPO 89.00, CLIP-LoRA 88.00)", "yes")
    cells[("base2new", "tcp", 16, "base")] = _cell("tcp", "base", 88.5)
    _, mini, verdict = fidelity.check(lora, cells)
    assert verdict == "no" and mini.startswith("rank 3 of 5")


def test_the_recipe_check_keeps_the_mini_recipe_unless_a_variant_wins_clearly():
    import mini_recipe_check as check

    base = [80.0, 70.0, 90.0]
    assert check.winner({"mini": base, "lr x10": [83.0, 73.0, 93.0]}) == "lr x10"
    # inside the margin, or higher on the mean through one data set only: the recipe stays
    assert check.winner({"mini": base, "lr x10": [81.0, 71.0, 91.0]}) == "mini"
    assert check.winner({"mini": base, "steps x3": [95.0, 69.0, 89.0]}) == "mini"
    # two winners: the higher mean
    assert check.winner({"mini": base, "lr x0.1": [83.0, 73.0, 93.0],
                         "lr x10": [84.0, 74.0, 94.0]}) == "lr x10"  # fmt: skip


def test_the_recipe_check_table_waits_for_every_variant(tmp_path):
    import mini_recipe_check as check

    def record(method, variant, dataset, accuracy):
        return {"method": method, "variant": variant, "dataset": dataset, "seed": 1,
                "accuracy": accuracy, "lr": 0.002, "epochs_setting": 40, "iterations": 0,
                "vlprompt_version": "0.1.0"}  # fmt: skip

    rows = [record("zsclip", "mini", d, 70.0) for d in ("a", "b")]
    rows += [record("coop", v, d, 80.0 + 5 * (v == "lr x10")) for v in check.VARIANTS
             for d in ("a", "b")]  # fmt: skip
    rows += [record("rpo", "mini", "a", 90.0)]  # unfinished
    folder = tmp_path / "check"
    folder.mkdir()
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "source.json").write_text(json.dumps({"command": "made here"}))
    table = check.render(tmp_path, "check")
    assert ("| coop | lr 0.002, 40 epochs | **80.0** (80.0 / 80.0) | **80.0** (80.0 / 80.0) | "
            "**85.0** (85.0 / 85.0) | **80.0** (80.0 / 80.0) | lr x10 |") in table  # fmt: skip
    assert "| zsclip | - | **70.0** (70.0 / 70.0) |" in table
    assert "rpo" not in table and "(a, b; seed 1; 16 shots)" in table
