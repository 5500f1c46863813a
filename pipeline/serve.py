"""A subset of TF Serving's REST API for the pushed model, with Flask on waitress.

    GET  /v1/models/<name>                         version status (like TF Serving)
    GET  /v1/models/<name>/versions/<v>            one version's status
    POST /v1/models/<name>:predict                 the highest (newest) version
    POST /v1/models/<name>/versions/<v>:predict    a given version

Request bodies: `{"instances": ["text", ...]}` (or `[{"text": "..."}, ...]`), or
`{"inputs": ["text", ...]}` (or `{"inputs": {"text": [...]}}`), optionally with
`"signature_name": "serving_default"` beside them (the default; the only signature
that takes raw text, so any other name is a 400). The answer is
`{"predictions": [{"probability", "label", "length", "attention", "trajectory"}, ...]}`
(and "rating", the predicted star rating 1-10, from a model trained with model.rating_head),
with attention and trajectory cut to each text's own tokens. (For `inputs` TF
Serving answers `{"outputs": ...}`; here both answer `predictions`.)

Fewer outputs (REST's equivalent of gRPC's `output_filter`): a body field
`"output_filter": ["probability", "label"]` beside instances/inputs answers only
the outputs named (any of label, probability, rating, length, attention, trajectory;
an empty list or none means all the model has; naming rating for a model without
it is a 400). Attention and trajectory are the bulk of the
answer for long texts: a client that needs only the score should ask for it.

Server-side batching (pipeline/batching.py, on by default; `--no-batching`):
concurrent predict requests for the same version are merged into one model call
of at most --max-batch-size texts (TF Serving's max_batch_size,
batch_timeout_micros, num_batch_threads, max_enqueued_batches, config
serving.*), and each gets its own rows. The status endpoint then carries a
"batching" object with the batcher's counters.

Errors are always JSON `{"error": "..."}`, and the server keeps serving:
  400  malformed JSON (including nesting deeper than the decoder's recursion
       limit), a body of the wrong shape, a text that is not valid Unicode (a
       lone surrogate such as "\\ud800"), an unknown signature_name, or a version
       that is not 1 to 19 ASCII digits;
  404  an unknown model, version (well formed but not loaded) or endpoint;
  405  a wrong method, e.g. GET on :predict (the answer and the Allow header name POST);
  413  more than max_instances texts, or a body over max_body_bytes. The app checks
       the size itself (Content-Length, and the data read for chunked bodies):
       waitress buffers up to WAITRESS_BODY_CAP (1 GiB, spooled to disk) before
       calling the app, and only above that answers its own text/plain 413;
  400  also an "output_filter" that is not a list of output names;
  503  no version loaded yet, or the batching queue of the version is full
       (max_enqueued_batches batches waiting): retry later;
  500  anything unforeseen: "internal error (...)", with the traceback in the log.

Model lifecycle (ModelRepository.refresh, every poll_seconds in a background
thread, and once before the server starts listening): the serving directory
holds numbered versions (1-19 ASCII digits). A version the Pusher renames into
place is loaded, then warmed up (warm_up), and only then becomes visible to
requests, as the default if it is the highest. Warming up runs the signature on
an empty text, on one text for every padded width the export can produce (from
the width of a 1-token text, i.e. the training length_multiple, to max_len), on
a batch of 8 mixed texts, and replays the predict requests of TF Serving's
warm-up file `assets.extra/tf_serving_warmup_requests` when the
tensorflow_serving protos are installed: without it the first requests pay for
graph optimization and each new shape (seconds, against milliseconds after).
A version whose load or warm-up fails is reported as END by the status endpoint
and retried only when its files change (path, size or mtime_ns of any file).
New versions are loaded before the versions gone from disk are unloaded, and a
version gone from disk is unloaded only if another one stays loaded; while the
directory is missing or holds no version, the loaded versions keep serving (a
warning is logged). The server binds 127.0.0.1 unless told otherwise.

gRPC (pipeline/grpc_server.py): TF Serving's PredictionService (Predict,
GetModelMetadata) and ModelService.GetModelStatus on --grpc-port (8500; 0 = off),
over the same ModelRepository.

Request logging (--log-requests DIR, pipeline/request_log.py): a sampled share
of the answered requests is written as JSON lines, one per instance (time,
model_version, text, probability, label), by a background thread; a full queue
drops records (counted) instead of delaying the answer, and a logging failure
never fails a request. The status endpoint then carries a "request_log" object
with the logger's counters; they are logged again when the server stops.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from models import features
from pipeline import predict

log = logging.getLogger("sentiment.serve")

SERVABLE_SIGNATURES = ("serving_default",)  # the only signature of the export that takes raw text

# Bodies up to this size reach the app, which answers JSON 413 over max_body_bytes;
# waitress itself answers (text/plain 413) only above it. waitress's own default, 1 GiB:
# it spools large bodies to a temporary file, not to memory.
WAITRESS_BODY_CAP = 1 << 30


_VERSION = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²" and "١٠٠"
# TF Serving's warm-up file inside a version directory: a TFRecord of PredictionLog.
WARMUP_FILE = Path(features.WARMUP_FILE)
WARMUP_MAX_RECORDS = 1000  # TF Serving's own limit


def versions_on_disk(base_dir: Path) -> list[int]:
    """The version directories under base_dir (names of 1-19 ASCII digits), oldest first.

    An absent base directory has none; other OS errors propagate (the watcher logs them).
    """
    try:
        names = os.listdir(base_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if _VERSION.fullmatch(n) and os.path.isdir(os.path.join(base_dir, n)))


def fingerprint(directory: Path) -> str:
    """Cheap identity of a directory's contents: every file's relative path, size and mtime_ns."""
    entries = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            relative = os.path.relpath(full, directory)
            try:
                stat = os.stat(full)
            except OSError as error:  # vanished or unreadable: part of the state too
                entries.append((relative, "error", error.errno))
                continue
            entries.append((relative, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(repr(entries).encode()).hexdigest()


def _run(signature, texts: list) -> Any:
    import tensorflow as tf

    return signature(text=tf.constant(texts, dtype=tf.string))


def _run_both(signature, texts: list) -> Any:
    """Runs serving_default and, if the version has it, its per-text signature; returns the former's outputs."""
    per_text = predict.per_text_signature(signature)
    if per_text is not None:
        _run(per_text, texts)
    return _run(signature, texts)


