"""The published numbers of the methods and protocols vlprompt ships, as data.

`assets/published.csv` holds one number a row: method, protocol, backbone (open_clip's name),
shots, data set (or "average", over the 11 data sets of the CoOp protocol), metric (the metric
names of summary.csv: base, new, H, H_of_avg, avg_of_H, accuracy), the value as printed by its
source, its kind ("paper table", "repository file", or "computed": a mean of a repository file's
rows) and the source itself (a repository file at a commit, or a paper table).

Averages that the sources do not print (Tip-Adapter's exp.log has per-data-set rows only) are
computed here from the 11 rows, never typed. docs/reproduce.md's tables of published numbers are
rendered from this table between `<!-- published:NAME ARGS -->` and `<!-- /published -->`
markers (`sync_markdown`), and summaries put a sweep's numbers beside them (`comparison_md`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from vlprompt.errors import ReportError

AVERAGE = "average"
COLUMNS = (
    "method",
    "protocol",
    "backbone",
    "shots",
    "dataset",
    "metric",
    "value",
    "kind",
    "source",
)
KINDS = ("paper table", "repository file", "computed")
KIND_LABELS = {
    "paper table": "paper table",
    "repository file": "repository file",
    "computed": "a repository file's 11 rows, averaged here",
}
ELEVEN = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)  # fmt: skip
DATASET_TITLES = dict(zip(ELEVEN, (
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101",
    "FGVCAircraft", "SUN397", "DTD", "EuroSAT", "UCF101",
)))  # fmt: skip
METHOD_TITLES = {
    "zsclip": "CLIP (`zsclip`)", "coop": "CoOp", "cocoop": "CoCoOp", "prograd": "ProGrad",
    "kgcoop": "KgCoOp", "rpo": "RPO", "ivlp": "IVLP", "maple": "MaPLe", "promptsrc": "PromptSRC",
    "tcp": "TCP", "tip_adapter": "Tip-Adapter", "tip_adapter_f": "Tip-Adapter-F",
    "clip_adapter": "CLIP-Adapter", "gda": "GDA", "clip_lora": "CLIP-LoRA",
    "two_stage": "2SFS",
    "skiptuning": "Skip Tuning",
}  # fmt: skip
MARKER = re.compile(r"<!-- published:(?P<name>[a-z0-9_]+)(?P<args>[^>]*?)\s*-->\n"
                    r"(?P<body>.*?)<!-- /published -->", re.S)  # fmt: skip


@dataclass(frozen=True)
class Number:
    """One published number (one row of published.csv)."""

    method: str
    protocol: str
    backbone: str
    shots: int
    dataset: str
    metric: str
    text: str  # the value as its source prints it
    kind: str
    source: str

    @property
    def value(self) -> float:
        return float(self.text)

    @property
    def key(self) -> tuple[str, str, str, int, str, str]:
        return (self.method, self.protocol, self.backbone, self.shots, self.dataset, self.metric)


def _asset() -> str:
    return resources.files("vlprompt").joinpath("assets/published.csv").read_text("utf-8")


def parse(text: str, where: str = "published.csv") -> list[Number]:
    """The rows of a published table, checked: known columns and kinds, numeric values, one row
    per key."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ReportError(f"{where}: columns {reader.fieldnames}, expected {', '.join(COLUMNS)}")
    numbers: dict[tuple, Number] = {}
    for line, row in enumerate(reader, start=2):
        try:
            fields = {k: v for k, v in row.items() if k != "value"}
            number = Number(**{**fields, "shots": int(row["shots"]), "text": row["value"]})
            number.value  # noqa: B018 (a number, or the ValueError below)
        except (TypeError, ValueError) as error:
            raise ReportError(f"{where}, line {line}: {error}; expected a number") from None
        if number.kind not in KINDS:
            raise ReportError(
                f"{where}, line {line}: kind {number.kind!r}, expected one of {KINDS}"
            )
        if number.key in numbers:
            raise ReportError(f"{where}, line {line}: a second row for {number.key}")
        numbers[number.key] = number
    return list(numbers.values())


@lru_cache(maxsize=1)
def _shipped() -> tuple[Number, ...]:
    return tuple(with_averages(parse(_asset())))


def published() -> list[Number]:
    """The shipped numbers, with the averages over the 11 data sets computed where a source
    gives all 11 per-data-set accuracies and no average."""
    return list(_shipped())


