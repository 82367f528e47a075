"""The docs' result tables, generated from stored results, never typed.

    python benchmarks/docs_tables.py            # rewrite every generated part of the docs
    python benchmarks/docs_tables.py --check    # exit 1, naming each part that is stale

A generated part of a markdown file sits between

    <!-- results:NAME parts="Spread over seeds|Pairwise tests" level=4 -->
    <!-- /results -->

and is the sweep summary (`vlprompt.report.render_markdown`, the same text as the sweep's
summary.md, with its intervals and tests) of `benchmarks/results/NAME/results.jsonl`: the
sections whose headings start with one of `parts`, each down to the next heading of its level or
higher, their headings moved to `level` (default 4); `A::B` is the first section B after heading
A (e.g. the pairwise tests of one shot count); `tables=N` keeps only their first N tables. Above them, one line says where the numbers come from:
the results file, its evaluations, the vlprompt versions that made them and the command, read
from `benchmarks/results/NAME/source.json` (`{"command": ...}`).

To refresh a part: run the command of its source.json, copy the sweep's results.jsonl over the
stored one (`store`, below, drops run-folder paths), then run this script.

    python benchmarks/docs_tables.py store SWEEP_RESULTS NAME --command "python benchmarks/..."

`<!-- results:fidelity kind=fidelity -->` holds the fidelity table instead (`fidelity.py`: the
orderings the papers report on real CLIP, checked on several stored sweeps);
`<!-- results:NAME kind=recipe_check -->` the learning-rate and budget check of
`mini_recipe_check.py` (its `collect` stores NAME/records.jsonl); `kind=mini_budgets` the mini
recipes' budgets in optimizer steps and `kind=mini_recipes` the recipes beside the papers',
computed from the code (`mini_budgets.py`); `kind=zero_shot`
the tiny CLIP's zero-shot accuracy (`vlprompt.mini.probe`) and `kind=crop_check` the training crop
chosen on validation (`mini_crop_on_val.py`), `kind=headroom` and `kind=replicas` the replica
measurements (`mini_headroom.py`, `mini_world_variants.py`), each from NAME/records.jsonl. Every stored sweep
is made by `mini_docs.py` (`python benchmarks/mini_docs.py list`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import fidelity
import mini_budgets
import mini_crop_on_val
import mini_headroom
import mini_recipe_check
import mini_world_variants

from vlprompt.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from vlprompt.latex import sort_by_method
from vlprompt.mini.probe import render_zeroshot
from vlprompt.report import load_results, per_seed, render_markdown, summarize

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOCS = ("README.md", "docs/mini-world.md", "docs/reproduce.md", "docs/deploy.md", "BENCHMARKS.md")
MARKER = re.compile(r"<!-- results:(?P<name>[a-z0-9_./-]+)(?P<args>[^>]*?)\s*-->\n"
                    r"(?P<body>.*?)<!-- /results -->", re.S)  # fmt: skip
ARG = re.compile(r'(\w+)=(?:"([^"]*)"|(\S+))')
HEADING = re.compile(r"^(#{1,6}) (.*)$")
DROPPED_FIELDS = ("run_dir", "output_dir")  # where a run folder was on the machine that ran it


def _args(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in ARG.finditer(text)}  # fmt: skip


def sections(markdown: str, parts: Sequence[str], level: int) -> list[str]:
    """The sections of `markdown` whose headings start with one of `parts` (in the order of
    `parts`), each down to the next heading of its level or higher, headings moved so that the
    section's own heading has `level`."""
    lines = markdown.splitlines()
    out: list[str] = []
    for part in parts:
        start = 0
        for step in part.split("::"):  # "A::B": the first section B inside (after) section A
            start = next((i for i in range(start, len(lines))
                          if (m := HEADING.match(lines[i])) and m.group(2).startswith(step)),
                         None)  # fmt: skip
            if start is None:
                raise ValueError(f"no section starting with {part!r} in the summary")
        own = len(HEADING.match(lines[start]).group(1))
        end = next((i for i in range(start + 1, len(lines))
                    if (m := HEADING.match(lines[i])) and len(m.group(1)) <= own), len(lines))  # fmt: skip
        for line in lines[start:end]:
            m = HEADING.match(line)
            out.append("#" * (len(m.group(1)) - own + level) + " " + m.group(2) if m else line)
        while out and not out[-1].strip():
            out.pop()
        out.append("")
    return out


