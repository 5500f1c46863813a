"""Load test of `python -m pipeline serve`: concurrent clients for a fixed time.

Starts the server as its own process on 127.0.0.1 (a free port), waits until it
serves, then drives it from this process with N client threads (persistent HTTP
connections) for a fixed duration per workload:

* `single`: one short review per request;
* `batch32`: 32 IMDB test reviews per request (real reviews, as they are).

Reports requests/s, p50/p99 latency and errors (non-200 answers and connection
failures) per workload, prints them and writes bench/results/load_test.json.

    .venv/bin/python bench/load_test.py --model-base-dir outputs/serving/sentiment-polarity
    .venv/bin/python bench/load_test.py --protocol grpc --model-base-dir outputs/serving/sentiment-imdb
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


def newest_version_dir(base_dir: str | os.PathLike) -> Path:
    """The newest numbered version under a serving directory, as the server would serve it."""
    source = Path(base_dir).resolve()
    versions = sorted(int(p.name) for p in source.iterdir() if p.name.isascii() and p.name.isdigit())
    if not versions:
        raise SystemExit(f"no version under {source}")
    return source / str(versions[-1])


def only_version_dir(tmp: str | os.PathLike, name: str, served: Path) -> Path:
    """A serving directory under `tmp` holding only `served` (a symlink): one version loaded, as usual."""
    base_dir = Path(tmp) / name
    base_dir.mkdir()
    (base_dir / served.name).symlink_to(served, target_is_directory=True)
    return base_dir


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
    grpc_options = parser.add_argument_group("gRPC", "--protocol grpc: the issue's three loads over TF Serving's "
                                             "gRPC API from client processes (and over REST in the same run); "
                                             "writes bench/results/load_test_grpc.json")
    grpc_options.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    grpc_options.add_argument("--no-compare-rest", dest="compare_rest", action="store_false",
                              help="with --protocol grpc: skip the same loads over REST")
    grpc_options.add_argument("--grpc-server-threads", type=int, metavar="N",
                              help="with --protocol grpc: serve --threads (default: serve's own default)")
    grpc_options.add_argument("--in-process-seconds", type=float, default=10.0)
    grpc_options.add_argument("--server-arg", action="append", metavar="ARG",
                              help="with --protocol grpc: an extra argument of `pipeline serve` (repeatable), "
                              "e.g. --server-arg=--no-batching")
    args = parser.parse_args(argv)
    if args.protocol == "grpc":
        args.grpc_protocols = ["grpc", "rest"] if args.compare_rest else ["grpc"]
        return grpc_main(args)

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
              "server_threads": args.server_threads,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "imdb_review_chars_mean": round(sum(map(len, reviews)) / len(reviews), 1), "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    for name, r in results.items():
        print(f"{name:<24} {r['requests_per_s']:8.2f} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
              f"errors {r['errors']}  ({r['requests_ok']} ok in {r['duration_s']} s, {r['clients']} clients)")
    print(f"written to {args.output}")
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1


# --- gRPC (--protocol grpc): the three loads over TF Serving's gRPC API ---------------------
#
# The server also answers gRPC (pipeline/grpc_server.py). Clients are separate
# processes, each calling TF Serving's PredictionService with the tensorflow-serving-api
# stubs as a TF Serving user would (a PredictRequest built with tf.make_tensor_proto per
# request). The same three loads then run over REST from client processes too, against the
# same server in the same run, and the model's in-process throughput is measured before
# the server starts, so the figures compare under one machine state.

RESULTS_GRPC = ROOT / "bench" / "results" / "load_test_grpc.json"
# (workload, texts per request, clients, output_filter): the loads, plus batch32 asking
# for probability and label only (gRPC's output_filter).
GRPC_LOADS = (("batch_32_imdb_reviews", 32, 4, ()), ("single_short_review", 1, 8, ()),
              ("one_client_one_review", 1, 1, ()),
              ("batch_32_imdb_reviews_probability_label", 32, 4, ("probability", "label")))


def _texts_for(rng, reviews: list[str], count: int) -> list[str]:
    if count == 1:
        return [rng.choice(SHORT_REVIEWS)]
    return [reviews[rng.randrange(len(reviews))] for _ in range(count)]


def _grpc_client_process(target, name, reviews, count, output_filter, seed, ready, go, start_at, duration, out):
    """One client process: a channel and stub of its own; latencies of OK answers, error samples."""
    import os as _os

    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    rng = random.Random(seed)
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "serving_default"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(_texts_for(rng, reviews, count), dtype=tf.string))
        request.output_filter.extend(output_filter)
        response = stub.Predict(request, timeout=60)
        return "probability" in response.outputs

    client_loop(call, (grpc.RpcError,), ready, go, start_at, duration, out)
    channel.close()


def _rest_client_process(url, name, reviews, count, output_filter, seed, ready, go, start_at, duration, out):
    """One REST client process: its own session; a non-200 answer raises (counted as an error, with a sample)."""
    rng = random.Random(seed)
    session = requests.Session()

    def call():
        body = {"instances": _texts_for(rng, reviews, count)}
        if output_filter:
            body["output_filter"] = list(output_filter)
        response = session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60)
        if response.status_code != 200:
            raise requests.HTTPError(f"{response.status_code}: {response.text[:200]}")
        return len(response.json()["predictions"]) == count

    client_loop(call, (requests.RequestException,), ready, go, start_at, duration, out)


def client_loop(call, failures, ready, go, start_at, duration, out):
    """One client's timed loop: `call()` answers True for a good answer; latencies of those, error samples."""
    errors: list[str] = []
    try:
        call()  # connect, and the first request's costs, before the clock starts
    except failures as error:
        errors.append(repr(error)[:200])
    ready.put(True)
    go.wait()
    while time.monotonic() < start_at.value:
        time.sleep(0.001)
    stop_at = start_at.value + duration
    latencies: list[float] = []
    cpu_started = time.process_time()
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            ok = call()
            if not ok:
                errors.append("answer without the expected outputs")
        except failures as error:
            ok = False
            errors.append(repr(error)[:200])
        if ok:
            latencies.append(time.perf_counter() - t0)
    out.put({"latencies": latencies, "errors": len(errors), "error_samples": errors[:3],
             "cpu_s": time.process_time() - cpu_started})


