"""Every sweep behind the docs' tables, run or resumed by one command, then the tables rewritten.

    python benchmarks/mini_docs.py list                     # each sweep: rows, code versions, CPU time
    python benchmarks/mini_docs.py run --all [--runs runs/mini-docs]
    python benchmarks/mini_docs.py run mini-b2n/peers [--methods maple,promptsrc]

`run` trains what is missing in the runs folder (every sweep is resumable: a finished
evaluation is never repeated), stores each named sweep's records in
`benchmarks/results/NAME/` (`docs_tables.store`'s format, its source.json naming this command)
and rewrites every generated part of the docs (`docs_tables.py`). The sweeps of one protocol
share one folder (`RUNS/base2new`, `RUNS/fewshot`, ...), so a run that two tables show (CoOp
seed 1 on mini_shapes in the seed methods' table and in DePT's) is trained once and is the same
run in both. `--methods` reruns only some methods (or arms) of a sweep: their fresh records
replace the stored ones with the same key, the others stay as stored, and the table's first
line lists every code version its rows come from. Two `run` processes may work at once on
sweeps of different folders (`--runs` apart, or different protocols); a second process on the
same folder stops at once, naming the holder.

`--all` runs every sweep but the decision records (`list` marks them): the learning-rate check
(`mini-recipe-check`), which chose the current mini recipes and is rerun only when named (its
"mini" column is then the chosen recipe), and the looks tried on replicas (`mini-looks-tried`,
worlds we do not ship). `list` prints each sweep's CPU time as its stored records measured it
(one thread per run); its last line, each shared run counted once, is a full `run --all`'s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import docs_tables
import mini_seed_papers

from vlprompt.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from vlprompt.quickstart import ALL_MINI_DATASETS, QUICKSTART_DATASETS, QUICKSTART_METHODS
from vlprompt.report import load_results
from vlprompt.run_folder import RESULTS_FILE

RESULTS_DIR = docs_tables.RESULTS_DIR
FEWSHOT_DATASETS = ("mini_objects", "mini_patterns", "mini_sizes")
ALL_SHOTS = (1, 2, 4, 8, 16)


def command(name: str, methods: Sequence[str] | None = None) -> str:
    """The command that (re)makes sweep NAME, as its source.json names it."""
    only = f" --methods {','.join(methods)}" if methods else ""
    return f"python benchmarks/mini_docs.py run {name}{only}"


@dataclass(frozen=True)
class BenchSweep:
    """A selection of one protocol's shared sweep folder (`mini_bench`, the `mini` preset)."""

    protocol: str
    methods: tuple[str, ...]
    datasets: tuple[str, ...] = ALL_MINI_DATASETS
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: tuple[int, ...] = (16,)
    decision: bool = False

    def run(self, runs: Path, methods: Sequence[str]) -> list[dict]:
        from vlprompt.quickstart import mini_bench

        folder = runs / self.protocol
        mini_bench(self.protocol, folder, methods=list(methods), datasets=list(self.datasets),
                   seeds=list(self.seeds), shots=list(self.shots), plots=False,
                   progress=False)  # fmt: skip
        return [r for r in load_results(folder / RESULTS_FILE) if self.holds(r, methods)]

    def run_id(self, record: dict) -> str:
        return f"{self.protocol}/{record['run']}"

    def holds(self, record: dict, methods: Sequence[str]) -> bool:
        return (record["method"] in methods and record["source"] in self.datasets
                and record["seed"] in self.seeds and record["shots"] in self.shots)  # fmt: skip


@dataclass(frozen=True)
class QuickstartSweep:
    """`vlprompt quickstart` itself (what `make demo` prints), in its own folder."""

    methods: tuple[str, ...] = QUICKSTART_METHODS
    decision: bool = False

    def run(self, runs: Path, methods: Sequence[str]) -> list[dict]:
        from vlprompt.quickstart import quickstart

        folder = runs / "quickstart"
        quickstart(folder, methods=list(methods), datasets=QUICKSTART_DATASETS, log=lambda _: None)
        return [r for r in load_results(folder / RESULTS_FILE) if r["method"] in methods]

    def run_id(self, record: dict) -> str:
        return f"quickstart/{record['run']}"


