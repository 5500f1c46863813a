"""The console of a pipeline run: a few lines for a person, everything else in a log file.

While a `RunConsole` is open:

* file descriptors 1 and 2 point at the run's log file, so TensorFlow's C++
  logs, Beam, Keras and every `print` land there; with `verbose` they go
  through a pipe whose reader writes them to the log file and to the console;
* Python logging (absl, TFX, TensorFlow, warnings) is written to the log file
  by one handler, and a second handler (`ComponentLines`) turns TFX's
  "Component X is running." / "... is finished." and the Trainer's per-epoch
  Keras lines into one console line each, with wall times and key figures;
* on a terminal, a rich progress display shows what is running, for how long,
  and the Trainer's epochs; it is cleared when the run ends.

Console lines go to the process's original standard output.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, TextIO

# What TensorFlow's C++ logging keeps unless --verbose: warnings and errors (INFO dropped).
QUIET_TF_CPP_LEVEL = "1"
LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"

_COMPONENT = re.compile(r"^Component (\S+) is (running|finished)\.$")
_SKIPPED = re.compile(r"^Skipping component (\S+)\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")
_EPOCH = re.compile(r"^Epoch (\d+)/(\d+)$")
# Keras' verbose=2 line at the end of an epoch: "168/168 - 41s - loss: 0.61 - val_loss: 0.55 - 41s/epoch - ..."
_EPOCH_END = re.compile(r"^\s*(\d+)/(\d+) - .*?\bloss: ")
_METRIC = re.compile(r"\b([A-Za-z_][\w]*): (-?[\d.]+(?:e[-+]?\d+)?|nan|inf)\b")
# Keras' early stopping, said on the Trainer's closing line rather than on lines of their own.
_EARLY_STOP = re.compile(r"^Epoch (\d+): early stopping$")
# A component's own progress on long work (e.g. the ReaderPretrainer's corpus and share of the epoch).
_PROGRESS = re.compile(r"^progress: (.+)$")
_BEST_EPOCH = re.compile(r"^Restoring model weights from the end of the best epoch: (\d+)\.$")
# Per epoch: the training loss and the validation metrics, at most this many.
EPOCH_FIGURES = 4


def quiet_tensorflow(verbose: bool = False) -> bool:
    """Lowers TensorFlow's C++ log level unless `verbose` (a level the user set is kept).

    TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, at its first log message, which
    it writes while being imported: returns whether that is still to come.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_CPP_LEVEL)
    return "tensorflow" not in sys.modules


# Output written while the command line read its arguments and imported TensorFlow
# (`startup_output`), waiting for the run's log.
_startup_bytes: list[bytes] = []


