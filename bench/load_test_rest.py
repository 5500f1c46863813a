"""REST load test with server-side batching on and off, and the model's in-process throughput, in one run.

The issue's loads over `python -m pipeline serve`'s REST API, from client processes
(requests.Session, JSON bodies; latency = from sending the request to the answer parsed):

* `batch_32_imdb_reviews`: 32 IMDB test reviews per request, 4 clients;
* `single_short_review`: one short review per request, 8 clients;
* `one_client_one_review`: one short review per request, 1 client;
* `batch_32_imdb_reviews_probability_label`: as the first, with `"output_filter":
  ["probability", "label"]`.

The server is started twice, on a directory holding only the newest version of
--model-base-dir: with batching (serve's default) and with --no-batching, each with
serve's own thread default (16 with batching, 4 without; `--server-arg=--threads=N`
forces one). Before that, the model's own throughput on batches of 32 reviews is
measured in a process of its own (load, warm-up as the server does, then timed calls),
so the REST figures are a share of it measured under the same machine state. The
server's batching counters (status answer) give the texts per model call under each
load, and the CPU each request costs the server process (every thread, the model's
included; from /proc) and the client processes. Writes bench/results/load_test_rest.json.

    .venv/bin/python bench/load_test_rest.py --model-base-dir /work/replay/warm/serving/sentiment-imdb
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from load_test import (  # noqa: E402
    _rest_client_process,
    _run_processes,
    cpu_seconds,
    imdb_reviews,
    in_process_reviews_per_s,
    newest_version_dir,
    only_version_dir,
    rss_mb,
    server_cpu_ms_per_request,
)

RESULTS = ROOT / "bench" / "results" / "load_test_rest.json"
# (load, texts per request, clients, output_filter)
LOADS = (("batch_32_imdb_reviews", 32, 4, ()), ("single_short_review", 1, 8, ()),
         ("one_client_one_review", 1, 1, ()),
         ("batch_32_imdb_reviews_probability_label", 32, 4, ("probability", "label")))
SETTINGS = (("batching_on", ["--batching"]), ("batching_off", ["--no-batching"]))


def run_load(url: str, reviews: list[str], count: int, clients: int, output_filter, duration: float) -> dict:
    """One load from `clients` client processes (load_test's REST client and process runner)."""
    return _run_processes(_rest_client_process, url, None, reviews, count, output_filter, clients, duration)


def start_server(base_dir: Path, name: str, extra: list[str]) -> tuple[subprocess.Popen, str, list[str]]:
    """`python -m pipeline serve` on a free port (gRPC off): (process, base URL, its log lines so far)."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pipeline", "serve", "--model-base-dir", str(base_dir), "--model-name", name,
               "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0", *extra]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith("Serving "):
            base = line.split(" on ", 1)[1].strip().rsplit("/v1/models/", 1)[0]
            break
    else:
        raise RuntimeError(f"server exited with {proc.wait()} before serving: {lines[-20:]}")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
    return proc, base, lines


def _counters(base: str, name: str) -> dict:
    return requests.get(f"{base}/v1/models/{name}", timeout=10).json().get("batching") or {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-dir", required=True, help="serving directory with numbered versions")
    parser.add_argument("--model-name", default="sentiment")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load")
    parser.add_argument("--in-process-seconds", type=float, default=10.0)
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument of `pipeline serve` for both servers (repeatable)")
    parser.add_argument("--settings", default="batching_on,batching_off", choices=None,
                        help="which servers, in this order (batching_on, batching_off)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    reviews = imdb_reviews(Path(args.data_dir), 512)
    served = newest_version_dir(args.model_base_dir)
    known = dict(SETTINGS)
    settings = [(name, known[name]) for name in args.settings.split(",")]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="load-test-rest-") as tmp:
        base_dir = only_version_dir(tmp, args.model_name, served)
        in_process = in_process_reviews_per_s(served, reviews, args.in_process_seconds)
        in_process_per_text = in_process_reviews_per_s(served, reviews, args.in_process_seconds, per_token=False)
        print(f"in-process: {in_process} reviews/s (batches of 32), {in_process_per_text} without the per-token "
              "outputs", flush=True)
        for setting, extra in settings:
            extra = extra + args.server_arg
            started = time.monotonic()
            proc, base, lines = start_server(base_dir, args.model_name, extra)
            entry: dict = {"server_args": extra, "server_start_to_serving_s": round(time.monotonic() - started, 1),
                           "server_log": [line.split(" ", 3)[-1] for line in lines if "batching:" in line],
                           "loads": {}}
            url = f"{base}/v1/models/{args.model_name}:predict"
            try:
                entry["memory"] = {"after_load_and_warm_up": rss_mb(proc.pid)}
                for load, count, clients, output_filter in LOADS:
                    before = _counters(base, args.model_name)
                    server_cpu = cpu_seconds(proc.pid)
                    got = run_load(url, reviews, count, clients, output_filter, args.duration)
                    got["server_cpu_ms_per_request"] = server_cpu_ms_per_request(proc.pid, server_cpu, got)
                    after = _counters(base, args.model_name)
                    if after:  # the clients' first, unclocked requests are counted too
                        calls = after["batches"] - before["batches"]
                        got["model_calls"] = calls
                        got["texts_per_model_call"] = round((after["instances"] - before["instances"]) / calls, 2)
                        got["requests_per_model_call"] = round((after["requests"] - before["requests"]) / calls, 2)
                        got["refused_queue_full"] = after["rejected"] - before["rejected"]
                    if count == 32:  # against the same outputs computed in-process
                        reference = in_process_per_text if output_filter else in_process
                        got["share_of_in_process"] = round(got["reviews_per_s"] / reference, 3)
                    entry["loads"][load] = got
                    print(f"{setting:<13} {load:<40} {got['requests_per_s']:8.2f} req/s {got['reviews_per_s']:8.1f} "
                          f"reviews/s  p50 {got['p50_ms']} ms  p99 {got['p99_ms']} ms  errors {got['errors']}  "
                          f"requests/call {got.get('requests_per_model_call', 1.0)}  CPU ms/request: server "
                          f"{got['server_cpu_ms_per_request']}, clients {got['client_cpu_ms_per_request']}", flush=True)
                entry["memory"]["after_the_loads"] = rss_mb(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            results[setting] = entry
    report = {"model_base_dir": str(served.parent), "version_served": served.name,
              "in_process_reviews_per_s_batch32": in_process,
              "in_process_reviews_per_s_batch32_per_text_outputs": in_process_per_text,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "note": "the client processes run on the same cores as the server"},
              "clients": "separate processes, requests.Session, JSON bodies; latency: request sent to answer parsed",
              "imdb_review_chars_mean": round(sum(map(len, reviews)) / len(reviews), 1),
              "duration_s_per_load": args.duration, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "results": results}
    if "batching_on" in results and "batching_off" in results:
        on, off = results["batching_on"]["loads"], results["batching_off"]["loads"]
        report["on_over_off"] = {
            load: {"requests_per_s": round(on[load]["requests_per_s"] / off[load]["requests_per_s"], 2)
                   if off[load]["requests_per_s"] else None,
                   "p50_ms_on_off": [on[load]["p50_ms"], off[load]["p50_ms"]],
                   "p99_ms_on_off": [on[load]["p99_ms"], off[load]["p99_ms"]]} for load in on}
        for load, r in report["on_over_off"].items():
            print(f"{load:<40} on/off {r['requests_per_s']}x  p50 {r['p50_ms_on_off']}  p99 {r['p99_ms_on_off']}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"written to {output}")
    return 0 if all(r["errors"] == 0 for s in results.values() for r in s["loads"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
