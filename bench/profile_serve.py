"""Where the time of a REST predict request goes: cProfile of the Flask app, in-process.

Loads the newest version under --model-base-dir into serve.ModelRepository (warmed
up as the server does), builds serve.create_app, and sends requests through Flask's
test client from this thread (no socket, no waitress: their share is not measured
here; bench/load_test.py measures the whole path). Per workload:

* `batch32_imdb`: 32 IMDB test reviews per request (different reviews each time);
* `single_short`: one short review per request;
* with `--output-filter` also both asking for probability and label only (the body's
  "output_filter", which the code before it ignores).

Each workload runs once without the profiler (wall time per request) and once under
cProfile; the profile's time is split into categories by function (cumulative times,
no category inside another):

* `model_call`: TensorFlow under the predict code: the input tensor, the signature
  call, the outputs' .numpy();
* `per_text_rows`: turning the arrays into per-text dicts (label, probability, the
  attention and trajectory lists of floats);
* `json_decode`, `json_encode`: the body, the answer;
* `validation`: parse_texts (and parse_output_filter);
* `flask_and_rest`: everything else: Flask/Werkzeug request and response objects, the
  test client, routing, the predictor's plumbing.

The shares come from the profile; `ms_per_request` scales them to the unprofiled wall
time (cProfile inflates Python-heavy parts, so shares of Python work are upper bounds).

The code profiled is whatever `pipeline` imports: to profile an older commit, put its
tree first on PYTHONPATH:

    git archive <commit> pipeline models components | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before .venv/bin/python bench/profile_serve.py --label before ...
    .venv/bin/python bench/profile_serve.py --label after --output-filter ...

Each run writes its label's entry into bench/results/serve_profile.json (others kept).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: an older tree given there wins
sys.path.insert(0, str(ROOT / "bench"))

from load_test import SHORT_REVIEWS, imdb_reviews  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve_profile.json"
CATEGORIES = ("model_call", "per_text_rows", "json_decode", "json_encode", "validation", "flask_and_rest")


def _entries(stats: pstats.Stats):
    for (filename, _line, name), (_cc, _nc, tt, ct, callers) in stats.stats.items():
        yield filename, name, tt, ct, callers


def categorize(stats: pstats.Stats, total: float) -> dict[str, float]:
    """Seconds per category (see the module docstring); flask_and_rest is the rest of `total`."""
    def is_predict_code(filename: str, name: str) -> bool:
        return filename.endswith(os.path.join("pipeline", "predict.py")) and name in ("predict", "run_signature")

    model = rows_outer = decode = encode = validation = rows_new = 0.0
    json_loads = serve_loads = orjson_loads = 0.0
    for filename, name, _tt, ct, callers in _entries(stats):
        if "tensorflow" in filename or "tensorflow" in name:
            # TensorFlow called straight from the predict code (cumulative: what it calls is inside).
            model += sum(edge[3] for caller, edge in callers.items() if is_predict_code(caller[0], caller[2]))
        if filename.endswith(os.path.join("pipeline", "predict.py")) and name == "predict":
            rows_outer += ct
        if filename.endswith(os.path.join("pipeline", "predict.py")) and name == "rows":
            rows_new += ct
        if filename.endswith(os.path.join("pipeline", "serve.py")) and name == "loads":
            serve_loads += ct
        if filename.endswith(os.path.join("json", "__init__.py")) and name == "loads":
            json_loads += ct
        if name in ("<orjson.loads>", "<built-in method orjson.loads>"):
            orjson_loads += ct
        if name in ("<orjson.dumps>", "<built-in method orjson.dumps>"):
            encode += ct
        if filename.endswith(os.path.join("flask", "json", "__init__.py")) and name == "jsonify":
            encode += ct
        if filename.endswith(os.path.join("pipeline", "serve.py")) and name in ("parse_texts", "parse_output_filter"):
            validation += ct
    decode = serve_loads or (json_loads + orjson_loads)
    # The code before predict.rows built the rows inside predict.predict, around the model call.
    rows = rows_new if rows_new else max(0.0, rows_outer - model)
    seconds = {"model_call": model, "per_text_rows": rows, "json_decode": decode, "json_encode": encode,
               "validation": validation}
    seconds["flask_and_rest"] = max(0.0, total - sum(seconds.values()))
    return seconds


def run_case(client, path: str, bodies: list[bytes]) -> dict:
    def one(body):
        response = client.post(path, data=body, content_type="application/json")
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.get_data()[:300]!r}")
        return len(response.get_data())

    for body in bodies[:3]:  # first-call costs out of both measurements
        one(body)
    started = time.perf_counter()
    sizes = [one(body) for body in bodies]
    wall = (time.perf_counter() - started) / len(bodies)

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for body in bodies:
        one(body)
    profiler.disable()
    profiled_total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    seconds = categorize(stats, profiled_total)
    shares = {k: v / profiled_total for k, v in seconds.items()}
    top = sorted(((ct, f"{Path(f).name}:{n}") for (f, _, n), (_, _, _, ct, _) in stats.stats.items()),
                 reverse=True)[:25]
    return {"requests": len(bodies), "request_bytes_mean": round(sum(map(len, bodies)) / len(bodies)),
            "response_bytes_mean": round(sum(sizes) / len(sizes)),
            "ms_per_request_unprofiled": round(1000 * wall, 3),
            "ms_per_request_profiled": round(1000 * profiled_total / len(bodies), 3),
            "share_of_profiled_time": {k: round(v, 4) for k, v in shares.items()},
            "ms_per_request": {k: round(1000 * wall * v, 3) for k, v in shares.items()},
            "top_cumulative_s": [[name, round(ct, 3)] for ct, name in top]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-dir", required=True, help="serving directory with numbered versions")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--label", required=True, help="the entry written, e.g. before / after")
    parser.add_argument("--batch-requests", type=int, default=40)
    parser.add_argument("--single-requests", type=int, default=400)
    parser.add_argument("--output-filter", action="store_true", help="also the cases with an output_filter")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    from pipeline import serve

    source = Path(args.model_base_dir).resolve()
    version = max(int(p.name) for p in source.iterdir() if p.name.isdigit())
    rng = random.Random(0)
    reviews = imdb_reviews(Path(args.data_dir), 512)
    batches = [[reviews[rng.randrange(len(reviews))] for _ in range(32)] for _ in range(args.batch_requests)]
    singles = [[rng.choice(SHORT_REVIEWS)] for _ in range(args.single_requests)]
    name = "sentiment"
    with tempfile.TemporaryDirectory(prefix="profile-serve-") as tmp:
        base = Path(tmp) / name
        base.mkdir()
        (base / str(version)).symlink_to(source / str(version), target_is_directory=True)
        repository = serve.ModelRepository(base)
        started = time.perf_counter()
        repository.refresh()  # load and warm up, as the server does
        load_s = time.perf_counter() - started
        if repository.versions() != [version]:
            raise SystemExit(f"version {version} did not load: {repository.status()}")
        app = serve.create_app(repository, name)
        client = app.test_client()
        path = f"/v1/models/{name}:predict"
        cases = {"batch32_imdb": [{"instances": b} for b in batches],
                 "single_short": [{"instances": s} for s in singles]}
        if args.output_filter:
            for case in list(cases):
                cases[f"{case}_probability_label"] = [{**body, "output_filter": ["probability", "label"]}
                                                      for body in cases[case]]
        results = {case: run_case(client, path, [json.dumps(b).encode() for b in bodies])
                   for case, bodies in cases.items()}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = None
    entry = {"code": str(Path(serve.__file__).resolve().parent), "head_commit": commit,
             "model": str(source / str(version)), "load_and_warm_up_s": round(load_s, 1),
             "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "note": "2 cores shared with other work: absolute times vary"},
             "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cases": results}
    output = Path(args.output)
    report = json.loads(output.read_text()) if output.exists() else {}
    report.setdefault("method", "bench/profile_serve.py: Flask test client in-process, cProfile; categories: "
                      + ", ".join(CATEGORIES) + " (see the script's docstring)")
    report[args.label] = entry
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    for case, r in results.items():
        parts = "  ".join(f"{k} {v}" for k, v in r["ms_per_request"].items())
        print(f"{args.label:<7} {case:<34} {r['ms_per_request_unprofiled']:8.2f} ms/request  ({parts})")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