@contextlib.contextmanager
def startup_output(verbose: bool = False):
    """What is written to fds 1 and 2 inside the block (TensorFlow's and TFX's import-time noise)
    goes to the next run's log instead of the console (unless `verbose`).

    If the block raises, the output is put back on stderr before the error travels on, so
    nothing is lost; if no run follows, it is dropped with the process.
    """
    quiet_tensorflow(verbose)
    if verbose:
        yield
        return
    import tempfile

    for stream in (sys.stdout, sys.stderr):
        _flush(stream)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 1)
        os.dup2(buffer.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            for stream in (sys.stdout, sys.stderr):
                _flush(stream)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            buffer.seek(0)
            captured = buffer.read()
            if failed:
                os.write(2, captured)
            elif captured:
                _startup_bytes.append(captured)


_exit_log: list[Path] = []


def exit_noise_to_log(log_file: Path) -> None:
    """What the interpreter writes to stderr while it shuts down (TensorFlow's "Exception ignored in:
    AtomicFunction.__del__" tracebacks) goes to `log_file`. For a process that ends after its run."""
    if not _exit_log:
        import atexit

        atexit.register(_stderr_to_exit_log)
    _exit_log[:] = [Path(log_file)]


def _stderr_to_exit_log() -> None:
    _flush(sys.stderr)
    try:
        fd = os.open(_exit_log[0], os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    os.dup2(fd, 2)
    os.close(fd)


def log_path(pipeline_root: Path, now: datetime.datetime | None = None) -> Path:
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%dT%H%M%S")
    return Path(pipeline_root) / "logs" / f"run-{stamp}.log"


def _clock() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S")


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


class ComponentLines(logging.Handler):
    """One console line per component start and end, and one per Trainer epoch.

    `write` prints a line; `figure(component)` returns the component's key
    figure once it has finished (or None); `progress` is an optional rich
    Progress that shows what is running.
    """

    def __init__(self, write: Callable[[str], None], figure: Callable[[str], str | None] | None = None,
                 progress=None, clock: Callable[[], float] = time.monotonic):
        super().__init__(logging.INFO)
        self._write = write
        self._figure = figure
        self._progress = progress
        self._clock = clock
        self._lock_lines = threading.Lock()
        self.running: str | None = None
        self._started = 0.0
        self._cached = False
        self._task = None
        self._epoch_started = 0.0
        self._epoch = self._epochs = 0
        self._notes: list[str] = []
        # (component, seconds, state) of every component that ended.
        self.finished: list[tuple[str, float, str]] = []

    def line(self, text: str) -> None:
        with self._lock_lines:
            self._write(f"[{_clock()}] {text}")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the log handler's business
            return
        if len(message) > 300:  # proto dumps and the like: never one of ours
            return
        try:
            self._handle(message.strip("\n"))
        except Exception:  # the console must never break the run
            self.handleError(record)

    def _handle(self, message: str) -> None:
        match = _COMPONENT.match(message)
        if match:
            name, event = match.groups()
            if event == "running":
                self.start(name)
            else:
                self.end(name)
            return
        if _CACHED.match(message) and self.running:
            self._cached = True
            return
        match = _SKIPPED.match(message)
        if match:
            self.line(f"{match.group(1):<26} skipped")
            return
        if self.running is None:
            return
        match = _PROGRESS.match(message)
        if match:
            self.line(f"{'':<26} {match.group(1)}")
            return
        match = _EPOCH.match(message)
        if match:
            epoch, epochs = int(match.group(1)), int(match.group(2))
            self._epoch_started = self._clock()
            self._epoch, self._epochs = epoch, epochs
            self._update(description=f"{self.running} epoch {epoch}/{epochs}", total=epochs, completed=epoch - 1)
            return
        match = _EPOCH_END.match(message)
        if match and self._epochs:
            self._epoch_end(message)
            return
        match = _EARLY_STOP.match(message)
        if match:
            self._notes.append(f"stopped early after epoch {match.group(1)}")
            return
        match = _BEST_EPOCH.match(message)
        if match:
            self._notes.append(f"weights of epoch {match.group(1)} kept")

    def _epoch_end(self, message: str) -> None:
        figures = dict(_METRIC.findall(message.split(" - ", 2)[-1]))
        shown = [("loss", figures["loss"])] if "loss" in figures else []
        shown += [(k, v) for k, v in figures.items() if k.startswith("val_")][:EPOCH_FIGURES - len(shown)]
        epoch = self._epoch
        took = self._clock() - self._epoch_started if self._epoch_started else 0.0
        text = ", ".join(f"{k} {float(v):.4f}" for k, v in shown)
        self.line(f"{'':<26} epoch {epoch:>2}/{self._epochs}: {text} ({_seconds(took)})")
        self._update(completed=epoch)

    def _update(self, **fields) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, **fields)

    def start(self, name: str) -> None:
        if self.running:  # the previous one never said it finished
            self.end(self.running, state="interrupted")
        self.running, self._started, self._cached = name, self._clock(), False
        self._epoch = self._epochs = 0
        self._epoch_started = 0.0
        self._notes = []
        self.line(f"{name:<26} started")
        if self._progress is not None:
            self._task = self._progress.add_task(name, total=None)

    def end(self, name: str, state: str = "done") -> None:
        seconds = self._clock() - self._started if self.running == name else 0.0
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
        self._task = None
        cached = self._cached and state == "done"
        figure = None
        if state == "done" and self._figure is not None:
            try:
                figure = self._figure(name)
            except Exception as error:  # a figure is a nicety; its absence is logged, not fatal
                logging.getLogger(__name__).info("No key figure for %s: %s", name, error)
        if self._notes:
            figure = "; ".join(([figure] if figure else []) + self._notes)
        self.running = None
        self.finished.append((name, seconds, "cached" if cached else state))
        verb = "done" if state == "done" else state
        text = f"{name:<26} {verb} in {_seconds(seconds)}" + (" (cached)" if cached else "")
        self.line(text + (f": {figure}" if figure else ""))

    def close_run(self, failed: bool) -> None:
        """At the end of a run: a component still running failed (or was interrupted)."""
        if self.running:
            self.end(self.running, state="failed" if failed else "interrupted")


class _Tee(threading.Thread):
    """Copies what the run writes to fds 1 and 2 (through a pipe) to the log file and the console."""

    def __init__(self, read_fd: int, log_fd: int, console_fd: int):
        super().__init__(name="console-tee", daemon=True)
        self.read_fd, self.log_fd, self.console_fd = read_fd, log_fd, console_fd

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            for fd in (self.log_fd, self.console_fd):
                try:
                    os.write(fd, chunk)
                except OSError:
                    pass


class RunConsole:
    """Context manager: the run's output goes to `log_file` (and with `verbose` also to the console).

    `console` is where the lines for a person go (default: the original
    standard output); `figure(component)` gives a component's key figure.
    """

    def __init__(self, log_file: Path, verbose: bool = False, console: TextIO | None = None,
                 figure: Callable[[str], str | None] | None = None, progress: bool | None = None):
        self.log_file = Path(log_file)
        self.verbose = verbose
        self._console_stream = console
        self._figure = figure
        self._want_progress = progress
        self.lines: ComponentLines | None = None
        self._entered = False

    # -- the console --------------------------------------------------------------------------
    def print(self, text: str = "") -> None:
        """Lines for a person: to the console (above the progress display on a terminal)."""
        if not self._entered:
            print(text, flush=True)
            return
        with self._print_lock:
            self._rich.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)
            _flush(self._out)
            if not self.verbose:  # the log tells the same story (with --verbose the console shows the log)
                self._file_stream.write(text + "\n")

    # -- entering and leaving -----------------------------------------------------------------
    def __enter__(self) -> "RunConsole":
        from rich.console import Console

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        self._log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        while _startup_bytes:
            os.write(self._log_fd, _startup_bytes.pop(0))
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        if self._console_stream is None:
            self._out = os.fdopen(os.dup(self._saved[1]), "w", encoding="utf-8", errors="replace", buffering=1)
            self._own_out = True
        else:
            self._out, self._own_out = self._console_stream, False
        self._tee = None
        if self.verbose:
            read_fd, write_fd = os.pipe()
            console_fd = self._out.fileno() if _has_fileno(self._out) else self._saved[1]
            self._tee = _Tee(read_fd, self._log_fd, console_fd)
            self._tee.start()
            target = write_fd
        else:
            target = self._log_fd
        os.dup2(target, 1)
        os.dup2(target, 2)
        if self.verbose:
            os.close(write_fd)
        self._print_lock = threading.RLock()
        self._rich = Console(file=self._out, highlight=False, emoji=False, soft_wrap=True)
        self._progress = None
        use_progress = self._rich.is_terminal if self._want_progress is None else self._want_progress
        if use_progress and not self.verbose:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), console=self._rich,
                                      transient=True, redirect_stdout=False, redirect_stderr=False)
            self._progress.start()
        self._install_logging()
        self._entered = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.lines is not None:
                self.lines.close_run(failed=exc_type is not None)
        finally:
            self._uninstall_logging()
            if self._progress is not None:
                self._progress.stop()
            for stream in (sys.stdout, sys.stderr):
                _flush(stream)
            for fd, saved in self._saved.items():
                os.dup2(saved, fd)
                os.close(saved)
            if self._tee is not None:
                # The pipe's last writers were fds 1 and 2; a child process that kept them keeps the tee alive.
                self._tee.join(timeout=5)
            os.close(self._log_fd)
            self._entered = False
            _flush(self._out)
            if self._own_out:
                self._out.close()

    def adopt_logging(self) -> None:
        """Call after importing libraries that add their own handlers to standard streams (TensorFlow does)."""
        for logger in (logging.getLogger(), logging.getLogger("tensorflow")):
            for handler in list(logger.handlers):
                if _is_std_stream_handler(handler):
                    logger.removeHandler(handler)
                    self._removed.append((logger, handler))
        self._keras_to_logging()

    def append_to_log(self, text: str) -> None:
        """Text (a traceback) appended to the log file; works after the console is closed too."""
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    # -- logging ------------------------------------------------------------------------------
    def _install_logging(self) -> None:
        root = logging.getLogger()
        self._removed: list[tuple[logging.Logger, logging.Handler]] = []
        self._file_stream = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
        self._file_handler = logging.StreamHandler(self._file_stream)
        self._file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._file_handler.setLevel(logging.INFO)
        self.lines = ComponentLines(self.print, self._figure, self._progress)
        root.addHandler(self._file_handler)
        root.addHandler(self.lines)
        absl_logger = logging.getLogger("absl")
        self._absl_level = absl_logger.level
        absl_logger.setLevel(logging.INFO)
        self._captured_warnings = logging.getLogger("py.warnings").propagate
        logging.captureWarnings(True)
        self._warning_filters = warnings.filters[:]
        self._keras_saved = None
        self.adopt_logging()

    def _uninstall_logging(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self._file_handler)
        root.removeHandler(self.lines)
        for logger, handler in self._removed:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logging.getLogger("absl").setLevel(self._absl_level)
        logging.captureWarnings(False)
        warnings.filters[:] = self._warning_filters
        if self._keras_saved is not None:
            io_utils, keras_logging, default, enabled = self._keras_saved
            keras_logging.INTERACTIVE_LOGGING_DEFAULT = default
            io_utils.INTERACTIVE_LOGGING.enable = enabled
        self._file_handler.flush()
        self._file_stream.close()

    def _keras_to_logging(self) -> None:
        """Keras' per-epoch lines go to absl logging (so ComponentLines sees them), not to stdout."""
        if self._keras_saved is not None or "tensorflow" not in sys.modules:
            return  # importing tf_keras would import TensorFlow
        try:
            from tf_keras.src.utils import io_utils, keras_logging
        except ImportError:
            return
        self._keras_saved = (io_utils, keras_logging, keras_logging.INTERACTIVE_LOGGING_DEFAULT,
                             getattr(io_utils.INTERACTIVE_LOGGING, "enable", keras_logging.INTERACTIVE_LOGGING_DEFAULT))
        keras_logging.INTERACTIVE_LOGGING_DEFAULT = False
        io_utils.INTERACTIVE_LOGGING.enable = False


def _is_std_stream_handler(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return type(handler) is logging.StreamHandler and stream is not None and stream in (
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def _flush(stream) -> None:
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass
