"""Request logging for `python -m pipeline serve --log-requests DIR`.

One JSON line per logged instance, in DIR/requests-<UTC YYYYmmddTHHMMSSffffff>.jsonl:

    {"time": 1764400000.123, "model_version": 3, "text": "...", "probability": 0.91, "label": 1}

`time` is when the request was answered (unix seconds), `model_version` the
version that answered it, `probability` and `label` what it answered.
`python -m pipeline monitor` reads these files back (pipeline/monitor.py).

The request thread only decides whether to log (per request: every instance
of a sampled request is logged, none of the others; a seedable RNG) and
appends the request to a bounded queue; a background writer thread formats
and writes the lines. The queue holds at most `queue_size` records: a request
whose records do not fit is dropped whole and counted, so a slow disk never
delays an answer. Nothing here raises into the request: failures are counted
(`errors`) and logged.

Files: the current file is written in place and flushed after every batch of
lines, so a reader sees complete lines plus at most one partial last line
(readers skip a last line without its newline). A file is rotated before a
line would take it past `file_bytes` (a single line longer than that gets a
file of its own), and beyond `max_files` files the oldest are deleted (names
sort by time). Counters, all in records (instances): logged (written),
sampled_out, dropped (queue full), errors (lost to a write or format error),
and files_rotated, files_deleted.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import math
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

log = logging.getLogger("sentiment.request_log")

FILE_PREFIX = "requests-"
FILE_SUFFIX = ".jsonl"
_STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
FILE_PATTERN = re.compile(r"requests-(\d{8}T\d{12})\.jsonl(\.gz)?")
RECORD_KEYS = ("time", "model_version", "text", "probability", "label")


def file_name(when: float) -> str:
    """requests-<UTC YYYYmmddTHHMMSSffffff>.jsonl for a unix time."""
    stamp = datetime.datetime.fromtimestamp(when, tz=datetime.timezone.utc).strftime(_STAMP_FORMAT)
    return f"{FILE_PREFIX}{stamp}{FILE_SUFFIX}"


def _parse_stamp(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, _STAMP_FORMAT).replace(tzinfo=datetime.timezone.utc).timestamp()


def log_files(directory: Path) -> list[Path]:
    """The request log files in `directory` (plain and gzipped), oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [Path(directory) / n for n in sorted(names) if FILE_PATTERN.fullmatch(n)]


def format_record(when: float, model_version: int, text: str, result: dict[str, Any]) -> str:
    return json.dumps({"time": round(when, 6), "model_version": int(model_version), "text": text,
                       "probability": float(result["probability"]), "label": int(result["label"])},
                      ensure_ascii=False) + "\n"


