"""Where the mini world agrees with real CLIP, and where it does not.

Each ordering below is one the papers report on real CLIP. It is checked on the mini world's
stored results (`benchmarks/results/`, the sweeps of docs/mini-world.md) and, for the ViT-B/16
base-to-new averages, shown with real CLIP's published numbers (vlprompt's published-numbers
table, `src/vlprompt/assets/published.csv`). `benchmarks/docs_tables.py` writes the table
between the `<!-- results:fidelity kind=fidelity -->` markers of docs/mini-world.md, and the
docs-tables test checks that it equals this rendering of the stored files.

An ordering holds on the mini world when the seed means are in the claimed order; when the
difference is smaller than the larger of the two seed standard deviations the table says so, as
a hint that the order is inside the seed noise (the sweeps' pairwise tests say more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlprompt.published import index as published_index
from vlprompt.report import Cell, load_results, summarize

# the stored sweeps each protocol's orderings read (the first that holds a method wins)
SOURCES = {
    "base2new": ("mini-b2n/seed", "mini-b2n/peers", "mini-b2n/lora", "mini-b2n/anchors"),
    "fewshot": ("mini-fewshot/seed",),
}
NAMES = {
    "zsclip": "zero-shot CLIP", "linear_probe": "linear probe", "coop": "CoOp",
    "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "prograd": "ProGrad", "rpo": "RPO", "ivlp": "IVLP",
    "maple": "MaPLe", "promptsrc": "PromptSRC", "tcp": "TCP", "clip_lora": "CLIP-LoRA",
    "clip_adapter": "CLIP-Adapter", "tip_adapter": "Tip-Adapter", "tip_adapter_f": "Tip-Adapter-F",
    "mmrl": "MMRL", "skiptuning": "Skip Tuning", "two_stage": "2SFS",
}  # fmt: skip
METRICS = {"new": "new-class accuracy", "base": "base-class accuracy", "H_of_avg": "H",
           "accuracy": "accuracy"}  # fmt: skip


@dataclass(frozen=True)
class Ordering:
    """`chain[0] > chain[1] > ...` in `metric` (averaged over data sets), as `source` reports it
    on real CLIP; with `top`, `chain[0]` is among the `top` best of every method measured."""

    claim: str
    source: str
    protocol: str
    metric: str
    chain: tuple[str, ...]
    shots: int = 16
    top: int = 0
    mini_note: str = ""  # how the mini world's check differs from the papers' setting


ORDERINGS = (
    Ordering("CoOp loses new-class accuracy against zero-shot CLIP", "CoCoOp paper (base-to-new)",
             "base2new", "new", ("zsclip", "coop")),
    Ordering("CoCoOp keeps more new-class accuracy than CoOp", "CoCoOp paper (base-to-new)",
             "base2new", "new", ("cocoop", "coop")),
    Ordering("KgCoOp keeps more new-class accuracy than CoOp", "KgCoOp paper (base-to-new)",
             "base2new", "new", ("kgcoop", "coop")),
    Ordering("ProGrad keeps more new-class accuracy than CoOp", "ProGrad paper (base-to-new)",
             "base2new", "new", ("prograd", "coop")),
    Ordering("RPO keeps more new-class accuracy than CoCoOp", "RPO paper (base-to-new)",
             "base2new", "new", ("rpo", "cocoop")),
    Ordering("PromptSRC > MaPLe > CoOp in H", "PromptSRC paper (base-to-new)", "base2new",
             "H_of_avg", ("promptsrc", "maple", "coop")),
    Ordering("linear probe below zero-shot CLIP at 1 shot", "CoOp paper (few-shot curves)", "fewshot",
             "accuracy", ("zsclip", "linear_probe"), shots=1),
    Ordering("linear probe above zero-shot CLIP at 16 shots", "CoOp paper (few-shot curves)",
             "fewshot", "accuracy", ("linear_probe", "zsclip")),
    Ordering("CoOp above zero-shot CLIP at 16 shots", "CoOp paper (few-shot curves)", "fewshot",
             "accuracy", ("coop", "zsclip")),
    Ordering("Tip-Adapter-F above zero-shot CLIP", "Tip-Adapter paper (few-shot, every shot "
             "count)", "base2new", "base", ("tip_adapter_f", "zsclip"),
             mini_note="the classes it trained on (base), 16 shots"),
    Ordering("CLIP-LoRA near the top", "CLIP-LoRA paper (few-shot)", "base2new",
             "base", ("clip_lora",), top=2,
             mini_note="base-class accuracy, rank among every method of the base-to-new sweeps"),
)  # fmt: skip


def _name(method: str) -> str:
    return NAMES.get(method, method)


def mini_cells(results_dir: Path) -> tuple[dict[tuple, Cell], list[dict]]:
    """The data-set averages of every stored sweep of SOURCES, by (protocol, method, shots,
    metric), and all their records."""
    cells: dict[tuple, Cell] = {}
    records: list[dict] = []
    for names in SOURCES.values():
        for name in names:
            path = results_dir / name / "results.jsonl"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no stored results; run the sweep of "
                                        f"docs/mini-world.md and store it as {name}")  # fmt: skip
            found = load_results(path)
            records += found
            for c in summarize(found):
                if c.dataset == "average":
                    cells.setdefault((c.protocol, c.method, c.shots, c.metric), c)
    return cells, records


def _published_value(method: str, metric: str) -> float | None:
    number = published_index().get((method, "base2new", "ViT-B-16", 16, "average", metric))
    return None if number is None else number.value


def _chain_text(values: Sequence[tuple[str, str]], holds: bool) -> str:
    sign = " > " if holds else " vs "
    return sign.join(f"{_name(m)} {v}" for m, v in values)


def _descending(values: Sequence[float]) -> bool:
    return all(a > b for a, b in zip(values, values[1:], strict=False))


def _published_chain(o: Ordering) -> str:
    """Real CLIP's published averages along the chain ('' where one is not published)."""
    values = [_published_value(m, o.metric) for m in o.chain]
    if o.protocol != "base2new" or any(v is None for v in values):
        return ""
    pairs = [(m, f"{v:.2f}") for m, v in zip(o.chain, values, strict=True)]
    return _chain_text(pairs, _descending(values))


