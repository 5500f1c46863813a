"""Two pipelines at once on one PostgreSQL ML Metadata store and one output root.

SQLite under concurrency is the most reported TFX deployment failure
("database is locked", tensorflow/tfx#199); a team shares one store on a
database server instead. This starts a PostgreSQL server with
scripts/start_postgres.sh, then launches `python -m pipeline run` for
polarity and for an IMDB slice at the same moment, both with
`--metadata postgresql://.../DB` and the same `--output-dir`, and checks:

- both exit 0, and their wall-clock intervals overlap (the overlap is reported);
- each run summary names its own pipeline, its own run id, and the server store;
- the run ids are distinct pipeline_run contexts in the store, and every
  execution of each run belongs to that run's pipeline;
- no SQLite file was written: the store is the server's.

Writes bench/results/concurrent_runs.json.

    python bench/concurrent_runs.py --work-dir /tmp/concurrent          # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SMALL_MODEL = {
    "pretrained_vocabulary": "0", "model.pretrained_embeddings": "", "training.epochs": "2",
    "training.batch_size": "32", "training.weight_averaging": "0", "model.embedding_dim": "16",
    "model.rnn_units": "16", "evaluation.min_accuracy": "0", "evaluation.min_auc": "0",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def head_rows(source: Path, target: Path, rows: int) -> Path:
    """The header and the first `rows` rows of a CSV.gz (both files are shuffled: both classes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    import csv

    with gzip.open(source, "rt", encoding="utf-8", newline="") as f, \
            gzip.open(target, "wt", encoding="utf-8", newline="") as out:
        reader, writer = csv.reader(f), csv.writer(out)
        for index, record in enumerate(reader):
            if index > rows:
                break
            writer.writerow(record)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/sentiment-concurrent"))
    parser.add_argument("--rows", type=int, default=1000, help="rows of each dataset (default 1000)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: as the CLI resolves it")
    parser.add_argument("--out", type=Path, default=RESULTS / "concurrent_runs.json")
    args = parser.parse_args()

    from pipeline import data_sources, metadata_store, run_summary

    data_dir = args.data_dir or Path(os.environ.get(data_sources.DATA_DIR_ENV) or data_sources.SHARED_DATA_DIR)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    inputs = {
        "polarity": head_rows(data_dir / "polarity" / "rt-polarity.csv.gz", work / "data" / "polarity.csv.gz",
                              args.rows),
        "imdb": head_rows(data_dir / "imdb" / "train.csv.gz", work / "data" / "imdb.csv.gz", args.rows),
    }
    pg_dir = work / "postgres"
    started = subprocess.run(["bash", str(ROOT / "scripts" / "start_postgres.sh"), str(pg_dir), str(free_port())],
                             capture_output=True, text=True, check=True)
    base = started.stdout.strip().splitlines()[-1].rsplit("/", 1)[0]
    uri = f"{base}/mlmd_concurrent_{int(time.time())}"
    env = dict(os.environ, PGPASSFILE=str(pg_dir / "pgpass"), TF_CPP_MIN_LOG_LEVEL="2")
    output_dir = work / "outputs"
    try:
        processes = {}
        for dataset, path in inputs.items():
            command = [sys.executable, "-m", "pipeline", "run", "--dataset", dataset, "--input", str(path),
                       "--output-dir", str(output_dir), "--metadata", uri]
            for key, value in SMALL_MODEL.items():
                command += ["--set", f"{key}={value}"]
            log = open(work / f"{dataset}.log", "w")
            processes[dataset] = (subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                                  time.time(), log)
        runs = {}
        while len(runs) < len(processes):  # each end is taken when that process ends
            for dataset, (process, start, log) in processes.items():
                if dataset not in runs and process.poll() is not None:
                    log.close()
                    runs[dataset] = {"exit": process.returncode, "start": start, "end": time.time(),
                                     "log": str(work / f"{dataset}.log")}
            time.sleep(0.5)
        overlap = min(r["end"] for r in runs.values()) - max(r["start"] for r in runs.values())
        os.environ["PGPASSFILE"] = env["PGPASSFILE"]
        store = metadata_store.connect(uri, readonly=True)
        for dataset, run in runs.items():
            name = f"sentiment-{dataset}"
            path = output_dir / "pipelines" / name / run_summary.SUMMARY_FILE
            summary = json.loads(path.read_text()) if path.exists() else {}
            run.update(pipeline_name=summary.get("pipeline_name"), run_id=summary.get("run_id"),
                       metadata_uri=summary.get("metadata_uri"), blessed=summary.get("blessed"),
                       pushed_path=summary.get("pushed_path"), metrics=summary.get("metrics"),
                       components={c["component"]: [c["state"], c["wall_time_s"]]
                                   for c in summary.get("components", [])})
            context = store.get_context_by_type_and_name("pipeline_run", run["run_id"] or "")
            pipeline = store.get_context_by_type_and_name("pipeline", name)
            own = {e.id for e in store.get_executions_by_context(context.id)} if context else set()
            of_pipeline = {e.id for e in store.get_executions_by_context(pipeline.id)} if pipeline else set()
            run["executions"] = len(own)
            run["executions_all_of_own_pipeline"] = bool(own) and own <= of_pipeline
        run_ids = [r["run_id"] for r in runs.values()]
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "stop_postgres.sh"), str(pg_dir)], check=False)
    result = {
        "what": "polarity and an IMDB slice run at the same time on one PostgreSQL ML Metadata store and one "
                "output root (bench/concurrent_runs.py)",
        "rows_per_dataset": args.rows,
        "metadata_uri": uri,
        "overlap_s": round(overlap, 1),
        "wall_time_s": round(max(r["end"] for r in runs.values()) - min(r["start"] for r in runs.values()), 1),
        "sqlite_files": sorted(str(p) for p in (output_dir / "metadata").glob("*.sqlite")),
        "distinct_run_ids": len(set(run_ids)) == len(run_ids),
        "runs": {d: {k: v for k, v in r.items() if k not in ("start", "end")} | {
            "wall_time_s": round(r["end"] - r["start"], 1)} for d, r in runs.items()},
    }
    ok = (all(r["exit"] == 0 and r["metadata_uri"] == uri and r["pipeline_name"] == f"sentiment-{d}"
              and r["executions_all_of_own_pipeline"] for d, r in runs.items())
          and result["distinct_run_ids"] and not result["sqlite_files"] and overlap > 0)
    result["ok"] = ok
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for dataset, run in result["runs"].items():
        print(f"{dataset:<9} exit {run['exit']}  {run['wall_time_s']:7.1f} s  run {run['run_id']}  "
              f"{run['executions']} executions  blessed={run['blessed']}")
    print(f"overlap {result['overlap_s']} s; store {uri}; {'OK' if ok else 'FAILED'} -> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
