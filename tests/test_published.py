"""The published numbers: the shipped table, its rendering into docs/reproduce.md, and a sweep's
numbers beside it."""

import re
from pathlib import Path

import pytest

from vlprompt import published
from vlprompt.errors import ReportError
from vlprompt.published import AVERAGE, ELEVEN, Number, parse, sync_markdown, with_averages
from vlprompt.report import Cell

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
HEADER = ",".join(published.COLUMNS)


def test_the_docs_tables_are_the_rendering_of_the_table():
    text = DOCS.read_text(encoding="utf-8")
    assert text.count("<!-- published:") == text.count("<!-- /published -->") >= 8
    assert sync_markdown(text) == text, "run `make docs` (vlprompt.published.sync_file)"


def test_a_typed_number_between_markers_is_rewritten():
    text = DOCS.read_text(encoding="utf-8")
    tampered = text.replace(
        "| OxfordPets | oxford_pets | 96.05 |", "| OxfordPets | oxford_pets | 96.50 |"
    )
    assert tampered != text
    assert sync_markdown(tampered) == text


def test_every_row_names_its_source_by_kind():
    rows = published.published()
    assert len(rows) > 200
    for n in rows:
        if n.kind == "repository file":
            assert re.search(r"\b[0-9a-f]{12,40}\b", n.source), n  # a file at a commit
        elif n.kind == "paper table":
            assert "paper" in n.source, n
        else:
            assert n.source.startswith("mean of the 11 rows"), n
        assert 0 < n.value < 100 and re.fullmatch(r"\d+\.\d\d", n.text), n


def test_methods_of_the_table_are_vlprompt_methods():
    """Each row's method is a registered method, or a label (``coop+dept``) of one with rules it
    supports, written as results write it."""
    from vlprompt.methods import get_method_class, list_methods
    from vlprompt.methods.labels import canonical_label, parse_label

    names = {n.method for n in published.published()}
    assert {parse_label(n)[0] for n in names} <= set(list_methods())
    for name in names:
        assert canonical_label(name) == name
        rule = parse_label(name)[1].get("feature_rule")
        assert rule is None or rule in get_method_class(parse_label(name)[0]).feature_rules, name
    assert {"coop+dept", "cocoop+dept", "kgcoop+dept", "maple+dept", "promptsrc+dept"} <= names


def test_averages_are_computed_from_the_eleven_rows_and_match_the_stored_ones():
    table = published.index()
    # Tip-Adapter's exp.log has no average: computed here (the docs' 62.33 at 1 shot)
    tip = table[("tip_adapter", "fewshot", "RN50", 1, AVERAGE, "accuracy")]
    assert (tip.kind, tip.text) == ("computed", "62.33")
    # GDA: 16 shots computed from the 11 rows, equal to what the docs carried before
    assert table[("gda", "fewshot", "RN50", 16, AVERAGE, "accuracy")].text == "76.05"
    # a stored average is kept, not recomputed
    rows = [Number("m", "fewshot", "RN50", 1, d, "accuracy", "50.00", "repository file", "f abc")
            for d in ELEVEN]  # fmt: skip
    stored = Number("m", "fewshot", "RN50", 1, AVERAGE, "accuracy", "49.00", "computed", "x")
    assert with_averages([*rows, stored])[-1] is stored
    assert with_averages(rows)[-1].text == "50.00"
    assert len(with_averages(rows[:-1])) == 10  # ten data sets: no average


@pytest.mark.parametrize(
    "line, message",
    [
        ("rpo,base2new,ViT-B-16,16,dtd,H,high,paper table,RPO paper", "expected a number"),
        ("rpo,base2new,ViT-B-16,16,dtd,H,68.61,blog,RPO paper", "kind 'blog'"),
    ],
)
def test_bad_rows_are_one_clear_error(line, message):
    with pytest.raises(ReportError, match=message):
        parse(f"{HEADER}\n{line}\n")


def test_a_second_row_for_a_key_is_refused():
    line = "rpo,base2new,ViT-B-16,16,dtd,H,68.61,paper table,RPO paper"
    with pytest.raises(ReportError, match="a second row"):
        parse(f"{HEADER}\n{line}\n{line}\n")


def _cell(method, dataset, metric, mean, n_datasets=1, backbone="ViT-B-16 (openai)"):
    source = dataset
    return Cell(backbone, "base2new", method, source, dataset, "base", 16, metric, mean, 0.5,
                (1, 2, 3), n_datasets)  # fmt: skip


def test_a_benchmark_sweep_is_put_beside_the_published_numbers():
    cells = [
        _cell("rpo", "oxford_pets", "H", 95.55),
        _cell("rpo", AVERAGE, "avg_of_H", 77.00, n_datasets=11),
        _cell("rpo", AVERAGE, "base", 80.00, n_datasets=3),  # an average of 3: not comparable
        _cell("rpo", "oxford_pets", "base", 94.0),  # nothing published per data set for base
    ]
    pairs = published.matches(cells)
    assert [(c.dataset, n.text) for c, n in pairs] == [("oxford_pets", "96.05"), (AVERAGE, "77.78")]
    text = "\n".join(published.comparison_md(cells))
    assert "| rpo | oxford_pets | 16 | H | 95.55 ± 0.50 | 96.05 | -0.50 | paper table |" in text


def test_a_mini_sweep_says_that_nothing_is_published():
    cells = [_cell("rpo", "mini_objects", "H", 60.0, backbone="vlprompt-mini-vit")]
    text = "\n".join(published.comparison_md(cells))
    assert "Nothing published to compare" in text and "mini_objects" in text
    assert "| published |" not in text


def test_few_shot_cells_meet_tip_adapters_rows_and_the_computed_average():
    def cell(dataset, n_datasets=1):
        source = AVERAGE if dataset == AVERAGE else dataset
        return Cell("RN50 (openai)", "fewshot", "tip_adapter", source, dataset, "all", 16,
                    "accuracy", 88.0, 0.2, (1, 2, 3), n_datasets)  # fmt: skip

    pairs = published.matches([cell("oxford_pets"), cell(AVERAGE, 11), cell(AVERAGE, 4)])
    assert [(c.dataset, n.text, n.kind) for c, n in pairs] == [
        ("oxford_pets", "88.14", "repository file"),
        (AVERAGE, "70.32", "computed"),
    ]


def test_a_dept_run_meets_depts_rows_not_its_base_methods():
    cells = [_cell("coop+dept", AVERAGE, "base", 80.0, n_datasets=11),
             _cell("coop", AVERAGE, "base", 79.0, n_datasets=11)]  # fmt: skip
    pairs = {c.method: n for c, n in published.matches(cells)}
    assert pairs["coop+dept"].text == "83.66" and "Koorye/DePT" in pairs["coop+dept"].source
    assert pairs["coop"].text == "82.69"
    text = "\n".join(published.comparison_md(cells))
    assert "| coop+dept | average | 16 | base | 80.00 ± 0.50 | 83.66 | -3.66 |" in text