class RequestLogger:
    """Samples requests and writes their instances as JSON lines from a background thread.

    `log()` never blocks on I/O and never raises; `close()` writes what is
    queued, closes the file and stops the thread. `clock` and `seed` are for tests.
    """

    def __init__(self, directory: Path | str, sample_rate: float = 1.0, file_bytes: int = 64 << 20,
                 max_files: int = 20, queue_size: int = 10_000, seed: int | None = None,
                 clock: Callable[[], float] = time.time):
        if not 0.0 <= sample_rate <= 1.0 or math.isnan(sample_rate):
            raise ValueError(f"the sample rate must be between 0 and 1, got {sample_rate}")
        if file_bytes < 1 or max_files < 1 or queue_size < 1:
            raise ValueError(f"file_bytes, max_files and queue_size must be positive, got "
                             f"{file_bytes}, {max_files}, {queue_size}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self.file_bytes = file_bytes
        self.max_files = max_files
        self.queue_size = queue_size
        self._clock = clock
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._cond = threading.Condition()  # guards _pending, _pending_records, _closing, counters
        self._pending: collections.deque = collections.deque()
        self._pending_records = 0
        self._busy = False  # the writer holds a batch it took from the queue
        self._closing = False
        self._counters = dict.fromkeys(("logged", "sampled_out", "dropped", "errors", "files_rotated",
                                        "files_deleted"), 0)
        self._file = None
        self._path: Path | None = None
        self._size = 0
        self._last_stamp = ""
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    # --- the request side

    def log(self, model_version: int, texts: Sequence[str], results: Sequence[dict[str, Any]]) -> bool:
        """Queues one answered request; True if it was queued. Never raises, never waits for I/O."""
        try:
            n = len(texts)
            with self._rng_lock:
                sampled = self.sample_rate >= 1.0 or self._rng.random() < self.sample_rate
            with self._cond:
                if self._closing:
                    self._counters["dropped"] += n
                    return False
                if not sampled:
                    self._counters["sampled_out"] += n
                    return False
                if self._pending_records + n > self.queue_size:
                    self._counters["dropped"] += n
                    return False
                self._pending.append((self._clock(), model_version, list(texts), list(results)))
                self._pending_records += n
                self._cond.notify()
            return True
        except Exception:  # logging must never fail a request
            log.exception("request logging failed")
            with self._cond:
                self._counters["errors"] += len(texts) if hasattr(texts, "__len__") else 1
            return False

    def counters(self) -> dict[str, int]:
        with self._cond:
            return {**self._counters, "queued": self._pending_records}

    # --- the writer side

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until everything queued so far is written (or timeout); True if it is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 30.0) -> dict[str, int]:
        """Writes what is queued, closes the file, stops the writer; returns the counters."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("request log writer still busy after %.0f s; %d record(s) may be lost", timeout,
                        self.counters()["queued"])
        return self.counters()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    break
                batch = list(self._pending)
                self._pending.clear()
                self._pending_records = 0
                self._busy = True
            try:
                self._write_batch(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        self._close_file()

    def _write_batch(self, batch: Iterable[tuple]) -> None:
        for when, version, texts, results in batch:
            for text, result in zip(texts, results):
                try:
                    line = format_record(when, version, text, result).encode("utf-8")
                    self._write_line(line)
                except Exception as error:  # a full disk, a bad result: count, keep serving
                    with self._cond:
                        self._counters["errors"] += 1
                    if self._counters["errors"] == 1 or self._counters["errors"] % 1000 == 0:
                        log.error("request log: a record was lost (%d so far): %s: %s", self._counters["errors"],
                                  type(error).__name__, error)
                    self._close_file()  # start afresh with a new file on the next line
                    continue
                with self._cond:
                    self._counters["logged"] += 1
        try:
            if self._file is not None:
                self._file.flush()
        except OSError as error:
            log.error("request log: flushing %s failed: %s", self._path, error)
            self._close_file()

    def _write_line(self, line: bytes) -> None:
        if self._file is not None and self._size and self._size + len(line) > self.file_bytes:
            self._close_file()
            with self._cond:
                self._counters["files_rotated"] += 1
        if self._file is None:
            self._open_file()
        self._file.write(line)
        self._size += len(line)

    def _open_file(self) -> None:
        when = self._clock()
        # Names must sort after every file there (the oldest are deleted by name, readers
        # go by name), even after a restart with a clock that went back; never reuse a file.
        newest = max([p.name.split(".", 1)[0] for p in log_files(self.directory)]
                     + [f"{FILE_PREFIX}{self._last_stamp}"])
        while True:
            name = file_name(when)
            if name.split(".", 1)[0] > newest:
                break
            when = max(when + 1e-6, _parse_stamp(newest[len(FILE_PREFIX):]) + 1e-6) if newest != FILE_PREFIX \
                else when + 1e-6
        self._last_stamp = name[len(FILE_PREFIX):-len(FILE_SUFFIX)]
        self._path = self.directory / name
        self._file = open(self._path, "ab")
        self._size = 0
        self._delete_oldest()

    def _delete_oldest(self) -> None:
        files = log_files(self.directory)
        for path in files[:max(0, len(files) - self.max_files)]:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            with self._cond:
                self._counters["files_deleted"] += 1

    def _close_file(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError as error:
            log.error("request log: closing %s failed: %s", self._path, error)
        self._file = None
        self._size = 0
