"""Does `python -m pipeline monitor` see skew where there is some, and only there?

Serves the pushed model of `--output-dir` with the real server and request
logging (`serve --log-requests`), sends three kinds of traffic, one server run
and one log directory each, then runs the monitor command on each window:

* same:       held-out texts of the model's own dataset (for polarity: the
              test split of the Examples artifact the model was trained from;
              for IMDB: a sample of imdb/test.csv.gz), first half -> expect no alarm;
* same-later: the second half -> expect no alarm, no drift against "same" either;
* other:      texts of the other dataset (IMDB reviews to a polarity model,
              polarity sentences to an IMDB model) -> expect skew (and drift);
* skewed:     the held-out texts, 90 % of one class -> expect the
              predicted-label finding.

The windows run in that order in one monitoring directory, so each window
after the first is also compared with the one before it (drift). Every
distance, bound, exit code and printed line goes to bench/results/monitor_skew_<dataset>.json.

    .venv/bin/python bench/monitor_skew.py --dataset polarity --output-dir /tmp/mon-out
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS_DIR = ROOT / "bench" / "results"
DATA = Path(os.environ.get("SENTIMENT_DATA_DIR", ROOT.parent / "shared" / "data"))
ENV = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")


def csv_rows(path: Path) -> list[tuple[str, int]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(f)]


def split_rows(examples_uri: str, split: str) -> list[tuple[str, int]]:
    """(text, label) of every example in <examples_uri>/Split-<split>."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append((feature["text"].bytes_list.value[0].decode("utf-8"), int(feature["label"].int64_list.value[0])))
    return rows


def one_class_heavy(rows: list[tuple[str, int]], share: float, label: int, rng: random.Random) -> list[str]:
    major = [t for t, y in rows if y == label]
    minor = [t for t, y in rows if y != label]
    minor = rng.sample(minor, min(len(minor), round(len(major) * (1 - share) / share)))
    texts = major + minor
    rng.shuffle(texts)
    return texts