def tables(lines: Sequence[str], count: int) -> list[str]:
    """The first `count` markdown tables of `lines`, a blank line after each."""
    out: list[str] = []
    found = 0
    for i, line in enumerate(lines):
        if line.startswith("|"):
            if i == 0 or not lines[i - 1].startswith("|"):
                found += 1
                if found > count:
                    break
            out.append(line)
            if i + 1 == len(lines) or not lines[i + 1].startswith("|"):
                out.append("")
    return out


def _source_line(name: str, records: Sequence[dict], file: str = "results.jsonl",
                 what: str = "evaluations") -> str:  # fmt: skip
    source = json.loads((RESULTS_DIR / name / "source.json").read_text(encoding="utf-8"))
    versions = sorted({str(r.get("vlprompt_version", "unrecorded")) for r in records})
    return (f"Generated by `python benchmarks/docs_tables.py` from "
            f"`benchmarks/results/{name}/{file}` ({len(records)} {what}, vlprompt "
            f"{', '.join(versions)}; made with `{source['command']}`).")  # fmt: skip


# kinds rendered from a script's stored records (NAME/records.jsonl), with their renderers
RECORD_RENDERERS = {
    "zero_shot": render_zeroshot,
    "crop_check": mini_crop_on_val.render,
    "headroom": mini_headroom.render,
    "replicas": mini_world_variants.render,
    "looks_tried": mini_world_variants.render_looks,
}


def render_records(name: str, renderer) -> str:
    """A script's stored records (NAME/records.jsonl) through its `renderer`, under the line
    that says where they come from."""
    records = read_jsonl(RESULTS_DIR / name / "records.jsonl")
    line = _source_line(name, records, "records.jsonl", "records")
    return f"{line}\n\n{renderer(records).rstrip()}\n"


def render(name: str, args: dict[str, str]) -> str:
    """The body of one generated part (`kind=fidelity`: the fidelity table of
    `benchmarks/fidelity.py`, read from several stored sweeps)."""
    computed = ("fidelity", "mini_budgets", "mini_recipes", "sweeps")  # not one stored folder
    if args.get("kind") not in computed and not (RESULTS_DIR / name / "source.json").is_file():
        raise ValueError(f"no stored results named {name!r} (benchmarks/results/{name}/): run "
                         f"python benchmarks/mini_docs.py run {name}")  # fmt: skip
    if args.get("kind") == "fidelity":
        return fidelity.render(RESULTS_DIR)
    if args.get("kind") == "mini_budgets":
        return mini_budgets.render()
    if args.get("kind") == "sweeps":
        import mini_docs  # it imports this module

        return mini_docs.render_sweeps()
    if args.get("kind") == "mini_recipes":
        return mini_budgets.render_recipes()
    if args.get("kind") == "recipe_check":
        return mini_recipe_check.render(RESULTS_DIR, name)
    if args.get("kind") in RECORD_RENDERERS:
        return render_records(name, RECORD_RENDERERS[args["kind"]])
    if args.get("kind") == "export_speed":
        return render_export_speed(name, args.get("methods", "").split(","))
    records = load_results(RESULTS_DIR / name / "results.jsonl")
    cells = sort_by_method(summarize(records), ())  # zero-shot first, then by name, as summary.md
    markdown = render_markdown(cells, len(records), per_seed(records), None)
    parts = [p.strip() for p in args.get("parts", "").split("|") if p.strip()]
    body = sections(markdown, parts, int(args.get("level", 4)))
    if "tables" in args:
        body = tables(body, int(args["tables"]))
    return "\n".join([_source_line(name, records), "", *body]).rstrip() + "\n"


