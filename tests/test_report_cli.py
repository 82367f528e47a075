"""`vlprompt report SWEEP`: the summary rewritten from results.jsonl, the published numbers
beside a sweep's, the methods' order, the recipe read from the runs' config.json files, and
LaTeX's special characters in names."""

from __future__ import annotations

import json

import pytest

from vlprompt.api import resolve_config
from vlprompt.cli import main
from vlprompt.report import write_summary

PETS_H = {1: (96.0, 95.0), 2: (96.5, 95.5), 3: (97.0, 96.0)}  # seed: (base, new)


def rec(method, dataset, subsample, seed, accuracy, backbone="ViT-B-16", protocol="base2new"):
    return dict(
        protocol=protocol, method=method, source=dataset, dataset=dataset, subsample=subsample,
        seed=seed, accuracy=accuracy, shots=16, split="test", backbone=backbone,
        key=f"{protocol}/{dataset}/{method}/shots16_seed{seed}|{dataset}:{subsample}:test",
    )  # fmt: skip


def sweep(tmp_path, methods=("rpo", "zsclip", "coop"), datasets=("oxford_pets", "dtd"),
          backbone="ViT-B-16"):  # fmt: skip
    records = []
    for shift, method in enumerate(methods):
        for dataset in datasets:
            for seed, (base, new) in PETS_H.items():
                records += [rec(method, dataset, "base", seed, base - shift, backbone),
                            rec(method, dataset, "new", seed, new - 2 * shift, backbone)]  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_published_fills_from_the_table_on_a_benchmark_sweep(tmp_path, capsys):
    sweep(tmp_path)
    assert main(["report", str(tmp_path), "--published", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    # rpo's H on oxford_pets: harmonic mean of the seed means 96.5 and 95.5, against RPO's 96.05
    assert "| rpo | oxford_pets | 16 | H | 96.00 ± 0.50 | 96.05 | -0.05 | paper table |" in printed
    assert "| rpo | dtd | 16 | H | 96.00 ± 0.50 | 68.61 | +27.39 | paper table |" in printed
    assert "coop | oxford_pets" not in printed  # nothing published per data set for CoOp
    assert "## Published numbers" in (tmp_path / "summary.md").read_text()


def test_published_sets_a_dept_label_beside_depts_rows_not_its_base_methods(tmp_path, capsys):
    from vlprompt.published import ELEVEN

    sweep(tmp_path, methods=("coop", "coop+dept"), datasets=ELEVEN)
    assert main(["report", str(tmp_path), "--published", "--no-plots"]) == 0
    lines = capsys.readouterr().out.splitlines()
    dept = [x for x in lines if x.startswith("| coop+dept | average | 16 | base |")]
    coop = [x for x in lines if x.startswith("| coop | average | 16 | base |")]
    assert len(dept) == len(coop) == 1
    assert "| 83.66 |" in dept[0] and "| 82.69 |" in coop[0]  # DePT's README / CoOp's row


def test_published_on_a_mini_sweep_says_there_is_nothing_to_compare(tmp_path, capsys):
    sweep(tmp_path, datasets=("mini_shapes", "mini_scenes"), backbone="vlprompt-mini-vit")
    assert main(["report", str(tmp_path), "--published", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "Nothing published to compare" in printed and "mini_scenes, mini_shapes" in printed
    assert "| published |" not in printed


def test_without_published_there_is_no_published_part(tmp_path, capsys):
    sweep(tmp_path)
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    assert "Published numbers" not in capsys.readouterr().out
    assert "Published numbers" not in (tmp_path / "summary.md").read_text()


def _method_rows(text, first_column="|"):
    return [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith(first_column)]  # fmt: skip


def test_methods_order_is_the_users_then_zero_shot_then_by_name(tmp_path, capsys):
    sweep(tmp_path, methods=("rpo", "coop", "zsclip", "kgcoop"))
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    table = capsys.readouterr().out.split("\n\n")[1]
    assert _method_rows(table)[2:] == ["zsclip", "coop", "kgcoop", "rpo"]  # after the header
    assert main(["report", str(tmp_path), "--no-plots", "--latex",
                 "--methods-order", "rpo,kgcoop"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    table = out.split("\n\n")[1]
    assert _method_rows(table)[2:] == ["rpo", "kgcoop", "zsclip", "coop"]
    tex = out[out.index("\\begin{table}") :]
    at = [tex.index(f"& {m} &") for m in ("rpo", "kgcoop", "zsclip", "coop")]
    assert at == sorted(at)


def test_an_unknown_method_in_the_order_is_one_clear_error(tmp_path, capsys):
    sweep(tmp_path)
    assert main(["report", str(tmp_path), "--no-plots", "--methods-order", "rpo,maple"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "maple" in err and "coop, rpo, zsclip" in err


def test_a_folder_without_results_is_one_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "vlprompt bench" in capsys.readouterr().err


def _run_folder(sweep_dir, method, seed, preset=None, **overrides):
    config = resolve_config(method, "oxford_pets", backbone="ViT-B-16", pretrained="openai",
                            shots=16, seed=seed, subsample="base", preset=preset,
                            overrides=overrides).to_dict()  # fmt: skip
    config["engine"] = dict(config["engine"]) if isinstance(config["engine"], dict) else {}
    run = sweep_dir / "base2new" / "oxford_pets" / method / f"shots16_seed{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    return config


def test_the_summary_header_holds_the_recipe_from_the_runs_configs(tmp_path):
    sweep(tmp_path, methods=("coop", "rpo"), datasets=("oxford_pets",))
    for seed in (1, 2, 3):
        config = _run_folder(tmp_path, "coop", seed, preset="coop_base2new", lr=0.01)
        _run_folder(tmp_path, "rpo", seed)
    text = write_summary(tmp_path, plots=False).markdown.read_text()
    header = text[: text.index("## Base-to-new")]
    assert "Read from the `config.json` of the 6 run folders" in header
    coop = next(line for line in header.splitlines() if line.startswith("| coop |"))
    assert "| 3 | `coop_base2new` | `lr=0.01` | `ViT-B-16` | `openai` |" in coop
    assert f"`{config['vlprompt_version']}`" in coop
    rpo = next(line for line in header.splitlines() if line.startswith("| rpo |"))
    assert "| 3 | `none` | - | `ViT-B-16` |" in rpo  # the defaults: nothing set on the command


def test_without_run_folders_the_recipe_says_it_is_unknown(tmp_path):
    sweep(tmp_path)
    text = write_summary(tmp_path, plots=False).markdown.read_text()
    assert "the recipe is unknown" in text


@pytest.mark.parametrize("name", ["my_method%&#", "data_set#1&2%"])
def test_latex_specials_in_names_are_escaped(tmp_path, name):
    method, dataset = (name, "d") if name.startswith("my") else ("rpo", name)
    sweep(tmp_path, methods=(method, "zsclip"), datasets=(dataset, "e"))
    tex = write_summary(tmp_path, plots=False).tex.read_text()
    escaped = name.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")
    assert escaped in tex and name not in tex
    markdown = (tmp_path / "summary.md").read_text()
    assert name in markdown  # Markdown shows the name as it is


@pytest.mark.parametrize("posthoc, shown", [("wilcoxon", False), ("nemenyi", True)])
def test_posthoc_reaches_the_ranks_part(tmp_path, posthoc, shown):
    sweep(tmp_path)  # 3 methods, 2 data sets: ranks and a CD
    assert main(["report", str(tmp_path), "--no-plots", "--posthoc", posthoc]) == 0
    assert ("Nemenyi's critical difference, CD =" in (tmp_path / "summary.md").read_text()) is shown


def test_a_run_whose_defaults_cannot_be_resolved_still_gives_a_summary(tmp_path):
    sweep(tmp_path, methods=("coop", "rpo"), datasets=("oxford_pets",))
    config = _run_folder(tmp_path, "coop", 1)
    plugin = tmp_path / "base2new" / "oxford_pets" / "plugin_method" / "shots16_seed1"
    plugin.mkdir(parents=True)
    (plugin / "config.json").write_text(json.dumps(dict(config, method="plugin_method")))
    header = write_summary(tmp_path, plots=False).markdown.read_text().split("## Base-to-new")[0]
    assert "| plugin_method | 1 | `none` | - (unknown for oxford_pets) |" in header
