"""Calibration and the evaluation report on the mini world: zero-shot CLIP and CoOp.

    python benchmarks/mini_calibration.py [--dataset mini_objects] [--methods zsclip,coop]
        [--output-dir runs/calibration]

Trains each method (mini-world settings, 16 shots, all classes, seed 1), fits the temperature
and the conformal thresholds (LAC, APS at 0.9 and 0.95) on the validation split and prints, on
the test split: accuracy, ECE before/after the temperature, and each threshold's coverage and
mean set size. Writes the last method's report (`vlprompt.diagnosis.write_report`) into
`<output-dir>/<method>/eval/` and its reliability diagram as `<output-dir>/reliability.png`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import vlprompt
from vlprompt import calibration as cal
from vlprompt import diagnosis as dg


def logits_and_labels(run, items):
    from vlprompt.evaluation import compute_logits

    logits, _ = compute_logits(run.method, items)
    return logits.numpy(), np.array([d.label for d in items])


def main() -> None:
    from vlprompt.data import build_dataset
    from vlprompt.quickstart import MINI_CROP_MIN_SCALE, MINI_SETTINGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mini_objects")
    parser.add_argument("--methods", default="zsclip,coop")
    parser.add_argument("--output-dir", default="runs/calibration")
    args = parser.parse_args()
    out = Path(args.output_dir)
    zero_shot = None
    for method in args.methods.split(","):
        run = vlprompt.train(
            method, args.dataset, output_dir=out / method, shots=16, seed=1, echo=False,
            progress=False, crop_min_scale=MINI_CROP_MIN_SCALE, **MINI_SETTINGS.get(method, {}),
        )  # fmt: skip
        splits = build_dataset(args.dataset, run.config.root, shots=16, seed=1)
        val, y_val = logits_and_labels(run, splits.val)
        test, y_test = logits_and_labels(run, splits.test)
        rec = cal.fit_calibration(val, y_val, eval_logits=test, eval_labels=y_test)
        acc = 100 * float((test.argmax(axis=1) == y_test).mean())
        zero_shot = acc if method == "zsclip" else zero_shot
        print(f"{method}: accuracy {acc:.1f}% on {len(y_test)} test images; T = "
              f"{rec.temperature:.2f} from {len(y_val)} val images; ECE on test "
              f"{100 * rec.ece_before:.1f}% -> {100 * rec.ece_after:.1f}%")  # fmt: skip
        probs = cal.softmax(test, rec.temperature)
        for thr in rec.conformal:
            sets = cal.prediction_sets(probs, thr)
            covered = sets[np.arange(len(y_test)), y_test].mean()
            print(f"  {thr.score} {thr.coverage:g}: test coverage {covered:.3f}, mean set size "
                  f"{sets.sum(axis=1).mean():.2f} ({thr.note})")  # fmt: skip
    files = dg.write_report(
        out / method / "eval",
        test,
        y_test,
        splits.classnames,
        [d.path for d in splits.test],
        zero_shot_accuracy=zero_shot if method != "zsclip" else None,
    )
    print(files[dg.SUMMARY_TXT].read_text(), end="")
    before = cal.reliability_bins(cal.softmax(test), y_test)
    after = cal.reliability_bins(probs, y_test)
    fig = cal.reliability_diagram(before, after, rec.temperature)
    fig.savefig(out / "reliability.png")


if __name__ == "__main__":
    main()
