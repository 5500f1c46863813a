"""Continuous training replayed: IMDB cut into spans, run span by span, warm and cold side by side.

1. `python -m pipeline make-spans` cuts the IMDB training and test reviews into
   S spans by review id; two more spans are drifted on purpose: one with the
   label balance changed (90 % positive), one from another domain (the
   polarity sentences laid out as an IMDB span).
2. For each ordinary span in turn, the pipeline runs twice, each in its own
   output directory: with training.warm_start=true and with it off (cold), both
   with a rolling window of `--window` spans. Running them interleaved gives
   both the same share of whatever else the machine does, so their Trainer
   times compare (a ratio within one run, not an absolute figure).
3. The drifted spans are then run on the warm pipeline, each after the last
   ordinary span: the drift check must stop them before training.

Writes bench/results/span_replay_<dataset>.json with, per span and mode:
examples, the span's test accuracy and AUC, blessed, pushed version, Trainer
wall time and epochs, the validation AUC after every epoch, what the warm
start carried over, and the drift figures; and per span, how many epochs the
warm run needed to reach the best validation AUC of the cold run ("warm_vs_cold";
with a fixed epoch budget both may run all epochs, so this is the measure of
"fewer epochs"). `--rescan` recomputes those from the logs of an earlier replay.

    python bench/replay_spans.py --work-dir /tmp/replay            # the whole scenario (~1-2 h)
    python bench/replay_spans.py --work-dir /tmp/replay --limit-per-span 500 --spans 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DRIFT_LINE = "Drift from the previous span: "  # what the validation gate prints


def cli(*args: str, log: Path) -> int:
    """`python -m pipeline ...` in a child process, its output to `log`; returns the exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.call([sys.executable, "-m", "pipeline", *args], cwd=ROOT, stdout=out,
                               stderr=subprocess.STDOUT)