@dataclass(frozen=True)
class SeedPaperSweep:
    """One experiment of `mini_seed_papers.py`; its arms are the methods."""

    experiment: str
    decision: bool = False

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(arm.label for arm in mini_seed_papers.EXPERIMENTS[self.experiment].arms)

    def run(self, runs: Path, methods: Sequence[str]) -> list[dict]:
        experiment = mini_seed_papers.EXPERIMENTS[self.experiment]
        arms = tuple(arm for arm in experiment.arms if arm.label in methods)
        combined = mini_seed_papers.run_experiment(self.experiment, runs / "seed-papers",
                                                   replace(experiment, arms=arms))  # fmt: skip
        return load_results(combined / RESULTS_FILE)

    def run_id(self, record: dict) -> str:
        return f"seed-papers/{self.experiment}/{record['method']}/{record['run']}"


@dataclass(frozen=True)
class ScriptSweep:
    """A benchmark script's own records (`records.jsonl`, keyed by `key_fields`)."""

    run_records: Callable[[Path, Sequence[str]], list[dict]]
    methods: tuple[str, ...]
    key_fields: tuple[str, ...]
    decision: bool = False
    file: str = "records.jsonl"

    def run(self, runs: Path, methods: Sequence[str]) -> list[dict]:
        return self.run_records(runs, methods)

    def run_id(self, record: dict) -> str:
        return record_key(self, record)


def _recipe_check(runs: Path, methods: Sequence[str]) -> list[dict]:
    import mini_recipe_check

    folder = runs / "recipe-check"
    args = argparse.Namespace(runs_dir=folder, methods=[m for m in methods if m != "zsclip"],
                              datasets=list(mini_recipe_check.DEFAULT_DATASETS), seeds=[1])  # fmt: skip
    mini_recipe_check.run_checks(args)
    return mini_recipe_check.gather(folder)


def _zero_shot(runs: Path, methods: Sequence[str]) -> list[dict]:
    from vlprompt._version import code_version
    from vlprompt.mini import load_mini_clip
    from vlprompt.mini.probe import zeroshot_rows

    start = time.perf_counter()
    rows = zeroshot_rows(load_mini_clip())
    seconds = (time.perf_counter() - start) / len(rows)
    return [{**row, "wall_s": seconds, "vlprompt_version": code_version()} for row in rows]


def _crop_check(runs: Path, methods: Sequence[str]) -> list[dict]:
    import mini_crop_on_val

    return mini_crop_on_val.check(ALL_MINI_DATASETS, runs_dir=runs / "crop-check")


def replica_script(script: str, *options: str,
                   trains: bool = False) -> Callable[[Path, Sequence[str]], list[dict]]:  # fmt: skip
    """A replica script (`mini_headroom.py`, `mini_world_variants.py`) in its own process: it
    swaps the registry's data sets for replicas, which must not leak into the next sweep.
    `trains`: the script trains runs, in an `--output-dir` of its folder."""

    def run_records(runs: Path, methods: Sequence[str]) -> list[dict]:
        digest = hashlib.sha1("\0".join(options).encode()).hexdigest()[:12]
        folder = runs / "replicas" / Path(script).stem / digest
        folder.mkdir(parents=True, exist_ok=True)
        records = folder / "records.jsonl"
        here = Path(__file__).resolve().parent
        subprocess.run([sys.executable, str(here / script), *options, "--records", str(records),
                        *(["--output-dir", str(folder / "runs")] if trains else [])],
                       check=True)  # fmt: skip
        return read_jsonl(records)

    return run_records