def _length_and_width(outputs: Any) -> tuple[int, int] | None:
    """(tokens of the first text, padded width) from the signature's outputs, if it has them."""
    try:
        import numpy as np

        length = int(np.asarray(outputs["length"]).reshape(-1)[0])
        shape = tuple(outputs["attention"].shape)
        return (length, int(shape[1])) if len(shape) == 2 else None
    except Exception:  # a signature with other outputs: no shape exploration
        return None


def replay_warmup_file(signature, version_dir: Path) -> int:
    """Runs the predict requests of TF Serving's warm-up file, if any; returns how many.

    Only PredictLog records for serving_default (or no signature name) or the
    per-text signature, with one string input, are replayed, each on its signature;
    others (classify, regress, other signatures) are skipped. Without the
    tensorflow_serving protos the file is ignored. A file that cannot be read
    fails the warm-up, as in TF Serving.
    """
    path = Path(version_dir) / WARMUP_FILE
    if not path.is_file():
        return 0
    try:
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError:
        log.info("%s: tensorflow_serving protos not installed; warm-up file ignored", path)
        return 0
    import tensorflow as tf

    replayed = skipped = 0
    for i, record in enumerate(tf.data.TFRecordDataset(str(path))):
        if i >= WARMUP_MAX_RECORDS:
            log.warning("%s: only the first %d records replayed", path, WARMUP_MAX_RECORDS)
            break
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = entry.predict_log.request
        inputs = dict(request.inputs)
        tensor = inputs.get("text", next(iter(inputs.values())) if len(inputs) == 1 else None)
        target = {"": signature, **dict.fromkeys(SERVABLE_SIGNATURES, signature),
                  predict.PER_TEXT_SIGNATURE: predict.per_text_signature(signature)}.get(
            request.model_spec.signature_name)
        if (entry.WhichOneof("log_type") != "predict_log" or tensor is None or tensor.dtype != tf.string
                or target is None):
            skipped += 1
            continue
        _run(target, tf.make_ndarray(tensor).reshape(-1).tolist())
        replayed += 1
    if skipped:
        log.info("%s: %d record(s) this server cannot serve skipped", path, skipped)
    return replayed