def make_spans(args, spans_dir: Path, logs: Path) -> None:
    if (spans_dir / f"span-{args.spans + 2}").exists():
        return
    spans_dir.mkdir(parents=True, exist_ok=True)
    limit = ["--limit-per-span", str(args.limit_per_span)] if args.limit_per_span else []
    steps = [
        ("make-spans", "--dataset", args.dataset, "--spans", str(args.spans), "--out", str(spans_dir), *limit),
        # The label balance changed: the same kind of reviews, 90 % positive.
        ("make-spans", "--dataset", args.dataset, "--spans", "1", "--first-span", str(args.spans + 1),
         "--label-balance", "0.9", "--limit-per-span", str(args.limit_per_span or 25_000 // args.spans),
         "--out", str(spans_dir)),
        # Another domain: one-sentence snippets instead of reviews.
        ("make-spans", "--dataset", "polarity", "--spans", "1", "--first-span", str(args.spans + 2),
         "--out", str(spans_dir)),
    ]
    for index, step in enumerate(steps):
        if cli(*step, log=logs / f"make-spans-{index}.log"):
            raise SystemExit(f"make-spans failed: see {logs / f'make-spans-{index}.log'}")


EPOCH_LINE = re.compile(r"^\d+/\d+ - .* val_auc: ([0-9.]+)", re.MULTILINE)


def val_auc_per_epoch(log_text: str) -> list[float]:
    """The validation AUC after each epoch, from Keras' per-epoch lines in the run's log."""
    return [float(value) for value in EPOCH_LINE.findall(log_text)]


def epochs_to_reach(curve: list[float], target: float | None) -> int | None:
    """The first epoch (1-based) whose validation AUC reaches `target`."""
    if target is None:
        return None
    return next((index for index, value in enumerate(curve, start=1) if value >= target), None)


def compare_warm_and_cold(runs: list[dict]) -> list[dict]:
    """Per span: epochs the warm run needed to reach the validation AUC the cold run ended with."""
    rows = []
    by_key = {(r["span"], r["mode"]): r for r in runs}
    for (span, mode), warm in sorted(by_key.items()):
        cold = by_key.get((span, "cold"))
        if mode != "warm" or not cold or not cold.get("val_auc_per_epoch") or not warm.get("val_auc_per_epoch"):
            continue
        target = max(cold["val_auc_per_epoch"])
        rows.append({"span": span, "cold_best_val_auc": target, "cold_epochs": len(cold["val_auc_per_epoch"]),
                     "warm_epochs_to_reach_it": epochs_to_reach(warm["val_auc_per_epoch"], target),
                     "warm_best_val_auc": max(warm["val_auc_per_epoch"]),
                     "warm_first_epoch_val_auc": warm["val_auc_per_epoch"][0],
                     "cold_first_epoch_val_auc": cold["val_auc_per_epoch"][0],
                     "trainer_s_warm_over_cold": round(warm["trainer_wall_time_s"] / cold["trainer_wall_time_s"], 3)
                     if warm.get("trainer_wall_time_s") and cold.get("trainer_wall_time_s") else None})
    return rows


def run_span(args, spans_dir: Path, output_dir: Path, span: int, warm: bool, log: Path) -> dict:
    command = ["run", "--dataset", args.dataset, "--input", str(spans_dir), "--span", str(span),
               "--output-dir", str(output_dir), "--set", f"training.spans={args.window}",
               "--set", f"training.warm_start={'true' if warm else 'false'}", *args.extra]
    started = time.time()
    code = cli(*command, log=log)
    wall = time.time() - started
    summary_path = output_dir / "pipelines" / f"sentiment-{args.dataset}" / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if summary.get("span") != span:
        summary = {}  # a run that stopped early leaves the previous run's summary
    trainer = next((c for c in summary.get("components", []) if c["component"] == "Trainer"), {})
    pushed = summary.get("pushed_path")
    text = log.read_text(errors="replace")
    drift_lines = [line for line in text.splitlines() if line.startswith(DRIFT_LINE)]
    drift = json.loads(drift_lines[-1][len(DRIFT_LINE):]) if drift_lines else None
    stopped = None
    if code:
        start = text.find("Data validation failed")
        stopped = text[start:].strip()[:3000] if start >= 0 else "\n".join(text.strip().splitlines()[-3:])
    return {
        "span": span,
        "mode": "warm" if warm else "cold",
        "exit_code": code,
        "wall_time_s": round(wall, 1),
        "examples": summary.get("ingestion", {}).get("examples_out"),
        "trained_on_spans": summary.get("training_spans"),
        "test_accuracy": summary.get("metrics", {}).get("binary_accuracy"),
        "test_auc": summary.get("metrics", {}).get("auc"),
        "blessed": summary.get("blessed"),
        "pushed_version": int(Path(pushed).name) if pushed else None,
        "trainer_wall_time_s": trainer.get("wall_time_s"),
        "trainer_state": trainer.get("state"),
        "epochs_run": summary.get("epochs_run"),
        "warm_start": summary.get("warm_start"),
        "val_auc_per_epoch": val_auc_per_epoch(text),
        "drift": drift,
        "stopped_by": stopped,
        "log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="imdb")
    parser.add_argument("--spans", type=int, default=5)
    parser.add_argument("--window", type=int, default=2, help="training.spans: the rolling window")
    parser.add_argument("--limit-per-span", type=int, default=0)
    parser.add_argument("--work-dir", required=True, help="spans, outputs and logs go here")
    parser.add_argument("--modes", default="warm,cold")
    parser.add_argument("--fresh", action="store_true", help="delete earlier outputs under --work-dir first")
    parser.add_argument("--output", default=None,
                        help="results JSON (default bench/results/span_replay_<dataset>.json)")
    parser.add_argument("--rescan", action="store_true",
                        help="re-read the logs of an earlier replay into its results file, run nothing")
    parser.add_argument("extra", nargs="*", help="more `pipeline run` arguments, after --")
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    spans_dir, logs = work / "spans", work / "logs"
    if args.fresh:
        for mode in ("warm", "cold"):
            shutil.rmtree(work / mode, ignore_errors=True)
    output = Path(args.output) if args.output else RESULTS / f"span_replay_{args.dataset}.json"
    if args.rescan:
        results = json.loads(output.read_text())
        for entry in results["runs"]:
            entry["val_auc_per_epoch"] = val_auc_per_epoch(Path(entry["log"]).read_text(errors="replace"))
        results["warm_vs_cold"] = compare_warm_and_cold(results["runs"])
        output.write_text(json.dumps(results, indent=2))
        print(json.dumps(results["warm_vs_cold"], indent=2))
        return 0
    make_spans(args, spans_dir, logs)
    modes = args.modes.split(",")
    results = {"dataset": args.dataset, "spans": args.spans, "window": args.window,
               "limit_per_span": args.limit_per_span, "extra_args": args.extra, "cpus": os.cpu_count(),
               "timing": "warm and cold runs interleaved span by span on a shared 2-core machine: "
                         "compare their Trainer times as a ratio, not as absolute figures",
               "runs": []}

    def record(entry):
        results["runs"].append(entry)
        print(json.dumps({k: entry[k] for k in ("span", "mode", "exit_code", "examples", "test_accuracy",
                                                  "blessed", "pushed_version", "trainer_wall_time_s",
                                                  "epochs_run")}), flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))

    for span in range(1, args.spans + 1):
        for mode in modes:
            record(run_span(args, spans_dir, work / mode, span, mode == "warm", logs / f"{mode}-span-{span}.log"))
    for span, what in ((args.spans + 1, "label balance 90 % positive"), (args.spans + 2, "polarity sentences")):
        entry = run_span(args, spans_dir, work / modes[0], span, modes[0] == "warm",
                         logs / f"drifted-span-{span}.log")
        entry["drifted"] = what
        record(entry)
    results["warm_vs_cold"] = compare_warm_and_cold(results["runs"])
    output.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["warm_vs_cold"], indent=2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