def serve_and_send(serving_dir: Path, log_dir: Path, texts: list[str], batch: int) -> dict:
    """Starts the server with --log-requests, sends `texts`, stops it with SIGTERM; the logger's counters."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--model-base-dir", str(serving_dir), "--model-name", "bench",
         "--port", "0", "--log-requests", str(log_dir), "--log-seed", "0"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = None
        for line in proc.stdout:
            if line.startswith("Serving "):
                base = line.split(" on ", 1)[1].strip()
                break
        if base is None:
            raise RuntimeError(f"the server did not start: {proc.stderr.read()[-2000:]}")
        session = requests.Session()
        for start in range(0, len(texts), batch):
            response = session.post(f"{base}:predict", json={"instances": texts[start:start + batch]}, timeout=300)
            response.raise_for_status()
        status = session.get(base, timeout=30).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    closed = [line for line in err.splitlines() if "request log closed" in line]
    return {"status_counters": status.get("request_log"), "shutdown_line": closed[-1] if closed else None,
            "server_exit_code": proc.returncode}


def run_monitor(args, log_dir: Path, since: float, until: float, monitoring_dir: Path) -> dict:
    command = [sys.executable, "-m", "pipeline", "monitor", "--dataset", args.dataset, "--output-dir",
               str(args.output_dir), "--log-dir", str(log_dir), "--since", f"{since:.6f}", "--until",
               f"{until:.6f}", "--monitoring-dir", str(monitoring_dir)]
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    seconds = time.monotonic() - start
    lines = done.stdout.splitlines()
    report = next((line.split("report ", 1)[1] for line in lines if line.startswith("monitor: report ")), None)
    summary = json.loads((Path(report).parent / "summary.json").read_text()) if report else None
    return {"command": " ".join(["python", "-m", "pipeline"] + command[3:]), "exit_code": done.returncode,
            "stdout": lines, "stderr_tail": done.stderr.splitlines()[-3:] if done.returncode == 2 else [],
            "seconds": round(seconds, 1), "summary": summary}


def feature_means(stats_path: Path) -> dict:
    """Mean of each numeric feature and the share of each predicted label, from TFDV statistics."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(Path(stats_path).read_bytes()).datasets[0]
    means = {}
    for feature in stats.features:
        name = "/".join(feature.path.step)
        if feature.HasField("num_stats"):
            means[f"{name}_mean"] = round(feature.num_stats.mean, 4)
        elif feature.HasField("string_stats"):
            total = sum(v.frequency for v in feature.string_stats.top_values)
            for value in sorted(feature.string_stats.top_values, key=lambda v: v.value):
                means[f"{name}_{value.value}_share"] = round(value.frequency / total, 4)
    return means


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("polarity", "imdb"), default="polarity")
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/mon-out"),
                        help="the run's output directory (serving/, metadata/)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/monitor-bench"),
                        help="request logs and monitoring windows of this benchmark (emptied first)")
    parser.add_argument("--count", type=int, default=2000, help="texts per traffic kind, at most")
    parser.add_argument("--batch", type=int, default=32, help="instances per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-note", default="", help="how the served model was made, recorded as given")
    args = parser.parse_args()
    args.output_dir = args.output_dir.resolve()

    from pipeline import configs, monitor, serve

    rng = random.Random(args.seed)
    serving_dir = args.output_dir / "serving" / f"sentiment-{args.dataset}"
    versions = serve.versions_on_disk(serving_dir)
    if not versions:
        print(f"no pushed model under {serving_dir}", file=sys.stderr)
        return 2
    model_dir = serving_dir / str(versions[-1])
    examples_uri, how = monitor.examples_uri_for_version(
        args.output_dir / "metadata" / f"sentiment-{args.dataset}.sqlite", model_dir)
    if args.dataset == "polarity":
        same_rows = split_rows(examples_uri, "test")
        other = [t for t, _ in csv_rows(DATA / "imdb" / "test.csv.gz")]
        other_name = "IMDB test reviews (imdb/test.csv.gz)"
        same_name = f"polarity test split of {examples_uri}"
    else:
        same_rows = csv_rows(DATA / "imdb" / "test.csv.gz")
        other = [t for t, _ in csv_rows(DATA / "polarity" / "rt-polarity.csv.gz")]
        other_name = "polarity sentences (polarity/rt-polarity.csv.gz)"
        same_name = "IMDB test reviews (imdb/test.csv.gz)"
    same_rows = rng.sample(same_rows, min(args.count, len(same_rows)))
    half = len(same_rows) // 2
    cases = [
        ("same", f"{same_name}, first half", [t for t, _ in same_rows[:half]]),
        ("same-later", f"{same_name}, second half", [t for t, _ in same_rows[half:]]),
        ("other", other_name, rng.sample(other, min(args.count, len(other)))),
        ("skewed", f"{same_name}, 90 % positive (label 1)", one_class_heavy(same_rows, 0.9, 1, rng)),
    ]

    shutil.rmtree(args.work_dir, ignore_errors=True)
    monitoring_dir = args.work_dir / "monitoring"
    results = []
    for name, description, texts in cases:
        log_dir = args.work_dir / "logs" / name
        since = time.time()
        served = serve_and_send(serving_dir, log_dir, texts, args.batch)
        until = time.time()
        time.sleep(1.1)  # window directories are named by the second
        outcome = run_monitor(args, log_dir, since, until, monitoring_dir)
        summary = outcome.pop("summary")
        entry = {"case": name, "traffic": description, "texts_sent": len(texts),
                 "mean_chars": round(sum(len(t.strip()) for t in texts) / len(texts), 1), **served, **outcome}
        if summary:
            entry["distances"] = {f"{m['kind']}:{m['feature']}": {"measure": m["measure"],
                                                                   "value": round(m["value"], 4),
                                                                 "threshold": m["threshold"], "exceeds": m["exceeds"]}
                                  for m in summary["measurements"]}
            entry["findings"] = summary["findings"]
            entry["reference"] = summary["reference"]
            entry["reference_features"] = feature_means(Path(summary["reference"]["statistics"]))
            entry["traffic_features"] = feature_means(
                monitoring_dir / summary["window"]["stamp"] / "traffic_stats.pb")
            entry["previous_window"] = summary["previous_window"]
            entry["records_in_window"] = summary["traffic"]["records"]
        results.append(entry)
        print(f"{name}: exit {entry['exit_code']}", *entry["stdout"], sep="\n  ", flush=True)

    run_summary = args.output_dir / "pipelines" / f"sentiment-{args.dataset}" / "run_summary.json"
    record = {
        "dataset": args.dataset,
        "model": {"serving_dir": str(serving_dir), "version": versions[-1],
                  "note": args.model_note, "examples_uri": examples_uri, "found_by": how,
                  "test_metrics": (json.loads(run_summary.read_text()).get("metrics")
                                   if run_summary.is_file() else None)},
        "bounds": dataclasses.asdict(configs.DATASETS[args.dataset].monitoring),
        "batch": args.batch,
        "seed": args.seed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join(["python", "bench/monitor_skew.py"] + sys.argv[1:]),
        "cases": results,
    }
    results = RESULTS_DIR / f"monitor_skew_{args.dataset}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"written {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
