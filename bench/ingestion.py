"""Ingestion throughput: the ExampleGen executor on the real archives and CSVs.

Runs the same Beam pipeline the ExampleGen component runs (DirectRunner,
in-process), once per source, and reports examples/s, rows in/out and the
split sizes. Prints the figures and writes them to bench/results/ingestion.json.

    .venv/bin/python bench/ingestion.py [--data-dir ../shared/data] [--sources imdb-archive ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components import review_example_gen  # noqa: E402
from pipeline import data_sources  # noqa: E402

SOURCES = {
    "imdb-archive": "imdb/aclImdb_v1_labeled.tar.gz",
    "imdb-csv": "imdb/*.csv.gz",
    "polarity-archive": "polarity/rt-polaritydata.tar.gz",
}
RESULTS = Path(__file__).resolve().parent / "results" / "ingestion.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(data_sources.DATA_DIR_ENV,
                                                             str(data_sources.SHARED_DATA_DIR)))
    parser.add_argument("--sources", nargs="+", choices=sorted(SOURCES), default=list(SOURCES))
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": {}}
    for name in args.sources:
        source = Path(args.data_dir) / SOURCES[name]
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            report = review_example_gen.ingest(str(source), out)
            seconds = time.perf_counter() - started
        run = {
            "source": str(source),
            "seconds": round(seconds, 2),
            "examples_per_second": round(report["examples_out"] / seconds, 1),
            **report,
        }
        results["runs"][name] = run
        print(f"{name:18s} {report['rows_in']:>7,} rows in, {report['examples_out']:>7,} examples out "
              f"({report['examples_per_split']}) in {seconds:6.1f} s = {run['examples_per_second']:8.1f} examples/s",
              flush=True)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