def with_averages(numbers: Sequence[Number]) -> list[Number]:
    """`numbers` and, per (method, protocol, backbone, shots) with an accuracy for each of the 11
    data sets and no average, their mean (kind "computed")."""
    keys = {n.key for n in numbers}
    groups: dict[tuple, dict[str, Number]] = {}
    for n in numbers:
        if n.metric == "accuracy" and n.dataset in ELEVEN:
            groups.setdefault((n.method, n.protocol, n.backbone, n.shots), {})[n.dataset] = n
    out = list(numbers)
    for (method, protocol, backbone, shots), rows in groups.items():
        key = (method, protocol, backbone, shots, AVERAGE, "accuracy")
        if key in keys or len(rows) < len(ELEVEN):
            continue
        mean = sum(n.value for n in rows.values()) / len(rows)
        sources = sorted({n.source for n in rows.values()})
        out.append(Number(method, protocol, backbone, shots, AVERAGE, "accuracy", f"{mean:.2f}",
                          "computed", "mean of the 11 rows of " + "; ".join(sources)))  # fmt: skip
    return out


def index(numbers: Iterable[Number] | None = None) -> dict[tuple, Number]:
    return {n.key: n for n in (published() if numbers is None else numbers)}


# ----------------------------------------------------------------------------- docs tables


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["|" + "|".join(f" {c} " if c else " " for c in row) + "|" for row in rows]


def _csv_arg(args: dict[str, str], name: str) -> list[str]:
    return [x for x in args.get(name, "").split(",") if x]


RULE_TITLES = {"dept": "DePT", "prograd": "ProGrad's gradient rule", "kd": "KD",
               "none": "no gradient rule"}  # fmt: skip


def _method_title(method: str) -> str:
    """A method's title; a label with rules (``coop+dept``) as "CoOp + DePT"."""
    base, *rules = method.split("+")
    return " + ".join([METHOD_TITLES.get(base, base), *(RULE_TITLES.get(r, r) for r in rules)])


def _base2new_average(numbers: dict[tuple, Number], args: dict[str, str]) -> list[str]:
    """Base, new and H over the 11 data sets per method, with empty columns for a user's own."""
    rows = []
    for method in _csv_arg(args, "methods"):
        base, new, h_of_avg, avg_of_h = (
            numbers.get((method, "base2new", "ViT-B-16", 16, AVERAGE, m))
            for m in ("base", "new", "H_of_avg", "avg_of_H")
        )
        h = h_of_avg or avg_of_h
        if base is None or new is None or h is None:
            rows.append([_method_title(method), "(none published)", "", "", "", "", "", "", ""])
            continue
        h_text = h.text + (" (avg of H)" if h.metric == "avg_of_H" else "")
        rows.append([_method_title(method), base.text, new.text, h_text, base.kind,
                     "", "", "", ""])  # fmt: skip
    header = ["method", "base (pub.)", "new (pub.)", "H (pub.)", "source", "base (yours)",
              "new (yours)", "H of avg (yours)", "avg of H (yours)"]  # fmt: skip
    return _table(header, rows)


def _base2new_per_dataset(numbers: dict[tuple, Number], args: dict[str, str]) -> list[str]:
    """One method's published H per data set and its average."""
    method = args["method"]
    rows = []
    for dataset in (*ELEVEN, AVERAGE):
        metrics = ("H",) if dataset != AVERAGE else ("avg_of_H", "H_of_avg")
        found = [numbers.get((method, "base2new", "ViT-B-16", 16, dataset, m)) for m in metrics]
        h = next((n for n in found if n is not None), None)
        title = DATASET_TITLES.get(dataset, dataset)
        name = dataset if dataset != AVERAGE else ""
        rows.append([title, name, h.text if h else "", "", "", ""])
    return _table(["data set", "`--datasets` name", "H (pub.)", "base (yours)", "new (yours)",
                   "H (yours)"], rows)  # fmt: skip


def _base2new_files(numbers: dict[tuple, Number], args: dict[str, str]) -> list[str]:
    """The averages that official repositories print, with the file."""
    rows = []
    for method in _csv_arg(args, "methods"):
        found = [numbers.get((method, "base2new", "ViT-B-16", 16, AVERAGE, m))
                 for m in ("base", "new", "H_of_avg")]  # fmt: skip
        if any(n is None for n in found):
            continue
        rows.append([_method_title(method), *(n.text for n in found), found[0].source])
    return _table(["method", "base", "new", "H", "file"], rows)


def _fewshot_average(numbers: dict[tuple, Number], args: dict[str, str]) -> list[str]:
    """The published few-shot averages over the 11 data sets by shots, and a row per method of
    `yours` to fill in."""
    backbone = args["backbone"]
    shots = (1, 2, 4, 8, 16)
    rows = []
    for method in _csv_arg(args, "methods"):
        found = [numbers.get((method, "fewshot", backbone, k, AVERAGE, "accuracy")) for k in shots]
        kinds = sorted({KIND_LABELS[n.kind] for n in found if n is not None})
        label = f"published: {_method_title(method)} ({', '.join(kinds)})"
        rows.append([label, *(n.text if n else "" for n in found)])
    rows += [[f"yours: {m}", "", "", "", "", ""] for m in _csv_arg(args, "yours")]
    return _table([f"average of 11, {backbone}", *map(str, shots)], rows)