def _run_processes(target_fn, target, name, reviews, count, output_filter, clients, duration) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=target_fn, args=(target, name, reviews, count, output_filter, 1000 + i, ready, go,
                                                 start_at, duration, out)) for i in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    start_at.value = time.monotonic() + 0.2
    go.set()
    results = [out.get(timeout=duration + 300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    latencies = sorted(x for r in results for x in r["latencies"])
    errors = sum(r["errors"] for r in results)

    def pct(p):
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else None

    rate = len(latencies) / duration
    answered = len(latencies) + errors
    client_cpu_ms = round(1000 * sum(r["cpu_s"] for r in results) / answered, 3) if answered else None
    return {"clients": clients, "texts_per_request": count, "output_filter": list(output_filter),
            "duration_s": duration, "requests_ok": len(latencies), "errors": errors,
            # The client processes' own CPU (building, sending, parsing) per request of the timed loop.
            "client_cpu_ms_per_request": client_cpu_ms,
            "error_samples": [s for r in results for s in r["error_samples"]][:5],
            "requests_per_s": round(rate, 2), "reviews_per_s": round(rate * count, 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def _in_process_child(model_dir, reviews, seconds, per_token, out):
    import os as _os

    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, str(ROOT))
    from pipeline import predict as predict_lib
    from pipeline import serve as serve_lib

    signature = predict_lib.load_signature(Path(model_dir))
    serve_lib.warm_up(signature, Path(model_dir))
    rng = random.Random(0)

    def batch():
        return [reviews[rng.randrange(len(reviews))] for _ in range(32)]

    for _ in range(5):
        predict_lib.run_signature(signature, batch(), per_token)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        predict_lib.run_signature(signature, batch(), per_token)
        done += 32
    out.put(round(done / (time.perf_counter() - t0), 1))


def in_process_reviews_per_s(model_dir: Path, reviews: list[str], seconds: float, per_token: bool = True) -> float:
    """The signature's own throughput on batches of 32 reviews, in a process of its own
    (per_token False: the per-text signature, as requests without per-token outputs get)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_in_process_child, args=(str(model_dir), reviews, seconds, per_token, out))
    proc.start()
    value = out.get(timeout=900)
    proc.join(timeout=60)
    return value


def rss_mb(pid: int) -> dict:
    """The process's resident and peak resident memory, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS"), "peak_rss_mb": fields.get("VmHWM")}


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, every thread) a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def server_cpu_ms_per_request(pid: int, cpu_before: float, got: dict) -> float:
    """The server's CPU since `cpu_before` per answered request of a load (`got`: _run_processes'
    result), each client's first, unclocked request included."""
    answered = got["requests_ok"] + got["errors"] + got["clients"]
    return round(1000 * (cpu_seconds(pid) - cpu_before) / answered, 3)


def start_grpc_server(model_base_dir: Path, name: str, threads: int | None, extra: list[str]):
    """`python -m pipeline serve` with REST and gRPC on free ports: (process, REST base URL, gRPC target)."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pipeline", "serve", "--model-base-dir", str(model_base_dir), "--model-name",
               name, "--host", "127.0.0.1", "--port", "0", "--grpc-port", "any", *extra]
    if threads:
        command += ["--threads", str(threads)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    target = base = None
    for line in proc.stdout:
        if line.startswith("gRPC "):
            target = line.rsplit(" on ", 1)[1].strip()
        if line.startswith("Serving "):
            base = line.split(" on ", 1)[1].strip().rsplit("/v1/models/", 1)[0]
            break
    if base is None or target is None:
        raise RuntimeError(f"server exited with {proc.wait()} before serving gRPC and REST")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
    return proc, base, target


def grpc_main(args) -> int:
    import tempfile

    reviews = imdb_reviews(Path(args.data_dir), 512)
    served = newest_version_dir(args.model_base_dir)
    with tempfile.TemporaryDirectory(prefix="load-test-grpc-") as tmp:
        base_dir = only_version_dir(tmp, args.model_name, served)
        in_process = in_process_reviews_per_s(served, reviews, args.in_process_seconds)
        in_process_per_text = in_process_reviews_per_s(served, reviews, args.in_process_seconds, per_token=False)
        print(f"in-process: {in_process} reviews/s (batches of 32), {in_process_per_text} without the per-token "
              "outputs", flush=True)
        started = time.monotonic()
        proc, base, target = start_grpc_server(base_dir, args.model_name, args.grpc_server_threads,
                                               args.server_arg or [])
        load_s = round(time.monotonic() - started, 1)
        results: dict = {"grpc": {}, "rest": {}}
        try:
            status = requests.get(f"{base}/v1/models/{args.model_name}", timeout=10).json()
            memory = {"after_load_and_warm_up": rss_mb(proc.pid)}
            for protocol in args.grpc_protocols:
                for load, count, clients, output_filter in GRPC_LOADS:
                    server_cpu = cpu_seconds(proc.pid)
                    if protocol == "grpc":
                        got = _run_processes(_grpc_client_process, target, args.model_name, reviews, count,
                                             output_filter, clients, args.duration)
                    else:
                        got = _run_processes(_rest_client_process, f"{base}/v1/models/{args.model_name}:predict",
                                             args.model_name, reviews, count, output_filter, clients, args.duration)
                    got["server_cpu_ms_per_request"] = server_cpu_ms_per_request(proc.pid, server_cpu, got)
                    if load.startswith("batch_32"):  # against the same outputs computed in-process
                        reference = in_process_per_text if output_filter else in_process
                        got["share_of_in_process"] = round(got["reviews_per_s"] / reference, 3)
                    results[protocol][load] = got
                    print(f"{protocol:<5} {load:<40} {got['requests_per_s']:8.2f} req/s {got['reviews_per_s']:8.1f} "
                          f"reviews/s  p50 {got['p50_ms']} ms  p99 {got['p99_ms']} ms  errors {got['errors']}  "
                          f"({clients} client processes; CPU ms/request: server {got['server_cpu_ms_per_request']}, "
                          f"clients {got['client_cpu_ms_per_request']})", flush=True)
            memory["after_the_loads"] = rss_mb(proc.pid)
            status_after = requests.get(f"{base}/v1/models/{args.model_name}", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    report = {"model_base_dir": str(served.parent), "version_served": served.name, "model_status": status,
              "model_status_after_loads": status_after,
              "server_command_extra": args.server_arg or [],
              "server_threads": args.grpc_server_threads or "serve's default",
              "server_start_to_serving_s": load_s, "server_memory_one_imdb_version": memory,
              "in_process_reviews_per_s_batch32": in_process,
              "in_process_reviews_per_s_batch32_per_text_outputs": in_process_per_text,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "clients": "separate processes; gRPC: tensorflow_serving PredictionServiceStub.Predict with a "
                         "PredictRequest built by tf.make_tensor_proto per request; REST: requests.Session",
              "imdb_review_chars_mean": round(sum(map(len, reviews)) / len(reviews), 1),
              "duration_s_per_load": args.duration, "results": results}
    output = Path(args.output if args.output != str(RESULTS) else RESULTS_GRPC)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"server RSS with one IMDB version: {memory}")
    print(f"written to {output}")
    return 0 if all(r["errors"] == 0 for p in results.values() for r in p.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
