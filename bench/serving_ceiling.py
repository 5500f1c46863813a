"""What any server could get from a pushed version: the model's own cost, with no HTTP at all.

Issue 20 sets two serving targets that depend on the model as much as on the
server: 3,000 IMDB reviews/s over REST, and single short reviews from 8 clients
at 4x the unbatched rate once the server merges them. This measures, in one
process and with nothing between the caller and the signatures the server calls
(`predict.run_signature`, the same numpy conversion):

* `throughput`: IMDB test reviews/s for each signature at batch sizes 32-256,
  called from 1 and from 2 threads at once (the server's batch threads). The
  highest figure is the most any server can answer on these cores.
* `short_reviews`: CPU milliseconds per call and per text for calls of 1, 2, 4
  and 8 of the load test's short reviews. From them, `merge_ceiling`: the gain
  of merging 8 single-review requests into one call if a request cost nothing
  else (CPU per text alone / CPU per text in a call of 8), and
  `request_budget_ms_for_4x`: the CPU a request may cost besides the model
  (server and client together) for merged requests to reach 4x the unbatched
  rate, from (m1 + h) / (m8 / 8 + h) = 4.

Time it with nothing else running (CPU time is process time: every thread of TensorFlow).

    .venv/bin/python bench/serving_ceiling.py --model-base-dir outputs/serving/sentiment-imdb
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load_test import SHORT_REVIEWS, imdb_reviews, newest_version_dir  # noqa: E402

from pipeline import data_sources  # noqa: E402
from pipeline import predict as predict_lib  # noqa: E402

SIGNATURES = {"serving_default": True, "serving_per_text": False}  # name: per_token
BATCH_SIZES = (32, 64, 128, 256)
SHORT_CALL_SIZES = (1, 2, 4, 8)


def reviews_per_s(signature, reviews: list[str], batch_size: int, threads: int, per_token: bool,
                  seconds: float) -> float:
    """Reviews scored per second by `threads` callers, each on its own run through `reviews`."""
    predict_lib.run_signature(signature, reviews[:batch_size], per_token)  # this batch shape traced
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def caller(index: int) -> None:
        start = index * len(reviews) // threads
        while time.perf_counter() < stop:
            begin = (start + done[index]) % (len(reviews) - batch_size)
            predict_lib.run_signature(signature, reviews[begin:begin + batch_size], per_token)
            done[index] += batch_size

    started = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return round(sum(done) / (time.perf_counter() - started), 1)


def short_call_cost(signature, size: int, per_token: bool, calls: int) -> dict[str, float]:
    """Wall and CPU milliseconds of one call on `size` short reviews, averaged over `calls` calls."""
    texts = (SHORT_REVIEWS * size)[:size]
    predict_lib.run_signature(signature, texts, per_token)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        predict_lib.run_signature(signature, texts, per_token)
    cpu_ms = (time.process_time() - cpu) / calls * 1000
    return {"texts": size, "wall_ms_per_call": round((time.perf_counter() - wall) / calls * 1000, 3),
            "cpu_ms_per_call": round(cpu_ms, 3), "cpu_ms_per_text": round(cpu_ms / size, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-dir", required=True, help="serving directory with numbered versions")
    default_data_dir = os.environ.get(data_sources.DATA_DIR_ENV) or str(data_sources.SHARED_DATA_DIR)
    parser.add_argument("--data-dir", default=default_data_dir,
                        help="holding imdb/test.csv.gz (default: $SENTIMENT_DATA_DIR, then ../shared/data)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput figure")
    parser.add_argument("--calls", type=int, default=400, help="per short-review figure")
    parser.add_argument("--note", default="")
    parser.add_argument("--output", help="default: bench/results/serving_ceiling_<serving dir name without "
                                         "'sentiment-'>.json")
    args = parser.parse_args(argv)

    version_dir = newest_version_dir(args.model_base_dir)
    reviews = imdb_reviews(Path(args.data_dir), 5000)
    signature = predict_lib.load_signature(version_dir)
    functions = {"serving_default": signature, "serving_per_text": predict_lib.per_text_signature(signature)}
    if functions["serving_per_text"] is None:
        raise SystemExit(f"{version_dir} has no serving_per_text signature (an export older than the per-text one)")

    result: dict = {"what": __doc__.splitlines()[0], "note": args.note, "version_dir": str(version_dir),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "throughput": {}, "short_reviews": {}}
    for name, per_token in SIGNATURES.items():
        function = functions[name]
        rates = {}
        for batch_size in BATCH_SIZES:
            for threads in (1, 2):
                rates[f"batch_{batch_size}_threads_{threads}"] = reviews_per_s(
                    function, reviews, batch_size, threads, per_token, args.seconds)
                print(f"{name}: batch {batch_size}, {threads} thread(s): "
                      f"{rates[f'batch_{batch_size}_threads_{threads}']} reviews/s", flush=True)
        best = max(rates, key=rates.get)
        result["throughput"][name] = {"reviews_per_s": rates, "best": best, "best_reviews_per_s": rates[best]}

        costs = [short_call_cost(function, size, per_token, args.calls) for size in SHORT_CALL_SIZES]
        one, eight = costs[0]["cpu_ms_per_text"], costs[-1]["cpu_ms_per_text"]
        result["short_reviews"][name] = {
            "calls": costs,
            "merge_ceiling": round(one / eight, 2),
            "request_budget_ms_for_4x": round((one - 4 * eight) / 3, 3),
        }
        print(f"{name}: short reviews {costs}; merging 8 gains at most "
              f"{result['short_reviews'][name]['merge_ceiling']}x", flush=True)

    name = Path(args.model_base_dir).resolve().name.removeprefix("sentiment-")
    output = Path(args.output or ROOT / "bench" / "results" / f"serving_ceiling_{name}.json")
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