# The looks tried on replicas before the data sets got theirs (docs/mini-world.md, "How they
# were chosen"): (data set, look, style); None is the data set's own look, the one kept.
LOOKS_TRIED = (
    *((d, None, None) for d in ("mini_shapes", "mini_patterns", "mini_counts")),
    ("mini_sizes", {"color": "white", "pattern": "plain", "background": "night"}, None),
    ("mini_sizes", {"color": "white", "pattern": "plain", "background": "night"}, "noisy"),
    ("mini_sizes", {"color": "white", "pattern": "outlined", "background": "night"}, None),
    ("mini_sizes", {"color": "white", "pattern": "plain", "background": "sand"}, None),
    ("mini_sizes", {"color": "white", "pattern": "dotted", "background": "night"}, None),
    ("mini_sizes", {"color": "white", "pattern": "striped", "background": "night"}, None),
    ("mini_sizes", {"color": "red", "pattern": "plain", "background": "sky"}, None),
    ("mini_sizes", None, None),
    ("mini_objects", {"pattern": "plain", "size": "large", "background": "night"}, None),
    ("mini_objects", {"pattern": "plain", "size": "large", "background": "night"}, "noisy"),
    ("mini_objects", {"pattern": "plain", "size": "small", "background": "night"}, None),
    ("mini_objects", {"pattern": "plain", "size": "large", "background": "sand"}, None),
    ("mini_objects", {"pattern": "outlined", "size": "small"}, None),
    ("mini_objects", {"pattern": "outlined", "size": "small", "background": "night"}, None),
    ("mini_objects", {"pattern": "dotted", "size": "small"}, None),
    ("mini_objects", {"pattern": "striped", "size": "small"}, None),
    ("mini_objects", None, None),
)
REPLICA_OFFSETS = (1000, 2000)


def _looks_tried(runs: Path, methods: Sequence[str]) -> list[dict]:
    records = []
    for dataset, look, style in LOOKS_TRIED:
        for offset in REPLICA_OFFSETS:
            options = ["--datasets", dataset, "--seed-offset", str(offset)]
            options += ["--look", json.dumps(look, sort_keys=True)] if look is not None else []
            options += ["--style", style] if style else []
            records += replica_script("mini_world_variants.py", *options, trains=True)(
                runs, methods
            )
    return records


def _sweeps() -> dict[str, object]:
    import mini_recipe_check

    b2n = "base2new"
    return {
        "quickstart": QuickstartSweep(),
        "mini-b2n/seed": BenchSweep(b2n, ("zsclip", "coop", "cocoop", "kgcoop", "prograd", "rpo")),
        "mini-b2n/peers": BenchSweep(
            b2n,
            ("ivlp", "maple", "promptsrc", "tcp", "clip_adapter", "tip_adapter", "tip_adapter_f"),
        ),
        "mini-b2n/lora": BenchSweep(b2n, ("clip_lora",)),
        "mini-b2n/anchors": BenchSweep(b2n, ("mmrl", "skiptuning", "two_stage")),
        "mini-b2n/deep-5-seeds": BenchSweep(
            b2n, ("zsclip", "ivlp", "maple", "promptsrc"), seeds=(1, 2, 3, 4, 5)
        ),
        "mini-b2n/dept": BenchSweep(b2n, ("coop", "coop+dept", "kgcoop", "kgcoop+dept")),
        "mini-b2n/dept-cocoop": BenchSweep(b2n, ("cocoop", "cocoop+dept")),
        "mini-b2n/dept-deep": BenchSweep(
            b2n, ("maple", "maple+dept", "promptsrc", "promptsrc+dept")
        ),
        "mini-fewshot/seed": BenchSweep(
            "fewshot",
            ("zsclip", "linear_probe", "coop", "cocoop", "kgcoop", "prograd", "rpo"),
            FEWSHOT_DATASETS,
            shots=ALL_SHOTS,
        ),
        "mini-fewshot/adapters": BenchSweep(
            "fewshot",
            ("zsclip", "tip_adapter", "tip_adapter_f", "clip_adapter", "clip_lora"),
            FEWSHOT_DATASETS,
            shots=ALL_SHOTS,
        ),
        "mini-fewshot/fitted": BenchSweep(
            "fewshot", ("gda", "lp_plus_plus", "clap"), FEWSHOT_DATASETS, shots=ALL_SHOTS
        ),
        "mini-fewshot/two_stage": BenchSweep(
            "fewshot", ("two_stage",), FEWSHOT_DATASETS, shots=ALL_SHOTS
        ),
        "mini-dg/seed": BenchSweep(
            "dg",
            ("zsclip", "coop", "cocoop", "kgcoop", "prograd", "rpo"),
            ("mini_objects", "mini_shapes"),
        ),
        **{f"seed-papers/{name}": SeedPaperSweep(name) for name in mini_seed_papers.EXPERIMENTS},
        "mini-zero-shot": ScriptSweep(_zero_shot, ("zsclip",), ("dataset", "classes", "style")),
        "mini-crop-check": ScriptSweep(
            _crop_check, ("coop",), ("method", "dataset", "seed", "crop_min_scale")
        ),
        "mini-headroom": ScriptSweep(
            replica_script("mini_headroom.py"), ("head",), ("dataset", "look", "seed_offset")
        ),
        "mini-replicas": ScriptSweep(
            replica_script("mini_world_variants.py", trains=True),
            ("coop",),
            ("dataset", "look", "style", "seed_offset"),
        ),
        "mini-replicas/whole-world": ScriptSweep(
            replica_script("mini_world_variants.py", "--look", "{}", trains=True),
            ("coop",),
            ("dataset", "look", "style", "seed_offset"),
        ),
        "mini-looks-tried": ScriptSweep(
            _looks_tried, ("coop",), ("dataset", "look", "style", "seed_offset"), decision=True
        ),
        "mini-recipe-check": ScriptSweep(
            _recipe_check,
            ("zsclip", *mini_recipe_check.DEFAULT_METHODS),
            ("method", "dataset", "seed", "variant"),
            decision=True,
        ),
    }


