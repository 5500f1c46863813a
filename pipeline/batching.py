"""Server-side batching as TF Serving does it: concurrent requests merged into one model call.

The interface (REST in pipeline/serve.py; the gRPC server calls the same object):

    predictor = batching.make_predictor(repository, model_name, parameters)  # Batcher, or Direct if None
    served_version, arrays = predictor.predict(version, texts, outputs)
    predictor.stop()                                                          # at shutdown

* `version`: an int, or None for the highest loaded version;
* `texts`: a non-empty list of str (raw texts: the SavedModel's Transform graph tokenizes);
* `outputs`: output names among predict.OUTPUTS ("label", "probability", "length",
  "attention", "trajectory"); None or empty means all of them (as TF Serving's
  `output_filter`);
* returns the version that answered and a dict of numpy arrays, one row per text of
  this request, in its order: label [n] int64, probability [n] float32, length [n]
  int64, attention and trajectory [n, w] float32 with w = the longest length of this
  request's texts (its own padding: the answer does not depend on what it was merged
  with); predict.rows(arrays, fields) turns them into REST's per-text dicts. A request
  that asks for neither attention nor trajectory is run by the version's per-text
  signature (predict.run_signature), which does not compute them: the same other
  outputs, sooner;
* raises a PredictError whose `code` is the gRPC status name and `http_status` the
  REST one: InvalidArgument (unknown output name; 400), NotFound (no such version
  loaded; 404), Unavailable (no version loaded yet, the queue is full, or the server
  is stopping; 503). Anything the model raises propagates as it is (an internal error).

Batcher (TF Serving's BasicBatchScheduler, with its four parameters):

* one queue per loaded version and kind of answer, with or without per-token outputs (a
  request is resolved to a version first, so a batch never mixes versions and a request is
  never split across them; TF Serving too batches each signature apart); a request joins the
  newest open batch of its version's queue if its texts fit in `max_batch_size`,
  otherwise it opens a new batch. A request larger than max_batch_size is not split:
  it makes a batch of its own (REST caps requests at max_instances anyway);
* `num_batch_threads` threads (0 = one per CPU core, TF Serving's default) each take
  the oldest ready batch: one that is full, or that a newer batch follows, or that is
  `batch_timeout_micros` old. With a timeout of 0 (the default here, as in TF Serving)
  an idle thread takes a lone request at once, so batching adds no wait when the server
  is idle, and requests that arrive while the threads are busy in the model are merged;
* a version's queue holds at most `max_enqueued_batches` batches waiting for a thread
  (the ones being run do not count): a request that would need one more is refused at
  once with Unavailable ("queue full"), it never waits for room;
* a batch is one call of the signature on the concatenated texts; the export pads a
  batch to its longest text (rounded up to the training length multiple), so merged
  texts are padded only to the longest of the merged batch. Each request then gets its
  own rows. If the merged call raises, each request of the batch is run again on its
  own, so one request that breaks the model fails only itself.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, NamedTuple

from pipeline import predict

log = logging.getLogger("sentiment.batching")


class PredictError(Exception):
    """A request the predictor refuses; `code` is the gRPC status name, `http_status` REST's."""

    code = "INTERNAL"
    http_status = 500


class InvalidArgument(PredictError):
    code, http_status = "INVALID_ARGUMENT", 400


class NotFound(PredictError):
    code, http_status = "NOT_FOUND", 404


class Unavailable(PredictError):
    code, http_status = "UNAVAILABLE", 503


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's batching parameters (its batching_parameters file has the same names)."""

    max_batch_size: int = 128
    batch_timeout_micros: int = 0
    num_batch_threads: int = 0  # 0: one per CPU core
    max_enqueued_batches: int = 16

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("batch_timeout_micros", "num_batch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")

    @property
    def threads(self) -> int:
        return self.num_batch_threads or os.cpu_count() or 1


