"""summary.tex: a sweep's tables as LaTeX the way papers print them.

booktabs tables (\\toprule, \\midrule, \\bottomrule; the including document needs
\\usepackage{booktabs}), means over seeds with two decimals, the best value of each column in
bold (per data set for base-to-new and few-shot), zero-shot CLIP first and the other methods in
alphabetical order. Base-to-new: per data set base, new and H with the average over data sets
first (H of the averaged accuracies); few-shot: accuracy by shots; xd and dg: accuracy per target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ZERO_SHOT = ("zsclip", "zeroshot", "zero_shot", "clip")  # printed first, in this order
_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped."""
    return "".join(_SPECIALS.get(ch, ch) for ch in str(text))


def method_order(methods: Iterable[str], first: Sequence[str] = ()) -> list[str]:
    """`first`'s methods in its order, then zero-shot, then the rest by name: the same order
    whatever order results came in."""
    methods = set(methods)
    head = [m for m in dict.fromkeys([*first, *ZERO_SHOT]) if m in methods]
    return head + sorted(methods - set(head))


def sort_by_method(cells: Sequence[Any], first: Sequence[str] = ()) -> list[Any]:
    """`cells` in `method_order` of their methods (stable: each method's cells keep their
    order), so that the tables list methods in order of first appearance."""
    rank = {m: i for i, m in enumerate(method_order((c.method for c in cells), first))}
    return sorted(cells, key=lambda c: rank[c.method])


def _label(*parts: object) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9]+", "-", "-".join(map(str, parts))).strip("-")


def _bold_best(rows: list[list[float | None]]) -> list[list[str]]:
    """Format a block of numbers (rows x columns), the column maxima (after rounding) bold."""
    texts = [[("--" if v is None else f"{v:.2f}") for v in row] for row in rows]
    for j in range(len(rows[0]) if rows else 0):
        values = [float(row[j]) for row in texts if row[j] != "--"]
        if len(values) < 2:
            continue
        best = f"{max(values):.2f}"
        for row in texts:
            if row[j] == best:
                row[j] = rf"\textbf{{{best}}}"
    return texts