def _rank(o: Ordering, cells: dict[tuple, Cell]) -> tuple[str, str]:
    """`chain[0]`'s rank among every method measured, and the verdict."""
    ranked = sorted((c for k, c in cells.items()
                     if k[0] == o.protocol and k[2] == o.shots and k[3] == o.metric),
                    key=lambda c: -c.mean)  # fmt: skip
    rank = [c.method for c in ranked].index(o.chain[0]) + 1
    leaders = ", ".join(f"{_name(c.method)} {c.mean:.2f}" for c in ranked[: max(o.top, rank)])
    return f"rank {rank} of {len(ranked)} ({leaders})", "yes" if rank <= o.top else "no"


def check(o: Ordering, cells: dict[tuple, Cell]) -> tuple[str, str, str]:
    """(real CLIP's numbers or '', the mini world's numbers, the verdict) of one ordering."""
    got = [cells.get((o.protocol, m, o.shots, o.metric)) for m in o.chain]
    missing = [m for m, c in zip(o.chain, got, strict=True) if c is None]
    if missing:  # said in the table, not guessed: the ordering is not checked yet
        names = ", ".join(_name(m) for m in missing)
        return "", f"no stored mini-world result for {names} yet", "not checked"
    if o.top:
        return ("", *_rank(o, cells))
    holds = _descending([c.mean for c in got])
    mini = _chain_text([(c.method, c.text()) for c in got], holds)
    verdict = "yes" if holds else "no"
    if any(abs(a.mean - b.mean) < max(a.std, b.std) for a, b in zip(got, got[1:], strict=False)):
        verdict += " (a gap inside the seed std)"
    return _published_chain(o), mini, verdict


def render(results_dir: Path) -> str:
    """The fidelity section's generated body: where its numbers come from, the table, the
    count of orderings the mini world reproduces."""
    cells, records = mini_cells(results_dir)
    rows, held = [], 0
    for o in ORDERINGS:
        real, mini, verdict = check(o, cells)
        held += verdict.startswith("yes")
        where = f"{METRICS[o.metric]}, {o.shots} shot{'s' if o.shots > 1 else ''}"
        if o.mini_note:
            where = o.mini_note
        rows.append([o.claim, o.source, real or "(no published average)", f"{mini} ({where})",
                     verdict])  # fmt: skip
    names = [n for ns in SOURCES.values() for n in ns]
    versions = sorted({str(r.get("vlprompt_version", "unrecorded")) for r in records})
    source = (f"Generated by `python benchmarks/docs_tables.py` (`benchmarks/fidelity.py`) from "
              f"{', '.join(f'`benchmarks/results/{n}/results.jsonl`' for n in names)} "
              f"({len(records)} evaluations, vlprompt {', '.join(versions)}) and the published "
              "numbers of `src/vlprompt/assets/published.csv` (ViT-B/16, base-to-new, the "
              "averages over 11 data sets).")  # fmt: skip
    header = ["ordering on real CLIP", "source", "real CLIP (published)",
              "mini world (mean ± std over seeds)", "holds on the mini world"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    checked = sum(1 for r in rows if r[-1] != "not checked")
    total = (f"The mini world reproduces {held} of the {checked} orderings checked"
             + (f" ({len(ORDERINGS) - checked} not checked yet)." if checked < len(ORDERINGS)
                else "."))  # fmt: skip
    return "\n".join([source, "", *lines, "", total]) + "\n"


if __name__ == "__main__":
    print(render(Path(__file__).resolve().parent / "results"), end="")
