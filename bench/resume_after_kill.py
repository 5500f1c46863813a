"""Does a Trainer resumed after a SIGKILL end where an uninterrupted one does?

Runs `python -m pipeline run` on the first --rows rows of the polarity CSV
twice, in two output directories with the same config and seed: once
uninterrupted, once SIGKILLed as soon as the Trainer's checkpoint of epoch
--kill-after-epoch is written and then run again (it resumes from it). Writes
both runs' test metrics, validation history and the epochs each training ran
to bench/results/resume_after_kill.json.

    .venv/bin/python bench/resume_after_kill.py --rows 3000 --epochs 4
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import configs  # noqa: E402
from tests.conftest import SMALL_MODEL, real_polarity_lines, write_gz_lines  # noqa: E402

PIPELINE = "sentiment-polarity"


def run_command(data: Path, output_dir: Path, epochs: int) -> list[str]:
    overrides = {**SMALL_MODEL, "training.epochs": str(epochs), "training.early_stopping_patience": str(epochs),
                 "evaluation.min_accuracy": "0"}
    args = [sys.executable, "-m", "pipeline", "run", "--dataset", "polarity", "--input", str(data),
            "--output-dir", str(output_dir)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return args


def result(output_dir: Path) -> dict:
    root = output_dir / "pipelines" / PIPELINE
    summary = json.loads((root / "run_summary.json").read_text())
    [history_file] = glob.glob(str(root / "Trainer" / "model_run" / "*" / "history.json"))
    history = json.loads(Path(history_file).read_text())
    return {"test_metrics": {k: summary["metrics"][k] for k in ("binary_accuracy", "auc")},
            "epochs_run": history["epochs_run"], "val_accuracy": history["val_accuracy"],
            "val_auc": history.get("val_auc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--kill-after-epoch", type=int, default=2, help="1-based: epochs finished before the kill")
    parser.add_argument("--work-dir", default="/tmp/resume_after_kill")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "resume_after_kill.json"))
    args = parser.parse_args()
    work = Path(args.work_dir)
    data = write_gz_lines(work / "rt-polarity.csv.gz", real_polarity_lines(args.rows))

    started = time.time()
    subprocess.run(run_command(data, work / "uninterrupted", args.epochs), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_dir = work / "killed"
    process = subprocess.Popen(run_command(data, killed_dir, args.epochs), cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The Keras checkpoint's state file names the checkpoints written so far.
    state = str(killed_dir / "pipelines" / PIPELINE / "Trainer" / "checkpoints" / "**" / "checkpoint")
    while process.poll() is None:
        files = glob.glob(state, recursive=True)
        if files and f"ckpt-{args.kill_after_epoch}" in Path(files[0]).read_text():
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise SystemExit(f"the run ended (exit {process.returncode}) before epoch {args.kill_after_epoch}'s checkpoint")
    subprocess.run(run_command(data, killed_dir, args.epochs), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = {"rows": args.rows, "epochs": args.epochs, "killed_after_epoch": args.kill_after_epoch,
              "seed": configs.POLARITY.training.seed, "uninterrupted": result(work / "uninterrupted"),
              "killed_and_resumed": result(killed_dir), "wall_time_s": round(time.time() - started, 1)}
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