def _table(caption: str, label: str, header: list[str], body: list[list[str]], align: str) -> str:
    """One booktabs table; `body` rows of None are \\midrule separators."""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for row in body:
        lines.append(r"\midrule" if row is None else " & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _seeds(cells: Sequence) -> str:
    seeds = sorted({s for c in cells for s in c.seeds})
    return ", ".join(map(str, seeds)) or "-"


def _index(cells: Sequence) -> dict[tuple, Any]:
    return {
        (c.backbone, c.protocol, c.method, c.source, c.dataset, c.shots, c.metric): c for c in cells
    }


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _base2new(cells: Sequence, backbone: str, shots: int, average: str) -> str:
    index = _index(cells)
    methods = _ordered(c.method for c in cells)
    datasets = _ordered(c.dataset for c in cells if c.dataset != average)
    panels = ([average] if any(c.dataset == average for c in cells) else []) + datasets
    body: list[list[str] | None] = []
    for i, d in enumerate(panels):
        here = [m for m in methods if (backbone, "base2new", m, d, d, shots, "base") in index]
        metrics = ("base", "new", "H_of_avg" if d == average else "H")
        numbers = [[_mean(index, backbone, "base2new", m, d, d, shots, k) for k in metrics]
                   for m in here]  # fmt: skip
        name = f"Average ({len(datasets)})" if d == average else escape(d)
        if i:
            body.append(None)
        for j, (m, row) in enumerate(zip(here, _bold_best(numbers))):
            body.append([name if j == 0 else "", escape(m), *row])
    caption = (
        f"Base-to-new generalisation, {escape(backbone)}, {shots} shots: accuracy "
        r"(\%) on base and new classes and their harmonic mean H, mean over seeds "
        f"{_seeds(cells)}. Average: over data sets, H of the averaged base and new accuracies. "
        "Best per column and data set in bold."
    )
    header = ["Data set", "Method", "Base", "New", "H"]
    return _table(caption, _label("base2new", backbone, f"shots{shots}"), header, body, "llrrr")


def _mean(index: dict, *key: object) -> float | None:
    cell = index.get(tuple(key))
    return None if cell is None else cell.mean


def _fewshot(cells: Sequence, backbone: str, average: str) -> str:
    index = _index(cells)
    methods = _ordered(c.method for c in cells)
    shots = sorted({c.shots for c in cells})
    datasets = _ordered(c.dataset for c in cells if c.dataset != average)
    panels = ([average] if len(datasets) > 1 else []) + datasets
    body: list[list[str] | None] = []
    for i, d in enumerate(panels):
        here = [m for m in methods if any(c.method == m and c.dataset == d for c in cells)]
        numbers = [[_mean(index, backbone, "fewshot", m, d, d, k, "accuracy") for k in shots]
                   for m in here]  # fmt: skip
        name = f"Average ({len(datasets)})" if d == average else escape(d)
        if i:
            body.append(None)
        for j, (m, row) in enumerate(zip(here, _bold_best(numbers))):
            body.append([name if j == 0 else "", escape(m), *row])
    caption = (
        f"Few-shot learning, {escape(backbone)}: accuracy (\\%) by shots per class, mean over "
        f"seeds {_seeds(cells)}. Best per column and data set in bold."
    )
    header = ["Data set", "Method", *[str(k) for k in shots]]
    return _table(caption, _label("fewshot", backbone), header, body, "ll" + "r" * len(shots))


def _transfer(cells: Sequence, backbone: str, protocol: str, title: str, average: str) -> list[str]:
    index = _index(cells)
    tables = []
    for source, shots in sorted({(c.source, c.shots) for c in cells}):
        here = [c for c in cells if c.source == source and c.shots == shots]
        methods = _ordered(c.method for c in here)
        targets = _ordered(c.dataset for c in here if c.dataset not in (source, average))
        columns = [source, *targets, average]
        numbers = [[_mean(index, backbone, protocol, m, source, d, shots, "accuracy")
                    for d in columns] for m in methods]  # fmt: skip
        body = [[escape(m), *row] for m, row in zip(methods, _bold_best(numbers))]
        caption = (
            f"{escape(title)}, {escape(backbone)}: accuracy (\\%) trained on "
            f"{escape(source)} with {shots} shots, mean over seeds {_seeds(here)}. Average: over "
            "the targets. Best per column in bold."
        )
        header = ["Method", f"{escape(source)} (source)", *map(escape, targets), "Average"]
        label = _label(protocol, backbone, source, f"shots{shots}")
        tables.append(_table(caption, label, header, body, "l" + "r" * len(columns)))
    return tables


def render_latex(
    cells: Sequence, titles: Mapping[str, str], average: str, first: Sequence[str] = ()
) -> str:
    """summary.tex from `report.summarize`'s cells (a comment only when there are none);
    `titles`: the protocols' names, `average`: the data set name of an average row, `first`:
    the methods listed first, in this order (then `method_order`'s)."""
    cells = sort_by_method(list(cells), first)
    out = [
        "% Generated by vlprompt from a sweep's results.jsonl: means over seeds, best in bold.",
        "% Needs \\usepackage{booktabs}.",
        "",
    ]
    for backbone in sorted({c.backbone for c in cells}):
        mine = [c for c in cells if c.backbone == backbone]
        base2new = [c for c in mine if c.protocol == "base2new"]
        for shots in sorted({c.shots for c in base2new}):
            out.append(
                _base2new([c for c in base2new if c.shots == shots], backbone, shots, average)
            )
        fewshot = [c for c in mine if c.protocol == "fewshot"]
        if fewshot:
            out.append(_fewshot(fewshot, backbone, average))
        for protocol in ("xd", "dg"):
            transfer = [c for c in mine if c.protocol == protocol]
            if transfer:
                out += _transfer(transfer, backbone, protocol, titles[protocol], average)
    if not cells:
        out.append("% No results yet.")
    return "\n".join(out).rstrip() + "\n"