def warm_up(signature, version_dir: Path | None = None, max_calls: int = 400,
            budget_seconds: float = 120.0) -> int:
    """Runs `signature` on the shapes requests will give it; returns the number of calls.

    The first call of a loaded SavedModel is slow (graph optimization, ~1.5 s for a
    tiny model; seconds for the real one), and each new padded width sets up its
    kernels anew: the export trims a batch to its longest text, rounded up to the
    training length_multiple, at most max_len (models/trainer.trim_to_longest).
    So: an empty text, one text for every padded width from 1 token to max_len
    (the width of a 1-token text is the multiple; a very long text gives max_len),
    a batch of 8 texts of mixed lengths, and TF Serving's warm-up file if present.
    Exceptions propagate: the caller counts a failed warm-up as a failed load.
    """
    calls = replay_warmup_file(signature, version_dir) if version_dir is not None else 0
    deadline = time.monotonic() + budget_seconds

    def run(texts):
        nonlocal calls
        calls += 1
        return _length_and_width(_run_both(signature, texts))

    run([""])
    # Word-level models count "aaaa" as 1 token, character-level ones as 4.
    probe = run(["aaaa"])
    unit = "a" if probe is not None and probe[0] == 4 else "a "

    def text(tokens: int) -> str:
        return (unit * tokens).strip()

    one, longest = run([text(1)]), run([text(8192)])
    if one is None or longest is None:  # outputs without length/attention: a few lengths, blind
        for tokens in (8, 64, 512):
            run([text(tokens)])
        run([text(n) for n in (1, 2, 4, 8, 16, 32, 64, 128)])
        return calls
    multiple, max_len = one[1], longest[1]
    seen = {one[1], longest[1]}
    for width in range(multiple, max_len + multiple, multiple):
        width = min(width, max_len)
        if width in seen:
            continue
        if calls >= max_calls or time.monotonic() > deadline:
            log.warning("warm-up stopped after %d calls (%d of %d widths): over its budget", calls,
                        len(seen), -(-max_len // multiple))
            break
        got = run([text(width)])
        seen.add(got[1] if got else width)
    spread = sorted({max(1, round(max_len * k / 7)) for k in range(8)})
    run([text(n) for n in spread] + ["naïve, Émile: 😀 <br /> a"] * (8 - len(spread)))
    return calls


class WarmUpError(Exception):
    """The signature loaded but failed on the warm-up texts: a failed load."""


class ModelRepository:
    """The loaded versions of one model, kept in step with its serving directory.

    refresh() (every poll_seconds in the watcher thread, once at start-up):
    - loads the versions new on disk, newest first, and warms each up (warm_up)
      before it becomes visible to requests; a failed load or warm-up is
      reported by status() and retried only once the version's files change
      (fingerprint: every file's path, size and mtime_ns);
    - only then unloads the versions gone from disk, so that a Pusher keeping
      one version never leaves the server without one; and never the last one:
      a version gone from disk stays loaded until another one is loaded;
    - keeps everything loaded, with a warning, while the base directory is
      missing or holds no version at all.
    """

    def __init__(self, base_dir: Path, poll_seconds: float = 2.0, loader=None, warm_up_fn=None):

        self.base_dir = Path(base_dir)
        self.poll_seconds = poll_seconds
        self._loader = loader or predict.load_signature
        self._warm_up = warm_up_fn or warm_up
        self._lock = threading.Lock()  # guards _loaded and _failed, held briefly
        self._refresh_lock = threading.Lock()  # one refresh at a time (watcher, start-up, tests)
        self._loaded: dict[int, Any] = {}
        self._failed: dict[int, str] = {}
        self._failed_fingerprints: dict[int, str] = {}
        self._warned: set[Any] = set()  # warnings already logged, to log each once per episode
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _warn_once(self, key: Any, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _load(self, version: int):
        path = self.base_dir / str(version)
        signature = self._loader(path)
        start = time.monotonic()
        try:
            calls = self._warm_up(signature, path)
        except Exception as error:
            raise WarmUpError(f"warm-up failed: {type(error).__name__}: {error}") from error
        log.info("version %d warmed up: %s calls in %.1f s", version, calls, time.monotonic() - start)
        return signature

    def refresh(self) -> None:
        """Loads (and warms up) versions that appeared, then unloads versions that went away."""
        with self._refresh_lock:
            self._refresh()

    def _refresh(self) -> None:
        on_disk = set(versions_on_disk(self.base_dir))
        with self._lock:
            loaded = set(self._loaded)
        if not on_disk:
            if loaded:
                self._warn_once("empty", "no version on disk under %s (missing or empty): keeping version(s) "
                                "%s loaded", self.base_dir, sorted(loaded))
            return
        self._warned.discard("empty")
        with self._lock:
            for version in set(self._failed) - on_disk:
                del self._failed[version]
                self._failed_fingerprints.pop(version, None)
        for version in sorted(on_disk - loaded, reverse=True):
            current = fingerprint(self.base_dir / str(version))
            with self._lock:
                failed_before = version in self._failed
                if failed_before and self._failed_fingerprints.get(version) == current:
                    continue
            if failed_before:
                log.info("version %d changed on disk since it failed to load: retrying", version)
            try:
                signature = self._load(version)
            except Exception as error:  # a broken version must not take the server down
                log.error("version %d failed to load: %s", version, error)
                with self._lock:
                    self._failed[version] = (str(error) if isinstance(error, WarmUpError)
                                             else f"{type(error).__name__}: {error}")
                    self._failed_fingerprints[version] = current
                continue
            with self._lock:
                self._loaded[version] = signature
                self._failed.pop(version, None)
                self._failed_fingerprints.pop(version, None)
            log.info("version %d loaded", version)
        with self._lock:
            gone = set(self._loaded) - on_disk
            if gone and gone == set(self._loaded):
                kept = max(gone)
                gone.discard(kept)
                self._warn_once(("kept", kept), "version %d is gone from disk but stays loaded: no other "
                                "version is loaded", kept)
            for version in gone:
                del self._loaded[version]
        for version in gone:
            log.info("version %d removed from disk: unloaded", version)

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.refresh()
                except Exception:  # keep watching whatever happens
                    log.exception("refreshing versions failed")

        self._thread = threading.Thread(target=loop, name="version-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def versions(self) -> list[int]:
        with self._lock:
            return sorted(self._loaded)

    def get(self, version: int | None):
        with self._lock:
            if not self._loaded:
                return None, None
            if version is None:
                version = max(self._loaded)
            return version, self._loaded.get(version)

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = [{"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                    for v in sorted(self._loaded, reverse=True)]
            rows += [{"version": str(v), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": m}}
                     for v, m in sorted(self._failed.items(), reverse=True)]
        return rows


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status




def _short(value: str, limit: int = 40) -> str:
    """repr() of a client-supplied string, cut to `limit` characters for error messages."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def parse_texts(body: Any, max_instances: int) -> list[str]:
    """The texts of a TF Serving style request body; BadRequest says what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"instances": [...]} or {"inputs": ...}')
    signature_name = body.get("signature_name", "serving_default")
    if not isinstance(signature_name, str):
        raise BadRequest(f'"signature_name" must be a string, got {type(signature_name).__name__}')
    if signature_name not in SERVABLE_SIGNATURES:
        raise BadRequest(f"unknown signature_name {_short(signature_name)}; this server serves only "
                         f"'serving_default' (the only signature that takes raw text)")
    keys = {"instances", "inputs"} & set(body)
    if len(keys) != 1:
        raise BadRequest('the body must have exactly one of "instances" or "inputs"')
    (key,) = keys
    value = body[key]
    if key == "inputs" and isinstance(value, dict):
        if set(value) != {"text"}:
            raise BadRequest(f'"inputs" as an object must have exactly the key "text", got {sorted(value)}')
        value = value["text"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise BadRequest(f'"{key}" must be a list of strings, got {type(value).__name__}')
    if not value:
        raise BadRequest(f'"{key}" is empty')
    if len(value) > max_instances:
        raise BadRequest(f"too many instances: {len(value)} > {max_instances} per request", 413)
    texts = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and key == "instances":
            if set(item) != {"text"}:
                raise BadRequest(f'instance {i}: an object instance must have exactly the key "text"')
            item = item["text"]
        if not isinstance(item, str):
            raise BadRequest(f"instance {i}: expected a string, got {type(item).__name__}")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800": JSON allows it, UTF-8 does not
            raise BadRequest(f"instance {i}: the text is not valid Unicode ({exc.reason} at character "
                             f"{exc.start}: {exc.object[exc.start:exc.end]!r}); send UTF-8 text") from None
        texts.append(item)
    return texts


def parse_output_filter(body: dict) -> tuple[str, ...]:
    """The outputs a body asks for with "output_filter" (all without it); BadRequest if malformed."""
    from pipeline import batching

    value = body.get("output_filter")
    if value is None:
        return batching.check_outputs(None)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest('"output_filter" must be a list of output names, e.g. ["probability", "label"]')
    try:
        return batching.check_outputs(value)
    except batching.InvalidArgument as error:
        raise BadRequest(str(error)) from None


def loads(data: bytes) -> Any:
    """The JSON body: orjson, and on any error the standard library's answer (its leniency, its messages)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def create_app(repository: ModelRepository, model_name: str, max_instances: int = 256,
               max_body_bytes: int = 8 * 1024 * 1024, request_logger=None, predictor=None) -> Flask:
    """The Flask app; `request_logger` (a request_log.RequestLogger) logs answered predictions.

    `predictor` runs the model (pipeline/batching.py: a Batcher, or Direct, the default: one call per request).
    """
    from pipeline import batching

    if predictor is None:
        predictor = batching.Direct(repository, model_name)

    app = Flask("sentiment-serve")
    # The body limit is checked in read_body (a JSON 413), not by Werkzeug.
    app.config["MAX_CONTENT_LENGTH"] = None
    app.json.sort_keys = False
    too_large = f"request body over the limit of {max_body_bytes} bytes"

    def error(message: str, status: int, headers: dict[str, str] | None = None):
        return jsonify({"error": message}), status, headers or {}

    def not_allowed(allowed: str):
        return error(f"{request.method} is not allowed on {request.path}; allowed: {allowed}", 405,
                     {"Allow": allowed})

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error(str(exc), exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return error(too_large, 413)
        if exc.code == 404:
            return error(f"no such endpoint: {request.method} {request.path}; use /v1/models/{model_name}"
                         f"[/versions/<v>]:predict", 404)
        if exc.code == 405:
            return not_allowed(", ".join(sorted(set(getattr(exc, "valid_methods", None) or ()) - {"OPTIONS"})))
        return error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        # Whatever was not foreseen: the traceback goes to the log, the client gets JSON.
        log.exception("internal error on %s %s", request.method, request.path)
        return error(f"internal error ({type(exc).__name__}); the server log has the details", 500)

    def check_model(name: str) -> None:
        if name != model_name:
            raise BadRequest(f"unknown model {_short(name)}; this server serves {model_name!r}", 404)

    def parse_version(raw: str | None) -> int | None:
        if raw is None:
            return None
        if not _VERSION.fullmatch(raw):
            raise BadRequest(f"version must be a number of at most 19 ASCII digits, got {_short(raw)}", 400)
        return int(raw)

    def read_body() -> bytes:
        # waitress has buffered the whole body already (up to its own, larger cap);
        # chunked bodies have no Content-Length, so the data read counts too.
        length = request.content_length
        if length is not None and length > max_body_bytes:
            raise BadRequest(too_large, 413)
        data = request.stream.read(max_body_bytes + 1)
        if len(data) > max_body_bytes:
            raise BadRequest(too_large, 413)
        return data

    def model_status(name: str, version: str | None):
        check_model(name)
        rows = repository.status()
        if version is not None:
            wanted = str(parse_version(version))
            rows = [r for r in rows if r["version"] == wanted]
            if not rows:
                raise BadRequest(f"model {name!r} has no version {wanted}; versions: "
                                 f"{repository.versions()}", 404)
        answer = {"model_version_status": rows}
        if request_logger is not None:
            answer["request_log"] = request_logger.counters()
        if predictor.counters() is not None:
            answer["batching"] = predictor.counters()
        return jsonify(answer)

    def do_predict(name: str, version: str | None):
        check_model(name)
        wanted = parse_version(version)
        data = read_body()
        if not data:
            raise BadRequest('empty request body; send JSON like {"instances": ["a text"]}')
        try:
            body = loads(data)
        except RecursionError:
            raise BadRequest("the body is not valid JSON: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        texts = parse_texts(body, max_instances)
        fields = parse_output_filter(body)
        logged = ("label", "probability") if request_logger is not None else ()
        try:
            served_version, outputs = predictor.predict(wanted, texts, {*fields, *logged, "length"})
        except batching.PredictError as exc:
            return error(str(exc), exc.http_status)
        missing = [name for name in fields if name not in outputs] if body.get("output_filter") else []
        if missing:  # asked by name, but this version does not output it (rating without a rating head)
            return error(f"output_filter names {missing[0]!r}, not an output of version {served_version}; its "
                         f"outputs: {', '.join(name for name in predict.OUTPUTS if name in outputs)}", 400)
        if request_logger is not None:  # never raises, never waits for the disk
            request_logger.log(served_version, texts, predict.rows(outputs, logged))
        answer = {"predictions": predict.rows(outputs, fields), "model_version": str(served_version)}
        return app.response_class(orjson.dumps(answer), mimetype="application/json",
                                  headers={"X-Model-Version": str(served_version)})

    @app.route("/v1/models/<path:target>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def model_route(target: str):
        # Flask routes cannot end in ":predict" after a variable, so split by hand:
        # <name>[/versions/<v>][:<verb>].
        path, sep, verb = target.rpartition(":")
        if not sep:
            path, verb = target, None
        parts = path.split("/")
        if len(parts) == 1:
            name, version = parts[0], None
        elif len(parts) == 3 and parts[1] == "versions":
            name, version = parts[0], parts[2]
        else:
            raise BadRequest(f"no such endpoint: {request.path}", 404)
        if verb is None:
            if request.method not in ("GET", "HEAD"):
                return not_allowed("GET")
            return model_status(name, version)
        if verb != "predict":
            raise BadRequest(f"unsupported verb in {_short(request.path, 200)}; only :predict is served", 404)
        if request.method != "POST":
            return not_allowed("POST")
        return do_predict(name, version)

    return app


def make_server(app: Flask, host: str, port: int, threads: int, max_body_bytes: int):
    """The waitress server for `app` (not started: call .run())."""
    from waitress import create_server

    # waitress reads the whole body before calling the app, and answers a body
    # over its own cap with a text/plain 413 (or a reset connection): let it take
    # up to WAITRESS_BODY_CAP so that the app answers JSON 413 over max_body_bytes.
    return create_server(app, host=host, port=port, threads=threads,
                         max_request_body_size=max(WAITRESS_BODY_CAP, max_body_bytes + 1))


def serve_command(args) -> int:
    from pipeline import configs

    try:
        dataset = configs.dataset_of(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    limits = dataset.serving
    # Where the pipeline's Pusher pushes, unless a directory is given.
    base = (Path(args.model_base_dir).resolve() if args.model_base_dir
            else dataset.serving_dir(configs.output_dir_of(args.output_dir)))
    name = args.model_name or base.name
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    flags = {"intra": args.tensorflow_intra_op_parallelism, "inter": args.tensorflow_inter_op_parallelism}
    pools = {pool: getattr(limits, f"{pool}_op_threads") if flag is None else flag for pool, flag in flags.items()}
    try:
        size_tensorflow_pools(**pools)  # before any version is loaded: TensorFlow reads them once
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if any(pools.values()):
        log.info("TensorFlow thread pools: intra-op %s, inter-op %s (0: TensorFlow's default)",
                 pools["intra"], pools["inter"])
    repository = ModelRepository(base, poll_seconds=args.poll_seconds or limits.poll_seconds)
    repository.refresh()
    if not repository.versions():
        log.warning("no version under %s yet; waiting for the Pusher", base)
    request_logger = None
    if args.log_requests:
        from pipeline import request_log

        rate = limits.log_sample_rate if args.log_sample_rate is None else args.log_sample_rate
        try:
            request_logger = request_log.RequestLogger(
                Path(args.log_requests).resolve(), sample_rate=rate, file_bytes=limits.log_file_bytes,
                max_files=limits.log_max_files, queue_size=limits.log_queue_size, seed=args.log_seed)
        except (ValueError, OSError) as error:
            print(f"error: --log-requests {args.log_requests}: {error}", file=sys.stderr)
            return 2
        log.info("logging %.0f%% of requests to %s", 100 * rate, request_logger.directory)
    repository.start()
    predictor = make_predictor(args, limits, repository, name)
    app = create_app(repository, name, max_instances=args.max_instances or limits.max_instances,
                     max_body_bytes=args.max_body_bytes or limits.max_body_bytes, request_logger=request_logger,
                     predictor=predictor)
    server = make_server(app, args.host, args.port, args.threads, args.max_body_bytes or limits.max_body_bytes)
    grpc_server = _start_grpc(args, limits, repository, name, request_logger, predictor)
    if grpc_server is False:
        predictor.stop()
        repository.stop()
        if request_logger is not None:
            request_logger.close()
        return 2
    print(f"Serving {name} versions {repository.versions()} from {base} on "
          f"http://{args.host}:{server.effective_port}/v1/models/{name}", flush=True)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C: flush the request log
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
        predictor.stop()
        repository.stop()
        if request_logger is not None:
            counters = request_logger.close()
            log.info("request log closed: %s", ", ".join(f"{k}={v}" for k, v in counters.items()))
    return 0


def size_tensorflow_pools(intra: int = 0, inter: int = 0) -> None:
    """Sizes TensorFlow's thread pools (TF Serving's --tensorflow_intra_op_parallelism and
    --tensorflow_inter_op_parallelism); 0 leaves TensorFlow's default. Raises RuntimeError,
    saying so, once TensorFlow has started: the pools are made once and never resized."""
    import tensorflow as tf

    for pool, threads, get, set_ in (
            ("intra-op", intra, tf.config.threading.get_intra_op_parallelism_threads,
             tf.config.threading.set_intra_op_parallelism_threads),
            ("inter-op", inter, tf.config.threading.get_inter_op_parallelism_threads,
             tf.config.threading.set_inter_op_parallelism_threads)):
        if threads and get() != threads:
            try:
                set_(threads)
            except RuntimeError:
                raise RuntimeError(f"TensorFlow is already running: its {pool} pool can no longer be sized "
                                   f"to {threads} threads") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def batching_parameters(args, limits):
    """BatchingParameters from the command line over config serving.*, or None with batching off."""
    from pipeline import batching

    enabled = limits.batching if args.batching is None else args.batching
    if not enabled:
        return None

    def pick(name):
        value = getattr(args, name)
        return getattr(limits, name) if value is None else value

    return batching.BatchingParameters(**{name: pick(name) for name in (
        "max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")})


def make_predictor(args, limits, repository, name):
    """The batcher (or Direct with batching off); also sets args.threads to its default if not given."""
    from pipeline import batching

    try:
        parameters = batching_parameters(args, limits)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if args.threads is None:  # with batching the server's threads mostly wait for a batch
        args.threads = limits.batching_server_threads if parameters is not None else 4
    if parameters is not None:
        log.info("batching: max_batch_size=%d batch_timeout_micros=%d num_batch_threads=%d "
                 "max_enqueued_batches=%d; %d server threads", parameters.max_batch_size,
                 parameters.batch_timeout_micros, parameters.threads, parameters.max_enqueued_batches, args.threads)
    return batching.make_predictor(repository, name, parameters)


GRPC_ANY_PORT = -1  # --grpc-port any


def _start_grpc(args, limits, repository, name, request_logger, predictor=None):
    """The started gRPC server (pipeline/grpc_server.py), None when off, False when it cannot bind.

    `predictor`: the one REST uses (gRPC and REST requests then share its batches)."""
    port = args.grpc_port
    if port is None:  # the config's port; any free port when REST takes any (--port 0: tests, benches)
        port = GRPC_ANY_PORT if args.port == 0 else limits.grpc_port
    if port == 0:
        return None
    from pipeline import grpc_server

    try:
        server, bound = grpc_server.create_server(
            repository, name, host=args.host, port=max(port, 0), threads=args.threads,
            max_instances=args.max_instances or limits.max_instances,
            max_body_bytes=args.max_body_bytes or limits.max_body_bytes, request_logger=request_logger,
            predictor=predictor)
    except grpc_server.BindError as error:
        print(f"error: --grpc-port: {error} (0 turns gRPC off)", file=sys.stderr)
        return False
    server.start()
    # Printed before the REST line ("Serving ..."), which scripts wait for.
    print(f"gRPC PredictionService and ModelService for {name} on {args.host}:{bound}", flush=True)
    return server


def _grpc_port(raw: str) -> int:
    import argparse

    if raw == "any":
        return GRPC_ANY_PORT
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {raw!r} (a number, 0 for off, or 'any')") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535 (0 turns gRPC off), got {raw}")
    return value


def add_parser(commands) -> None:
    from pipeline import configs

    parser = commands.add_parser("serve", help="serve the pushed model over TF Serving's REST and gRPC APIs")
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    parser.add_argument("--output-dir", help="the run's output directory (default: $SENTIMENT_OUTPUT_DIR or ./outputs)")
    configs.add_overrides_option(parser)
    parser.add_argument("--model-base-dir", help="a serving directory of numbered versions (default: where the "
                        "pipeline pushes for --dataset, --output-dir and --set, "
                        "<output-dir>/serving/sentiment-<dataset>)")
    parser.add_argument("--model-name", help="the <name> in /v1/models/<name> (default: the directory's name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501, TF Serving's REST port; 0 = any)")
    parser.add_argument("--grpc-port", type=_grpc_port, metavar="PORT", help="port of TF Serving's gRPC API "
                        "(PredictionService, ModelService; default: config serving.grpc_port, 8500, or any free "
                        "port with --port 0; 0 turns gRPC off; 'any' = any free port); as many threads as --threads")
    parser.add_argument("--threads", type=int, default=4, help="worker threads")
    parser.add_argument("--max-instances", type=int,
                        help="instances per request (default: config serving.max_instances)")
    parser.add_argument("--max-body-bytes", type=int,
                        help="request body limit (default: config serving.max_body_bytes)")
    parser.add_argument("--poll-seconds", type=float, help="how often to look for new versions")
    parser.add_argument("--log-requests", metavar="DIR", help="write answered requests as JSON lines to DIR "
                        "(for `python -m pipeline monitor`; file size, file count and queue limits: config "
                        "serving.log_file_bytes, log_max_files, log_queue_size)")
    parser.add_argument("--log-sample-rate", type=_rate, metavar="R", help="share of requests logged, 0 to 1 "
                        "(default: config serving.log_sample_rate)")
    parser.add_argument("--log-seed", type=int, help="seed of the request sampling (default: random)")
    from argparse import BooleanOptionalAction

    batching = parser.add_argument_group(
        "server-side batching", "TF Serving's batching parameters (pipeline/batching.py); defaults: config serving.*")
    batching.add_argument("--batching", action=BooleanOptionalAction, default=None,
                          help="merge concurrent requests into one model call (default: config serving.batching, "
                          "on)")
    batching.add_argument("--max-batch-size", type=int, metavar="N", help="texts per merged model call")
    batching.add_argument("--batch-timeout-micros", type=int, metavar="US", help="how long a batch that is not "
                          "full may wait for more requests (0: an idle thread takes it at once)")
    batching.add_argument("--num-batch-threads", type=int, metavar="N", help="batches run at once (0: one per core)")
    batching.add_argument("--max-enqueued-batches", type=int, metavar="N", help="batches that may wait per "
                          "version; a request beyond gets a 503")
    pools = parser.add_argument_group("TensorFlow", "thread pools, as TF Serving's flags; defaults: config serving.*")
    pools.add_argument("--tensorflow-intra-op-parallelism", type=_non_negative, metavar="N",
                       help="threads one op may split across (0: one per core; default: config "
                       "serving.intra_op_threads, 0)")
    pools.add_argument("--tensorflow-inter-op-parallelism", type=_non_negative, metavar="N",
                       help="ops run at once (0: one per core; default: config serving.inter_op_threads, 0)")
    # --threads: 4, or config serving.batching_server_threads with batching (make_predictor).
    parser.set_defaults(threads=None)


def _non_negative(raw: str) -> int:
    import argparse

    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: TensorFlow's default), got {raw}")
    return value


def _rate(raw: str) -> float:
    import argparse
    import math

    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {raw}")
    return value
