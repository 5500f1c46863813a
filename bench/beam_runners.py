"""Times the Beam-heavy components on the DirectRunner: in-memory vs multi-processing.

    .venv/bin/python bench/beam_runners.py                 # full IMDB (25k + 25k reviews); long
    .venv/bin/python bench/beam_runners.py --rows 500      # a quick check of the script itself

For each Beam profile (runner_profiles: `direct-in-memory`, and
`direct-multi-processing` with one worker per core) it runs the whole pipeline
once, uncached, into a fresh output directory, and reads each component's wall
time back from ML Metadata (the same figures as the run summary). ExampleGen,
StatisticsGen, Transform and Evaluator are the Beam work and are compared;
the Trainer (Keras, not Beam) is kept small and identical across profiles and
is reported only for reference. Profiles alternate across repeats so a slow
spell on a shared machine does not all land on one of them.

Prints a table and writes bench/results/beam_runners-<dataset>-<rows|full>-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from pipeline import configs, data_sources, runner_profiles  # noqa: E402

BEAM_COMPONENTS = ("ExampleGen", "StatisticsGen", "Transform", "Evaluator")
PROFILES = ("direct-in-memory", "direct-multi-processing")
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
# A small Trainer: it is not Beam work, so it only has to produce a model for the Evaluator.
SMALL_TRAINER = {
    "training.epochs": "1",
    "model.pretrained_embeddings": "",
    "model.embedding_dim": "16",
    "model.rnn_units": "16",
    "model.attention_units": "16",
    "model.dense_units": "16",
    "evaluation.min_accuracy": "0.0",
    "evaluation.min_auc": "0",
}


def slice_imdb(source_dir: Path, rows: int, target: Path) -> Path:
    """The first `rows` rows of train and of test (rows are pre-shuffled, both classes)."""
    (target / "imdb").mkdir(parents=True)
    for name in ("train.csv.gz", "test.csv.gz"):
        with gzip.open(source_dir / "imdb" / name, "rt", encoding="utf-8") as f:
            lines = [line for _, line in zip(range(rows + 1), f)]
        with gzip.open(target / "imdb" / name, "wt", encoding="utf-8") as f:
            f.writelines(lines)
    return target / "imdb" / "*.csv.gz"


def run_once(dataset, input_path: Path, profile: str, workers: int | None, work_dir: Path) -> dict:
    from pipeline import local_runner

    options = {"workers": str(workers)} if workers and profile == "direct-multi-processing" else {}
    beam_args = runner_profiles.beam_pipeline_args(profile, options)
    output_dir = Path(tempfile.mkdtemp(prefix=f"{profile}-", dir=work_dir))
    config = configs.PipelineConfig(dataset=dataset, input_path=input_path, output_dir=output_dir,
                                    beam_args=beam_args, enable_cache=False)
    started = time.time()
    summary = local_runner.run(config)
    wall = time.time() - started
    times = {c.component: round(c.wall_time_s, 1) for c in summary.components}
    states = {c.component: c.state for c in summary.components}
    shutil.rmtree(output_dir, ignore_errors=True)
    return {
        "profile": profile,
        "beam_args": list(beam_args),
        "component_wall_time_s": times,
        "component_state": states,
        "beam_components_s": round(sum(times.get(c, 0.0) for c in BEAM_COMPONENTS), 1),
        "run_wall_time_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help="only the first N rows of train and of test (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per profile (default 1)")
    parser.add_argument("--workers", type=int, help="multi-processing workers (default: one per core)")
    parser.add_argument("--data-dir", help="data directory (default: as `python -m pipeline run`)")
    parser.add_argument("--work-dir", help="where runs write (default: a temp dir, removed after)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help="more config overrides, same for both profiles (e.g. max_len=256)")
    args = parser.parse_args(argv)

    source_dir = Path(args.data_dir) if args.data_dir else None
    if source_dir is None:
        found = data_sources.resolve_input(configs.IMDB, None, None, download=False)
        # .../imdb/<source>; the CSVs sit beside it in the shared layout.
        source_dir = found.parent.parent
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="beam-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(SMALL_TRAINER)
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = value.strip()
    dataset = configs.with_overrides(configs.IMDB, overrides)
    if args.rows:
        input_path = slice_imdb(source_dir, args.rows, work_dir / "data")
    else:
        input_path = source_dir / "imdb" / "*.csv.gz"
    print(f"Beam benchmark on {input_path} ({args.rows or 'all'} rows per file), {os.cpu_count()} cores", flush=True)

    runs = []
    for repeat in range(args.repeats):
        order = PROFILES if repeat % 2 == 0 else PROFILES[::-1]
        for profile in order:
            print(f"\n=== repeat {repeat + 1}/{args.repeats}: {profile} ===", flush=True)
            result = run_once(dataset, input_path, profile, args.workers, work_dir)
            result["repeat"] = repeat
            runs.append(result)

    per_profile = {}
    for profile in PROFILES:
        mine = [r for r in runs if r["profile"] == profile]
        per_profile[profile] = {
            component: round(statistics.median(
                r["component_wall_time_s"].get(component, float("nan")) for r in mine), 1)
            for component in (*BEAM_COMPONENTS, "Trainer")
        }
        per_profile[profile]["beam_total"] = round(statistics.median(r["beam_components_s"] for r in mine), 1)
    faster = min(PROFILES, key=lambda p: per_profile[p]["beam_total"])

    lines = [f"\n{'component':<20}" + "".join(f"{p:>26}" for p in PROFILES)]
    for component in (*BEAM_COMPONENTS, "beam_total", "Trainer"):
        label = component + (" (not Beam)" if component == "Trainer" else "")
        lines.append(f"{label:<20}" + "".join(f"{per_profile[p][component]:>24.1f} s" for p in PROFILES))
    lines.append(f"\nfaster for the Beam components here: {faster} "
                 f"(runner_profiles.DEFAULT_PROFILE is {runner_profiles.DEFAULT_PROFILE})")
    print("\n".join(lines), flush=True)

    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"beam_runners-imdb-{args.rows or 'full'}-{stamp}.json"
    out.write_text(json.dumps({
        "dataset": "imdb",
        "rows_per_file": args.rows,
        "input": str(input_path),
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "config_overrides": overrides,
        "median_wall_time_s": per_profile,
        "faster_profile": faster,
        "default_profile": runner_profiles.DEFAULT_PROFILE,
        "runs": runs,
    }, indent=2) + "\n")
    print(f"Results written to {out}", flush=True)
    if not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