def check_outputs(outputs: Iterable[str] | None) -> tuple[str, ...]:
    """The asked output names in predict.OUTPUTS order (all for None or empty); InvalidArgument if unknown."""
    if not outputs:
        return predict.OUTPUTS
    if isinstance(outputs, str):
        outputs = [outputs]
    asked = set(outputs)
    unknown = sorted(asked - set(predict.OUTPUTS), key=str)
    if unknown:
        raise InvalidArgument(f"unknown output {str(unknown[0])[:40]!r} in output_filter; the outputs are "
                              f"{', '.join(predict.OUTPUTS)}")
    return tuple(name for name in predict.OUTPUTS if name in asked)


def select(outputs: dict[str, Any], start: int, stop: int, fields: tuple[str, ...]) -> dict[str, Any]:
    """Rows start:stop of the asked fields; per-token fields cut to the longest length of those rows.
    A field the model does not output (rating, without a rating head) is left out."""
    width = None
    if any(name in predict.PER_TOKEN_OUTPUTS for name in fields) and "length" in outputs:
        lengths = outputs["length"][start:stop]
        width = int(lengths.max()) if len(lengths) else 0
    return {name: (outputs[name][start:stop, :width] if name in predict.PER_TOKEN_OUTPUTS and width is not None
                   else outputs[name][start:stop]) for name in fields if name in outputs}


class _Resolver:
    """The version a request goes to, with the errors of the REST server."""

    def __init__(self, repository, model_name: str = "model",
                 run: Callable[[Any, list[str], bool], dict[str, Any]] | None = None):
        self.repository = repository
        self.model_name = model_name
        # run(signature, texts, per_token) -> arrays; per_token False: attention and trajectory unneeded.
        self._run = run or predict.run_signature

    def resolve(self, version: int | None):
        served, signature = self.repository.get(version)
        if signature is None:
            if served is None:
                raise Unavailable(f"model {self.model_name!r} has no version loaded yet")
            raise NotFound(f"model {self.model_name!r} has no version {version}; versions: "
                           f"{self.repository.versions()}")
        return served, signature


class Direct(_Resolver):
    """The same interface without batching: each request is its own model call, in the caller's thread."""

    def predict(self, version: int | None, texts: list[str], outputs: Iterable[str] | None = None):
        fields = check_outputs(outputs)
        served, signature = self.resolve(version)
        arrays = self._run(signature, list(texts), predict.needs_per_token(fields))
        return served, select(arrays, 0, len(texts), fields)

    def counters(self) -> dict[str, int] | None:
        return None

    def stop(self) -> None:
        pass


class _Task:
    __slots__ = ("texts", "future")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.future: Future = Future()


class _QueueKey(NamedTuple):
    """What a batch must share: the version (and its loaded signature), and whether per-token
    outputs are computed."""

    version: Any
    signature_id: int
    per_token: bool


class _Batch:
    __slots__ = ("key", "signature", "tasks", "size", "deadline")

    def __init__(self, key: _QueueKey, signature, deadline: float):
        self.key, self.signature, self.deadline = key, signature, deadline
        self.tasks: list[_Task] = []
        self.size = 0