SWEEPS = _sweeps()


def record_key(sweep: object, record: dict) -> str:
    fields = getattr(sweep, "key_fields", ("key",))
    return "|".join(str(record.get(f)) for f in fields)


def stored_file(name: str) -> str:
    """The stored records' file name: a sweep's results.jsonl, or a script's records.jsonl."""
    return getattr(SWEEPS[name], "file", RESULTS_FILE)


def stored_records(name: str) -> list[dict]:
    file = stored_file(name)
    path = RESULTS_DIR / name / file
    if not path.is_file():
        return []
    return load_results(path) if file == RESULTS_FILE else read_jsonl(path)


def merged(name: str, fresh: Sequence[dict]) -> list[dict]:
    """The stored records of sweep NAME with `fresh` ones replacing those of the same key, in
    the stored order, new keys after them."""
    sweep = SWEEPS[name]
    by_key = {record_key(sweep, r): docs_tables.portable(r) for r in fresh}
    out = [by_key.pop(record_key(sweep, r), r) for r in stored_records(name)]
    return out + list(by_key.values())


def store(name: str, fresh: Sequence[dict], methods: Sequence[str] | None) -> Path:
    """Merge `fresh` into sweep NAME's stored records; name the command in its source.json
    (the earlier command too, for the rows a partial rerun kept)."""
    folder = RESULTS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(folder / stored_file(name), merged(name, fresh))
    made_with = command(name, methods)
    source = folder / "source.json"
    if methods and not set(methods) >= set(SWEEPS[name].methods) and source.is_file():
        earlier = json.loads(source.read_text(encoding="utf-8"))["command"]
        if made_with not in earlier:
            made_with = f"{earlier}; then {made_with}"
    atomic_write_text(source, json.dumps({"command": made_with}, indent=1) + "\n")
    return folder


def run_seconds(names: Sequence[str]) -> dict[str, float]:
    """Each run of the sweeps NAMES, once (sweeps of one folder share runs), with its time as
    its records measured it: the longest `wall_s` of its evaluations (its training, if any)."""
    seconds: dict[str, float] = {}
    for name in names:
        for r in stored_records(name):
            run = SWEEPS[name].run_id(r)
            seconds[run] = max(seconds.get(run, 0.0), float(r.get("wall_s") or 0.0))
    return seconds


