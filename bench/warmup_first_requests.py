"""Are a freshly loaded version's first requests as fast as later ones? (TF Serving's warm-up)

The server warms a version up before it takes traffic (`serve.warm_up`: TF Serving's
warm-up file `assets.extra/tf_serving_warmup_requests`, then one text per padded
width). This benchmark shows what that buys, over REST, from one client:

1. `python -m pipeline serve` starts on a temporary serving directory holding a
   copy of the newest version under --model-base-dir;
2. once it serves, a second copy appears as version N+1 (as the Pusher would
   publish it); as soon as the status endpoint says AVAILABLE, the client sends
   a sequence of requests to that version: one text per length (1 to --max-words
   words, in --step word steps, cut from real IMDB reviews, so every padded width
   is met) and a batch of 32 reviews; then the same sequence twice more;
3. for contrast, a process of its own loads the same SavedModel with no warm-up
   and times the same sequence three times in-process.

With --output-filter (e.g. probability,label) every request asks for those outputs only,
so the per-text signature answers (its own graph, warmed up from its own records).

Per pass: median, p90 and max latency, and how much slower the first pass is than
the third (per request, the median and max ratio). Writes
bench/results/warmup_first_requests.json. Nothing else should run meanwhile: the
figures are absolute latencies.

    .venv/bin/python bench/warmup_first_requests.py --model-base-dir /work/replay/warm/serving/sentiment-imdb
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from load_test import imdb_reviews, newest_version_dir  # noqa: E402
from load_test_rest import start_server  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "warmup_first_requests.json"
PASSES = 3


def request_sequence(reviews: list[str], max_words: int, step: int) -> list[list[str]]:
    """One text per length (words cut from the longest reviews, so lengths are real), then a batch of 32."""
    words = " ".join(sorted(reviews, key=len, reverse=True)[:20]).split()
    singles = [[" ".join(words[i:i + n])] for i, n in enumerate(range(1, max_words + 1, step))]
    return singles + [reviews[:32]]


def _summary(latencies_ms: list[float]) -> dict:
    ordered = sorted(latencies_ms)
    return {"requests": len(ordered), "median_ms": round(statistics.median(ordered), 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2), "max_ms": round(ordered[-1], 2),
            "sum_ms": round(sum(ordered), 1)}


def _compare(passes: list[list[float]]) -> dict:
    ratios = [first / last for first, last in zip(passes[0], passes[-1])]
    return {"per_pass": [_summary(p) for p in passes],
            "first_over_last_pass_per_request": {"median": round(statistics.median(ratios), 2),
                                                 "max": round(max(ratios), 2)}}


def _wait_available(base: str, name: str, version: int, timeout: float = 600.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        answer = requests.get(f"{base}/v1/models/{name}/versions/{version}", timeout=10)
        if answer.status_code == 200:
            states = [s.get("state") for s in answer.json().get("model_version_status", [])]
            if "AVAILABLE" in states:
                return time.monotonic() - start
        time.sleep(0.02)
    raise TimeoutError(f"version {version} not AVAILABLE after {timeout} s")


def over_rest(source: Path, name: str, sequence: list[list[str]], server_args: list[str],
              output_filter: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="warmup-bench-") as tmp:
        base_dir = Path(tmp) / name
        base_dir.mkdir()
        old = int(source.name)
        shutil.copytree(source, base_dir / str(old))
        proc, base, log = start_server(base_dir, name, ["--poll-seconds", "0.2", *server_args])
        try:
            session = requests.Session()
            url = f"{base}/v1/models/{name}/versions/{old + 1}:predict"
            staging = Path(tmp) / "staging"
            shutil.copytree(source, staging)
            os.rename(staging, base_dir / str(old + 1))  # appears whole, as the Pusher publishes
            load_and_warm_up_s = _wait_available(base, name, old + 1)
            passes = []
            for _ in range(PASSES):
                latencies = []
                for texts in sequence:
                    t0 = time.perf_counter()
                    body = {"instances": texts, **({"output_filter": output_filter} if output_filter else {})}
                    answer = session.post(url, json=body, timeout=120)
                    latencies.append(1000 * (time.perf_counter() - t0))
                    answer.raise_for_status()
                    assert len(answer.json()["predictions"]) == len(texts)
                passes.append(latencies)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {"server_args": server_args, "new_version_load_and_warm_up_s": round(load_and_warm_up_s, 1),
            **_compare(passes)}


def _in_process_child(model_dir: str, sequence, per_token: bool, out) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, str(ROOT))
    from pipeline import predict as predict_lib

    t0 = time.perf_counter()
    signature = predict_lib.load_signature(Path(model_dir))
    load_s = time.perf_counter() - t0
    passes = []
    for _ in range(PASSES):
        latencies = []
        for texts in sequence:
            t0 = time.perf_counter()
            predict_lib.run_signature(signature, texts, per_token)
            latencies.append(1000 * (time.perf_counter() - t0))
        passes.append(latencies)
    out.put({"load_s": round(load_s, 1), "passes": passes})


def in_process_without_warm_up(model_dir: Path, sequence, per_token: bool = True) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_in_process_child, args=(str(model_dir), sequence, per_token, out))
    child.start()
    result = out.get(timeout=1800)
    child.join(timeout=60)
    return {"load_s": result["load_s"], **_compare(result["passes"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-dir", required=True, help="serving directory with numbered versions")
    parser.add_argument("--model-name", default="sentiment")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--max-words", type=int, default=600, help="longest single text, in words")
    parser.add_argument("--step", type=int, default=8, help="words between two single texts")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra `serve` argument (repeatable), e.g. --server-arg=--no-batching")
    parser.add_argument("--output-filter", default="", metavar="NAMES",
                        help="comma-separated outputs every request asks for (default: all)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    source = newest_version_dir(args.model_base_dir)
    reviews = imdb_reviews(Path(args.data_dir), 2000)
    sequence = request_sequence(reviews, args.max_words, args.step)
    print(f"{len(sequence)} requests per pass: single texts of 1..{args.max_words} words, then 32 reviews", flush=True)

    output_filter = [name for name in args.output_filter.split(",") if name]
    rest = over_rest(source, args.model_name, sequence, args.server_arg, output_filter)
    print("REST, new version warmed up by the server:", json.dumps(rest["per_pass"]),
          rest["first_over_last_pass_per_request"], flush=True)
    sys.path.insert(0, str(ROOT))
    from pipeline import predict as predict_lib

    per_token = not output_filter or predict_lib.needs_per_token(output_filter)
    cold = in_process_without_warm_up(source, sequence, per_token)
    print("in-process, no warm-up:", json.dumps(cold["per_pass"]), cold["first_over_last_pass_per_request"],
          flush=True)
    report = {
        "what": __doc__.split("\n\n")[0],
        "model": str(source), "requests_per_pass": len(sequence),
        "output_filter": output_filter or "all outputs",
        "sequence": f"single texts of 1..{args.max_words} words in steps of {args.step}, then a batch of 32 reviews",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": {"cpus": os.cpu_count(),
                                                                "python": platform.python_version()},
        "rest_new_version_with_server_warm_up": rest,
        "in_process_without_warm_up": cold,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