class Batcher(_Resolver):
    """Merges concurrent requests for one version into one model call (see the module docstring)."""

    def __init__(self, repository, model_name: str = "model", parameters: BatchingParameters | None = None,
                 run: Callable[[Any, list[str], bool], dict[str, Any]] | None = None):
        super().__init__(repository, model_name, run)
        self.parameters = parameters or BatchingParameters()
        self._timeout = self.parameters.batch_timeout_micros / 1e6
        self._cond = threading.Condition()
        self._queues: dict[_QueueKey, collections.deque[_Batch]] = {}
        self._stopping = False
        self._counters = {"batches": 0, "requests": 0, "instances": 0, "largest_batch": 0, "rejected": 0,
                          "failed_batches": 0}
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(self.parameters.threads)]
        for thread in self._threads:
            thread.start()

    # --- the request side

    def predict(self, version: int | None, texts: list[str], outputs: Iterable[str] | None = None):
        fields = check_outputs(outputs)
        served, signature = self.resolve(version)
        task = _Task(list(texts))
        self._enqueue(_QueueKey(served, id(signature), predict.needs_per_token(fields)), signature, task)
        merged, start = task.future.result()
        return served, select(merged, start, start + len(task.texts), fields)

    def _enqueue(self, key: _QueueKey, signature, task: _Task) -> None:
        size, limits = len(task.texts), self.parameters
        with self._cond:
            if self._stopping:
                raise Unavailable("the server is stopping")
            queue = self._queues.get(key)
            if queue and queue[-1].size + size <= limits.max_batch_size:
                batch = queue[-1]
            else:
                if queue is not None and len(queue) >= limits.max_enqueued_batches:
                    self._counters["rejected"] += 1
                    raise Unavailable(f"the batching queue of version {key.version} is full ({len(queue)} batches of "
                                      f"up to {limits.max_batch_size} texts waiting, max_enqueued_batches="
                                      f"{limits.max_enqueued_batches}); retry later")
                batch = _Batch(key, signature, time.monotonic() + self._timeout)
                self._queues.setdefault(key, collections.deque()).append(batch)
            batch.tasks.append(task)
            batch.size += size
            self._cond.notify()

    # --- the batch threads

    def _ready(self, queue: collections.deque[_Batch], now: float) -> bool:
        head = queue[0]
        return len(queue) > 1 or head.size >= self.parameters.max_batch_size or now >= head.deadline

    def _take(self) -> _Batch | None:
        """The oldest ready batch, waiting for one; None once stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                ready = [q for q in self._queues.values() if self._ready(q, now)]
                if ready:
                    queue = min(ready, key=lambda q: q[0].deadline)
                    batch = queue.popleft()
                    if not queue:
                        del self._queues[batch.key]
                    if self._queues:
                        self._cond.notify()  # more work: another idle thread may take it
                    return batch
                deadlines = [q[0].deadline for q in self._queues.values()]
                self._cond.wait(max(0.0, min(deadlines) - now) if deadlines else None)
            return None

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except BaseException as error:  # never leave a request waiting
                for task in batch.tasks:
                    if not task.future.done():
                        task.future.set_exception(error)
                if not isinstance(error, Exception):
                    raise

    def _run_batch(self, batch: _Batch) -> None:
        texts = list(itertools.chain.from_iterable(task.texts for task in batch.tasks))
        with self._cond:
            counters = self._counters
            counters["batches"] += 1
            counters["requests"] += len(batch.tasks)
            counters["instances"] += len(texts)
            counters["largest_batch"] = max(counters["largest_batch"], len(texts))
        try:
            merged = self._run(batch.signature, texts, batch.key.per_token)
        except Exception as error:
            if len(batch.tasks) == 1:
                batch.tasks[0].future.set_exception(error)
                return
            with self._cond:
                self._counters["failed_batches"] += 1
            log.warning("a merged batch of %d requests failed (%s: %s): running them one by one",
                        len(batch.tasks), type(error).__name__, error)
            for task in batch.tasks:
                try:
                    task.future.set_result((self._run(batch.signature, task.texts, batch.key.per_token), 0))
                except Exception as own:
                    task.future.set_exception(own)
            return
        start = 0
        for task in batch.tasks:
            task.future.set_result((merged, start))
            start += len(task.texts)

    # --- the rest

    def counters(self) -> dict[str, int]:
        """batches, requests and instances run, the largest batch, requests refused (queue full), and
        what waits now (queued_batches, queued_instances)."""
        with self._cond:
            return {**self._counters, "queued_batches": sum(len(q) for q in self._queues.values()),
                    "queued_instances": sum(b.size for q in self._queues.values() for b in q)}

    def stop(self, timeout: float = 10.0) -> None:
        """Refuses new requests, answers the queued ones Unavailable and stops the threads."""
        with self._cond:
            self._stopping = True
            pending = [task for queue in self._queues.values() for batch in queue for task in batch.tasks]
            self._queues.clear()
            self._cond.notify_all()
        for task in pending:
            task.future.set_exception(Unavailable("the server is stopping"))
        for thread in self._threads:
            thread.join(timeout)


def make_predictor(repository, model_name: str, parameters: BatchingParameters | None,
                   run: Callable[[Any, list[str], bool], dict[str, Any]] | None = None):
    """A Batcher with `parameters`, or Direct (no batching) for None."""
    if parameters is None:
        return Direct(repository, model_name, run)
    return Batcher(repository, model_name, parameters, run)