def cpu_minutes(names: Sequence[str]) -> float:
    return sum(run_seconds(names).values()) / 60


def versions(records: Sequence[dict]) -> list[str]:
    return sorted({str(r.get("vlprompt_version", "unrecorded")) for r in records})


def label(name: str) -> str:
    """The sweep's name, marked when it is a decision record."""
    return name + (" (decision record: run by name only)" if SWEEPS[name].decision else "")


def describe(name: str) -> str:
    records = stored_records(name)
    return (f"{label(name)}: {len(records)} records, {cpu_minutes([name]):.1f} CPU min, "
            f"vlprompt {', '.join(versions(records)) or '-'}")  # fmt: skip


def render_sweeps() -> str:
    """Every sweep as a table: its records, its runs' CPU time, the code versions."""
    everyday = [n for n in SWEEPS if not SWEEPS[n].decision]
    lines = [
        "Generated by `python benchmarks/docs_tables.py` from `benchmarks/results/*/` "
        "(`benchmarks/mini_docs.py list`). CPU minutes: each run's wall time as its records "
        "measured it (one thread; a run shared by two tables counted once). Runs made while "
        "other sweeps shared the 2-core machine are slower than alone, up to twice.",
        "",
        "| sweep | records | CPU min | vlprompt versions of its rows |",
        "|---|---|---|---|",
    ]
    for name in SWEEPS:
        records = stored_records(name)
        lines.append(f"| {label(name)} | {len(records)} | {cpu_minutes([name]):.1f} | "
                     f"{', '.join(v.removeprefix('0.1.0+') for v in versions(records))} |")  # fmt: skip
    lines.append(f"| **`run --all`** | | **{cpu_minutes(everyday):.0f}** | |")
    return "\n".join(lines) + "\n"


def run(names: Sequence[str], runs: Path, methods: Sequence[str] | None) -> None:
    for name in names:
        sweep = SWEEPS[name]
        chosen = [m for m in sweep.methods if not methods or m in methods]
        if not chosen:
            raise SystemExit(f"{name}: none of --methods {','.join(methods)} is in it "
                             f"(its methods: {','.join(sweep.methods)})")  # fmt: skip
        fresh = sweep.run(runs, chosen)
        folder = store(name, fresh, methods if methods else None)
        print(f"{name}: {len(fresh)} fresh records stored in {folder}", flush=True)
    try:
        rewritten = docs_tables.sync([docs_tables.ROOT / d for d in docs_tables.DOCS], check=False)
    except ValueError as error:  # another table's results are not stored yet
        raise SystemExit(f"stored; the docs are not rewritten: {error}") from None
    for path in rewritten:
        print(f"{path.relative_to(docs_tables.ROOT)} rewritten")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="each sweep: stored records, CPU time, code versions")
    go = sub.add_parser("run", help="run or resume sweeps, store them, rewrite the docs")
    go.add_argument("names", nargs="*", help=f"sweeps, of: {', '.join(SWEEPS)}")
    go.add_argument("--all", action="store_true", help="every sweep but the decision records")
    go.add_argument("--methods", help="comma-separated: rerun only these methods (or arms)")
    go.add_argument("--runs", type=Path, default=Path("runs/mini-docs"))
    args = parser.parse_args(argv)
    if args.action == "list":
        for name in SWEEPS:
            print(describe(name))
        total = cpu_minutes([n for n in SWEEPS if not SWEEPS[n].decision])
        print(f"run --all: about {total:.0f} CPU min (the stored runs' own times, each once)")
        return 0
    unknown = [n for n in args.names if n not in SWEEPS]
    if unknown or not (args.names or args.all):
        parser.error(f"name sweeps ({', '.join(SWEEPS)}) or --all"
                     + (f"; unknown: {', '.join(unknown)}" if unknown else ""))  # fmt: skip
    names = list(args.names) or [n for n in SWEEPS if not SWEEPS[n].decision]
    methods = args.methods.split(",") if args.methods else None
    run(names, args.runs, methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
