"""Load test of `python -m pipeline serve`: concurrent clients for a fixed time.

Starts the server as its own process on 127.0.0.1 (a free port), waits until it
serves, then drives it from this process with N client threads (persistent HTTP
connections) for a fixed duration per workload:

* `single`: one short review per request;
* `batch32`: 32 IMDB test reviews per request (real reviews, as they are).

Reports requests/s, p50/p99 latency and errors (non-200 answers and connection
failures) per workload, prints them and writes bench/results/load_test.json.

    .venv/bin/python bench/load_test.py --model-base-dir outputs/serving/sentiment-polarity
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "load_test.json"
SHORT_REVIEWS = ["a gorgeous, witty film", "dull and lifeless", "not bad at all", "the best thing this year",
                 "i wanted my two hours back", "a quiet, moving story", "overlong and self-indulgent",
                 "funny, sharp and warm"]


def imdb_reviews(data_dir: Path, count: int) -> list[str]:
    with gzip.open(data_dir / "imdb" / "test.csv.gz", "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return [row["text"] for _, row in zip(range(count), reader)]


def start_server(model_base_dir: Path, name: str, threads: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--model-base-dir", str(model_base_dir), "--model-name", name,
         "--host", "127.0.0.1", "--port", "0", "--threads", str(threads)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 180
    for line in proc.stdout:
        if line.startswith("Serving "):
            url = line.split(" on ", 1)[1].strip()
            base = url.rsplit("/v1/models/", 1)[0]
            break
        if time.time() > deadline:
            break
    else:
        raise RuntimeError(f"server exited with {proc.wait()} before serving")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
    return proc, base


def run_workload(url: str, make_body, clients: int, duration_s: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def client(seed: int):
        rng = random.Random(seed)
        session = requests.Session()
        mine, my_errors = [], []
        while time.perf_counter() < stop_at:
            body = make_body(rng)
            t0 = time.perf_counter()
            try:
                response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
                ok = response.status_code == 200 and "predictions" in response.json()
                if not ok:
                    my_errors.append(f"{response.status_code}: {response.text[:200]}")
            except requests.RequestException as error:
                my_errors.append(repr(error)[:200])
                ok = False
            if ok:
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)
            errors.extend(my_errors)

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p):
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else None

    return {"clients": clients, "duration_s": round(elapsed, 2), "requests_ok": len(latencies),
            "errors": len(errors), "error_samples": errors[:5],
            "requests_per_s": round(len(latencies) / elapsed, 2), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-dir", required=True, help="serving directory with numbered versions")
    parser.add_argument("--model-name", default="sentiment")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per workload")
    parser.add_argument("--server-threads", type=int, default=4)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    reviews = imdb_reviews(Path(args.data_dir), 512)
    proc, base = start_server(Path(args.model_base_dir).resolve(), args.model_name, args.server_threads)
    url = f"{base}/v1/models/{args.model_name}:predict"
    try:
        status = requests.get(f"{base}/v1/models/{args.model_name}", timeout=10).json()
        # Warm-up: first calls trace shapes.
        for body in (json.dumps({"instances": SHORT_REVIEWS[:1]}), json.dumps({"instances": reviews[:32]})):
            requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120).raise_for_status()
        workloads = {
            "single_short_review": lambda rng: json.dumps({"instances": [rng.choice(SHORT_REVIEWS)]}),
            "batch_32_imdb_reviews": lambda rng: json.dumps(
                {"instances": [reviews[rng.randrange(len(reviews))] for _ in range(32)]}),
        }
        results = {name: run_workload(url, make, args.clients, args.duration) for name, make in workloads.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report = {"model_base_dir": str(args.model_base_dir), "model_status": status,
              "server_threads": args.server_threads, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "imdb_review_chars_mean": round(sum(map(len, reviews)) / len(reviews), 1), "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    for name, r in results.items():
        print(f"{name:<24} {r['requests_per_s']:8.2f} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
              f"errors {r['errors']}  ({r['requests_ok']} ok in {r['duration_s']} s, {r['clients']} clients)")
    print(f"written to {args.output}")
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
