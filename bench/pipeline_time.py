"""The pipeline's wall time: a first run, then a run on new data with the pretraining cached.

Run 1 is `python -m pipeline run --dataset D` in a fresh output directory: every component
runs, the ReaderPretrainer learns (where the dataset's config pretrains). Before run 2 the
dataset's files get new modification times: to ExampleGen that is new data (its cache key
holds every file's size and mtime) with the same texts, so every component runs again, except
that the ReaderPretrainer finds the same corpus, settings and code and copies its earlier
result (ImportSchemaGen stays cached). That is what `make pipeline` costs each time data
arrives, which issue 20's target (polarity <= 5 min) is about.

The data directory is a copy: the dataset's folder copied, every other entry a symlink, so
nothing under the shared data directory is touched.

Writes bench/results/pipeline_time_<dataset>.json: per run the command's and the pipeline's
wall time, every component's state and wall time, the epochs, and the test accuracy and AUC.
Time it with nothing else running.

    python bench/pipeline_time.py --dataset polarity --work-dir /tmp/pipeline-time   # ~30 min on 2 cores
    python bench/pipeline_time.py ... --first-run 2   # run 1 already done and recorded
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_spans import cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def data_copy(source: Path, dest: Path, folder: str) -> Path:
    """`dest`: the dataset's `folder` copied from `source`, every other entry linked."""
    if not dest.exists():
        dest.mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name == folder:
                shutil.copytree(entry, dest / folder)
            else:
                (dest / entry.name).symlink_to(entry.resolve())
    return dest


def touch_all(folder: Path) -> int:
    """New modification times for every file under `folder`; returns how many."""
    now = time.time_ns()
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        path.chmod(path.stat().st_mode | 0o200)
        os.utime(path, ns=(now, now))
    return len(files)


def record(output_dir: Path, pipeline_name: str, run: int, exit_code: int, seconds: float, summaries: Path) -> dict:
    """What one run did, from its run_summary.json."""
    summary = json.loads((output_dir / "pipelines" / pipeline_name / "run_summary.json").read_text())
    metrics = summary.get("metrics") or {}
    entry = {"run": run, "exit_code": exit_code, "command_seconds": round(seconds, 1),
             "pipeline_seconds": summary["total_wall_time_s"], "run_id": summary["run_id"],
             "components": {c["component"]: {"state": c["state"], "wall_time_s": c["wall_time_s"]}
                            for c in summary["components"]},
             "epochs_run": summary.get("epochs_run"),
             "test_accuracy": metrics.get("binary_accuracy"), "test_auc": metrics.get("auc"),
             "test_examples": metrics.get("example_count"), "blessed": summary["blessed"],
             "pushed_path": summary.get("pushed_path")}
    summaries.mkdir(parents=True, exist_ok=True)
    (summaries / f"run-{run}.json").write_text(json.dumps(entry, indent=2) + "\n")
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="polarity")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, help="default: the CLI's data directory resolution")
    parser.add_argument("--first-run", type=int, default=1, choices=(1, 2), help="run 1 already done and recorded")
    parser.add_argument("--output", help="default: bench/results/pipeline_time_<dataset>.json")
    parser.add_argument("--note", default="", help="what else ran meanwhile, which code, ...")
    args = parser.parse_args()
    from pipeline import configs, data_sources

    dataset = configs.DATASETS[args.dataset]
    source = data_sources.resolve_input(dataset, data_dir=args.data_dir, download=False)
    pattern = next(Path(p) for p in dataset.sources if source.match(p))  # e.g. polarity/rt-polarity.csv.gz
    root, folder = source.parents[len(pattern.parts) - 1], pattern.parts[0]
    data = data_copy(root, args.work_dir / "data", folder)
    output_dir, summaries, logs = args.work_dir / "outputs", args.work_dir / "summaries", args.work_dir / "logs"
    pipeline_name = dataset.pipeline_name
    for run in range(args.first_run, 3):
        if run == 2:
            print(f"new modification times for {touch_all(data / folder)} file(s) under {data / folder}", flush=True)
        started = time.time()
        code = cli("run", "--dataset", args.dataset, "--output-dir", str(output_dir), "--data-dir", str(data),
                   log=logs / f"run-{run}.log")
        entry = record(output_dir, pipeline_name, run, code, time.time() - started, summaries)
        print(json.dumps(entry), flush=True)
        if code:
            raise SystemExit(f"run {run}: exit {code}; see {logs / f'run-{run}.log'}")

    result = {"what": __doc__.splitlines()[0], "dataset": args.dataset, "note": args.note,
              "command": f"python -m pipeline run --dataset {args.dataset} --output-dir OUT --data-dir DATA_COPY",
              "runs": [json.loads((summaries / f"run-{run}.json").read_text()) for run in (1, 2)]}
    output = args.output or str(ROOT / "bench" / "results" / f"pipeline_time_{args.dataset}.json")
    Path(output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
