"""Batch scoring of the 50,000 unlabeled IMDB reviews with `python -m pipeline score`.

Runs the command as a user would (a fresh process, TFX's BulkInferrer under
LocalDagRunner) on imdb/unsup.csv.gz with --exclude-test-texts against the
IMDB test split, using the IMDB model pushed under outputs/serving/sentiment-imdb
when there is one, else --model-base-dir. Records rows read, dropped and
scored, the command's wall time and throughput, the BulkInferrer's own time,
and a check: --check-rows sampled records re-scored through the SavedModel's
serving_default must agree within 1e-5. Writes bench/results/bulk_inference_unsup.json.

    .venv/bin/python bench/bulk_inference.py --model-base-dir /tmp/score-out/serving/sentiment-polarity
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from components.versioned_pusher import list_versions  # noqa: E402
from pipeline import data_sources  # noqa: E402

IMDB_SERVING = ROOT / "outputs" / "serving" / "sentiment-imdb"


def model_facts(base: Path, version: int) -> dict:
    """What is known about the model: its run's test metrics when the run's summary is beside it."""
    facts = {"model_base_dir": str(base), "model_version": version, "trained_on": base.name.replace("sentiment-", "")}
    summary = base.parent.parent / "pipelines" / base.name / "run_summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        facts["run_summary"] = str(summary)
        facts["test_metrics"] = {k: data.get("metrics", {}).get(k) for k in ("binary_accuracy", "auc")}
    return facts


def check_against_serving_default(predictions: Path, model_dir: Path, rows: int, seed: int = 0) -> dict:
    import numpy as np
    import tensorflow as tf

    records = [json.loads(line) for line in predictions.open(encoding="utf-8")]
    sample = random.Random(seed).sample(records, min(rows, len(records)))
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    probabilities = []
    for start in range(0, len(sample), 64):
        texts = [r["text"] for r in sample[start:start + 64]]
        probabilities += list(signature(text=tf.constant(texts, dtype=tf.string))["probability"].numpy())
    diff = np.abs(np.array(probabilities) - np.array([r["probability"] for r in sample]))
    return {"rows": len(sample), "max_abs_diff": float(diff.max()),
            "labels_agree": all(int(p >= 0.5) == r["label"] for p, r in zip(probabilities, sample))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-dir", default="/tmp/score-out/serving/sentiment-polarity",
                        help="used when outputs/serving/sentiment-imdb has no version")
    parser.add_argument("--input", default=str(data_sources.SHARED_DATA_DIR / "imdb" / "unsup.csv.gz"))
    parser.add_argument("--work-dir", default="/tmp/bulk_inference_bench")
    parser.add_argument("--check-rows", type=int, default=1000)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "bulk_inference_unsup.json"))
    args = parser.parse_args()

    base = IMDB_SERVING if list_versions(str(IMDB_SERVING)) else Path(args.model_base_dir).resolve()
    version = list_versions(str(base))[-1]
    work = Path(args.work_dir)
    report = work / "report.json"
    command = [sys.executable, "-m", "pipeline", "score", "--dataset", "imdb", "--input", args.input,
               "--out", str(work / "out"), "--model-base-dir", str(base), "--exclude-test-texts",
               "--report-json", str(report)]
    load_before = os.getloadavg()
    started = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.time() - started
    summary = json.loads(report.read_text())
    result = {
        "command": " ".join(command[1:]),
        "input": args.input,
        **model_facts(base, version),
        "rows_read": summary["rows_read"],
        "dropped_test_texts": summary["dropped_test_texts"],
        "rows_scored": summary["rows_scored"],
        "share_positive": round(summary["share_positive"], 4),
        "mean_probability": round(summary["mean_probability"], 4),
        "wall_time_s": round(wall, 1),
        "rows_per_s": round(summary["rows_scored"] / wall, 1),
        "command_reported_wall_time_s": summary["wall_time_s"],
        "pipeline_wall_time_s": summary["pipeline_wall_time_s"],
        "bulk_inferrer_s": summary["bulk_inferrer_s"],
        "bulk_inferrer_rows_per_s": summary["bulk_inferrer_rows_per_s"],
        "check_vs_serving_default": check_against_serving_default(Path(summary["predictions"]), base / str(version),
                                                                  args.check_rows),
        "machine": {"cpus": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()},
        "beam": "DirectRunner in_memory, 1 worker (configs.DEFAULT_BEAM_ARGS)",
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