def render_export_speed(name: str, methods: Sequence[str]) -> str:
    """`benchmarks/export_speed.py --output benchmarks/results/NAME`'s rows (one JSON file per
    method) as one table, in the order of `methods`."""
    records = [json.loads((RESULTS_DIR / name / f"{m}.json").read_text(encoding="utf-8"))
               for m in methods]  # fmt: skip
    versions = sorted({r["vlprompt_version"] for r in records})
    runtimes = sorted({f"torch {r['torch']}, onnxruntime {r['onnxruntime']}" for r in records})
    first = records[0]
    source = json.loads((RESULTS_DIR / name / "source.json").read_text(encoding="utf-8"))
    lines = [
        f"Generated by `python benchmarks/docs_tables.py` from `benchmarks/results/{name}/` "
        f"(vlprompt {', '.join(versions)}; {'; '.join(runtimes)}; made with "
        f"`{source['command']}`: {first['model']} with random weights, "
        f"{first['classes']} classes, {first['repeats']} rounds at batch 1 and "
        f"{first['repeats_large']} at larger batches, medians). Images per CPU second:",
        "",
        "| method | batch | zero-shot CLIP image pass (torch) | vlprompt predict (torch) "
        "| exported ONNX (onnxruntime) | exported time / zero-shot time | standard ops "
        "(onnxruntime) | standard ops time / zero-shot time | max logit diff | export wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in records:
        for row in r["rows"]:
            s = row["images_per_cpu_s"]
            lines.append(
                f"| {r['method']} | {row['batch']} | {s['zero-shot']:.1f} | {s['predict']:.1f} | "
                f"{s['exported']:.1f} | {s['zero-shot'] / s['exported']:.2f} | "
                f"{s['standard ops']:.1f} | {s['zero-shot'] / s['standard ops']:.2f} | "
                f"{row['max_logit_difference']:.0e} | {row['export_wall_s']:.0f} |"
            )  # fmt: skip
    return "\n".join(lines) + "\n"


def sync_text(text: str) -> str:
    """`text` with every generated part rendered afresh."""

    def replace(match: re.Match) -> str:
        head = match.group(0).split("\n", 1)[0]
        return f"{head}\n{render(match.group('name'), _args(match.group('args')))}<!-- /results -->"

    return MARKER.sub(replace, text)


def sync(paths: Sequence[Path], check: bool) -> list[Path]:
    """Rewrite (or with `check`, only find) the files whose generated parts are stale."""
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if text.count("<!-- results:") != len(MARKER.findall(text)):
            raise ValueError(f"{path}: a <!-- results:NAME ... --> marker is malformed (no "
                             "'>' inside it, a <!-- /results --> after it)")  # fmt: skip
        new = sync_text(text)
        if new != text:
            stale.append(path)
            if not check:
                atomic_write_text(path, new)
    return stale


def portable(record: dict) -> dict:
    """A record without the paths of the machine that ran it: no run folder, and a local weight
    file by its name."""
    record = {k: v for k, v in record.items() if k not in DROPPED_FIELDS}
    if isinstance(record.get("pretrained"), str) and Path(record["pretrained"]).is_absolute():
        record["pretrained"] = Path(record["pretrained"]).name
    return record


def store(results: Path, name: str, command: str) -> Path:
    """Copy a sweep's results.jsonl into benchmarks/results/NAME/, without run-folder paths,
    with its source.json."""
    folder = RESULTS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    records = [portable(r) for r in load_results(results)]
    atomic_write_jsonl(folder / "results.jsonl", records)
    atomic_write_text(folder / "source.json", json.dumps({"command": command}, indent=1) + "\n")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action")
    keep = sub.add_parser("store", help="store a sweep's results under benchmarks/results/NAME")
    keep.add_argument("results", type=Path)
    keep.add_argument("name")
    keep.add_argument("--command", required=True, help="the command that made them")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    if args.action == "store":
        print(store(args.results, args.name, args.command))
        return 0
    stale = sync([ROOT / doc for doc in DOCS], args.check)
    for path in stale:
        verb = "is stale: run python benchmarks/docs_tables.py" if args.check else "rewritten"
        print(f"{path.relative_to(ROOT)} {verb}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