def _fewshot_per_dataset(numbers: dict[tuple, Number], args: dict[str, str]) -> list[str]:
    """One method's published accuracy per data set by shots; the average row in italics when it
    is computed here."""
    method, backbone = args["method"], args["backbone"]
    mine = [n for n in numbers.values()
            if (n.method, n.protocol, n.backbone) == (method, "fewshot", backbone)]  # fmt: skip
    shots = sorted({n.shots for n in mine if n.dataset != AVERAGE})
    rows = []
    for dataset in (*ELEVEN, AVERAGE):
        found = [numbers.get((method, "fewshot", backbone, k, dataset, "accuracy")) for k in shots]
        if dataset == AVERAGE:
            rows.append(["*average of 11 (computed here)*",
                         *(f"*{n.text}*" if n else "" for n in found)])  # fmt: skip
        else:
            rows.append([dataset, *(n.text if n else "" for n in found)])
    return _table(["data set", *map(str, shots)], rows)


TABLES: dict[str, Callable[[dict[tuple, Number], dict[str, str]], list[str]]] = {
    "base2new_average": _base2new_average,
    "base2new_per_dataset": _base2new_per_dataset,
    "base2new_files": _base2new_files,
    "fewshot_average": _fewshot_average,
    "fewshot_per_dataset": _fewshot_per_dataset,
}


def render(name: str, args: dict[str, str], numbers: Iterable[Number] | None = None) -> str:
    """The Markdown table `name` (one of TABLES) with its marker arguments."""
    if name not in TABLES:
        raise ReportError(f"published table {name!r}: expected one of {', '.join(TABLES)}")
    return "\n".join(TABLES[name](index(numbers), args)) + "\n"


def _args(text: str) -> dict[str, str]:
    pairs = [part.partition("=") for part in text.split()]
    return {key: value for key, _, value in pairs}


def sync_markdown(text: str, numbers: Iterable[Number] | None = None) -> str:
    """`text` with every table between `<!-- published:NAME k=v ... -->` and `<!-- /published -->`
    replaced by its rendering."""
    numbers = list(published() if numbers is None else numbers)

    def replace(match: re.Match) -> str:
        head = match.group(0).split("\n", 1)[0]
        body = render(match.group("name"), _args(match.group("args")), numbers)
        return f"{head}\n{body}<!-- /published -->"

    return MARKER.sub(replace, text)


def sync_file(path: str | Path) -> bool:
    """Rewrite the generated tables of a Markdown file; True when it changed."""
    from vlprompt.io import atomic_write_text

    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = sync_markdown(old)
    if new != old:
        atomic_write_text(path, new)
    return new != old


# ----------------------------------------------------------------------------- a sweep beside them


def _backbone_name(label: str) -> str:
    return label.split(" (", 1)[0]


def matches(cells: Sequence[Any], numbers: Iterable[Number] | None = None) -> list[tuple]:
    """(cell, published number) for each summary cell with a published counterpart: same method,
    protocol, backbone, shots, data set and metric; an average only over the same 11 data sets."""
    table = index(numbers)
    found = []
    for cell in cells:
        if cell.dataset == AVERAGE and (cell.source != AVERAGE or cell.n_datasets != len(ELEVEN)):
            continue
        if cell.protocol == "base2new" and cell.dataset != cell.source:
            continue
        key = (cell.method, cell.protocol, _backbone_name(cell.backbone), cell.shots,
               cell.dataset, cell.metric)  # fmt: skip
        if key in table:
            found.append((cell, table[key]))
    return found


def comparison_md(cells: Sequence[Any], numbers: Iterable[Number] | None = None) -> list[str]:
    """The section of summary.md that puts a sweep's numbers beside the published ones, or one
    line saying that none of its rows has a published counterpart."""
    out = ["## Published numbers", ""]
    pairs = matches(cells, numbers)
    if not pairs:
        names = sorted({c.dataset for c in cells if c.dataset != AVERAGE})
        return out + [
            "Nothing published to compare: no published number has this sweep's method, protocol, "
            f"backbone, shots and data set (data sets: {', '.join(names) or 'none'}; published: "
            "the 11 data sets of the CoOp protocol, see `vlprompt.published`).", ""]  # fmt: skip
    rows = []
    for cell, number in pairs:
        diff = cell.mean - number.value
        rows.append([cell.method, cell.dataset, str(cell.shots), cell.metric, cell.text(),
                     number.text, f"{diff:+.2f}", number.kind])  # fmt: skip
    out += [
        "Yours: mean ± std over your seeds; published: as printed by its source (kind: paper "
        "table, repository file, or computed here from a repository file's rows); difference: "
        "yours − published. Sources: `vlprompt.published`.",
        "",
    ]
    header = ["method", "data set", "shots", "metric", "yours", "published", "difference", "kind"]
    return out + _table(header, rows) + [""]
