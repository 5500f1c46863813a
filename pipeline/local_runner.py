"""Runs the pipeline on this machine: Beam DirectRunner, ML Metadata in SQLite or on a server.

One run per pipeline and output directory at a time (exclusive_run). A run
that fails ends in one paragraph (explain_failure: what, in which component,
what to do) with the traceback in a log file; data errors say which data.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import tempfile
import time
import traceback

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from pathlib import Path  # noqa: E402

from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from components.review_example_gen import EmptySplitError, RowRejectedError  # noqa: E402
from components.review_sources import SourceFormatError  # noqa: E402
from components.validation_gate import DataValidationError  # noqa: E402
from pipeline import configs, metadata_store, run_summary  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402

# Failures caused by the data, reported as such rather than as a traceback.
DATA_ERRORS = (DataValidationError, EmptySplitError, RowRejectedError, SourceFormatError)


class _NamedRunDagRunner(tfx.orchestration.LocalDagRunner):
    """LocalDagRunner with the run id chosen by the caller, who then summarizes that run.

    TFX picks the id inside `run_with_ir`; with one store shared by several runs,
    "the newest run of this pipeline" may be another process's run.
    """

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def run_with_ir(self, pipeline, run_options=None):
        from tfx.dsl.compiler import constants
        from tfx.orchestration.portable import runtime_parameter_utils

        runtime_parameter_utils.substitute_runtime_parameter(
            pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: self.run_id})
        return super().run_with_ir(pipeline, run_options)


class PipelineFailed(RuntimeError):
    """The run stopped before pushing; the message says why."""


class RunInProgress(RuntimeError):
    """Another run of the same pipeline holds the output directory."""


@contextlib.contextmanager
def exclusive_run(config: configs.PipelineConfig):
    """One run per pipeline and output directory at a time; a second one refuses at once.

    Two runs on one pipeline root and metadata store would each read the
    other's executions as their own (the summary, the baseline model). The
    lock is an flock, so a run that is killed releases it with its process.
    """
    with open(config.lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise RunInProgress(
                f"another run of {config.pipeline_name} is using {config.output_dir} ({holder}); wait for it "
                "to finish, or pass another --output-dir") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}, started {datetime.datetime.now().isoformat(timespec='seconds')}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def failed_component(config: configs.PipelineConfig, run_id: str | None = None) -> str | None:
    """The component whose execution failed last in the metadata store, if any.

    An execution left RUNNING counts too: ml-metadata 1.16's PostgreSQL source
    cannot store a failure message holding a backslash (JSON escapes quotes
    and newlines with one), so TFX could not mark it FAILED.
    """
    try:
        store = run_summary.open_store(config.metadata)
        run = store.get_context_by_type_and_name("pipeline_run", run_id) if run_id else None
        executions = store.get_executions_by_context(run.id) if run else store.get_executions()
        ended = [e for e in executions if e.last_known_state in (e.FAILED, e.RUNNING)]
        return run_summary.component_id(store, max(ended, key=lambda e: e.id)) if ended else None
    except Exception:  # the store itself may be what broke
        return None


def write_traceback(config: configs.PipelineConfig, error: BaseException) -> str:
    """The full traceback, in a file under the pipeline root (or the temp dir if that is unwritable)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    for directory in (config.pipeline_root / "logs", Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{config.pipeline_name}-failure-{stamp}.log"
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    return "(could not be written)"


def _first_line(error: BaseException) -> str:
    message = str(error).strip().split(" [while running")[0]
    return f"{type(error).__name__}: {message.splitlines()[0] if message else ''}".rstrip(": ")


def _chain(error: BaseException) -> list[BaseException]:
    """The error and every exception it was raised from or while handling, outermost first."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def explain_failure(config: configs.PipelineConfig, error: BaseException, run_id: str | None = None) -> str:
    """One paragraph for a failure that is not the data's: what, where, what to do, and the log."""
    import errno

    chain = _chain(error)

    def first(test):
        return next((e for e in chain if test(e)), None)

    def os_error(numbers, text):
        return first(lambda e: (isinstance(e, OSError) and e.errno in numbers) or text in str(e))

    disk_full = os_error((errno.ENOSPC,), "No space left on device")
    read_only = os_error((errno.EACCES, errno.EROFS, errno.EPERM), "Read-only file system")
    corrupt = first(lambda e: type(e).__name__ == "DataLossError")
    # The store failing is the cause only when it is the first error; when it failed while
    # TFX recorded another error, that other error is what to report.
    store_lost = chain[-1] if "metadata source error" in str(chain[-1]) else None
    if store_lost:
        advice = (f"The ML Metadata store {config.metadata} stopped answering during the run: once it is back, "
                  "run the same command again; finished components are reused from the cache.")
    elif disk_full:
        advice = f"The disk holding {config.output_dir} is full: free space there, then run the same command again."
    elif read_only:
        advice = f"{config.output_dir} is not writable: pass a writable --output-dir or fix its permissions."
    elif corrupt:
        advice = ("A file of a cached artifact is truncated or corrupt: run again with --no-cache to "
                  "recompute every component.")
    else:
        advice = "Fix the cause and run the same command again: finished components are reused from the cache."
    what = _first_line(store_lost or disk_full or read_only or corrupt or chain[-1])
    where = failed_component(config, run_id)
    place = f" in {where}" if where else ""
    return (f"The run failed{place}: {what}\n{advice}\n"
            "Nothing was pushed by this run; the served model is unchanged.")


def _data_error_in(error: BaseException) -> BaseException | None:
    return next((e for e in _chain(error) if isinstance(e, DATA_ERRORS)), None)


def run(config: configs.PipelineConfig, verbose: bool = False) -> run_summary.RunSummary:
    """Runs every component, then returns (and writes) the run summary.

    Raises PipelineFailed with one paragraph (what, where, what to do) for
    every failure; the traceback goes to a log file it names (and to stderr
    with `verbose`).
    """
    # TFX's own format; unique per store as long as two runs do not start in the same microsecond.
    run_id = datetime.datetime.now().isoformat()
    try:
        config.lock_path.parent.mkdir(parents=True, exist_ok=True)
        config.pipeline_root.mkdir(parents=True, exist_ok=True)
        with exclusive_run(config):
            try:
                metadata_store.connect(config.metadata)  # creates the database on first use
            except metadata_store.MetadataStoreError as error:
                raise PipelineFailed(f"{error}\nNothing ran; the served model is unchanged.") from None
            return _run_locked(config, run_id)
    except (PipelineFailed, RunInProgress):
        raise
    except Exception as error:
        log = write_traceback(config, error)
        if verbose:
            traceback.print_exception(type(error), error, error.__traceback__)
        raise PipelineFailed(f"{explain_failure(config, error, run_id)}\nTraceback: {log}") from error


def _run_locked(config: configs.PipelineConfig, run_id: str) -> run_summary.RunSummary:
    metadata = config.metadata.connection_config()
    print(
        f"Running {config.pipeline_name} on {config.input_path}\n"
        f"  pipeline root: {config.pipeline_root}\n  metadata:      {config.metadata}",
        flush=True,
    )
    logging.set_verbosity(logging.INFO)
    started = time.time()
    try:
        _NamedRunDagRunner(run_id).run(create_pipeline(config, metadata))
    except Exception as error:
        cause = _data_error_in(error)
        if cause is None:
            raise
        # Beam appends "[while running ...]" to errors raised inside a DoFn.
        message = str(cause).split(" [while running")[0]
        raise PipelineFailed(
            f"{message}\nThe run stopped before training; nothing was pushed and the served model is unchanged."
        ) from error
    summary = run_summary.summarize_run(config.metadata, config.pipeline_name, run_id)
    summary.total_wall_time_s = round(time.time() - started, 1)
    try:
        from pipeline import report  # matplotlib and TFMA only once the run is done

        summary.report_path = str(report.write_report(config.metadata, config.pipeline_root, summary))
    except Exception:  # the report must not turn a finished run into a failed one
        logging.exception("Writing the run report failed")
    path = run_summary.write_summary(summary, config.pipeline_root)
    print(summary.format(), flush=True)
    print(f"Summary written to {path}", flush=True)
    return summary
