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
import sys
import tempfile
import time
import traceback
from pathlib import Path

from pipeline import configs, console, metadata_store, run_summary

# TFX, TensorFlow and the components are imported by `run`, once the console sends
# their import-time output to the run's log (and TensorFlow's C++ log level is set).

def data_errors() -> tuple[type[BaseException], ...]:
    """Failures caused by the data, reported as such rather than as a traceback."""
    from components.review_example_gen import EmptySplitError, RowRejectedError
    from components.review_sources import SourceFormatError
    from components.validation_gate import DataValidationError

    return (DataValidationError, EmptySplitError, RowRejectedError, SourceFormatError)


def _named_run_dag_runner(run_id: str):
    """LocalDagRunner with the run id chosen by the caller, who then summarizes that run.

    TFX picks the id inside `run_with_ir`; with one store shared by several runs,
    "the newest run of this pipeline" may be another process's run.
    """
    from tfx import v1 as tfx
    from tfx.dsl.compiler import constants
    from tfx.orchestration.portable import runtime_parameter_utils

    class NamedRunDagRunner(tfx.orchestration.LocalDagRunner):
        def run_with_ir(self, pipeline, run_options=None):
            runtime_parameter_utils.substitute_runtime_parameter(
                pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
            return super().run_with_ir(pipeline, run_options)

    return NamedRunDagRunner()


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
    return next((e for e in _chain(error) if isinstance(e, data_errors())), None)


def run(config: configs.PipelineConfig, verbose: bool = False) -> run_summary.RunSummary:
    """Runs every component, then returns (and writes) the run summary.

    The console gets a line per component start and end (and per Trainer
    epoch), then the summary; everything else goes to a log file under the
    pipeline root (`pipeline/console.py`), streamed to the console too with
    `verbose`. Raises PipelineFailed with one paragraph (what, where, what to
    do) and the log's path for every failure; the traceback is in that log
    (and on stderr with `verbose`).
    """
    console.quiet_tensorflow(verbose)
    # TFX's own format; unique per store as long as two runs do not start in the same microsecond.
    run_id = datetime.datetime.now().isoformat()
    session = None
    try:
        config.lock_path.parent.mkdir(parents=True, exist_ok=True)
        config.pipeline_root.mkdir(parents=True, exist_ok=True)
        with exclusive_run(config):
            try:
                metadata_store.connect(config.metadata)  # creates the database on first use
            except metadata_store.MetadataStoreError as error:
                raise PipelineFailed(f"{error}\nNothing ran; the served model is unchanged.") from None
            session = console.RunConsole(console.log_path(config.pipeline_root), verbose=verbose,
                                         figure=lambda component: key_figure(config, run_id, component))
            if not verbose and _is_the_command_line():
                console.exit_noise_to_log(session.log_file)
            with session:
                return _run_locked(config, run_id, session)
    except RunInProgress:
        raise
    except PipelineFailed as failure:
        if session is None or failure.__cause__ is None:
            raise
        log = _log_traceback(config, session, failure.__cause__)
        raise PipelineFailed(f"{failure}\nLog: {log}") from failure.__cause__
    except Exception as error:
        log = _log_traceback(config, session, error)
        if verbose:
            traceback.print_exception(type(error), error, error.__traceback__)
        raise PipelineFailed(f"{explain_failure(config, error, run_id)}\nTraceback: {log}") from error


def _is_the_command_line() -> bool:
    """This process is `python -m pipeline`: it ends after the run."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "pipeline.__main__"


def _log_traceback(config: configs.PipelineConfig, session: console.RunConsole | None, error: BaseException) -> str:
    """The traceback, appended to the run's log (or in a file of its own when there is no log yet)."""
    if session is not None:
        try:
            session.append_to_log("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            return str(session.log_file)
        except OSError:
            pass
    return write_traceback(config, error)


def _run_locked(config: configs.PipelineConfig, run_id: str, session: console.RunConsole) -> run_summary.RunSummary:
    session.print(
        f"Running {config.pipeline_name} on {config.input_path}\n"
        f"  pipeline root: {config.pipeline_root}\n  metadata:      {config.metadata}\n"
        f"  log:           {session.log_file}" + ("" if session.verbose else " (--verbose to see it here)"))
    from absl import logging

    from pipeline.pipeline import create_pipeline  # TFX and TensorFlow: their noise goes to the log

    session.adopt_logging()
    metadata = config.metadata.connection_config()
    logging.set_verbosity(logging.INFO)
    started = time.time()
    try:
        _named_run_dag_runner(run_id).run(create_pipeline(config, metadata))
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
    session.print(summary.format())
    session.print(f"Summary written to {path}")
    return summary


# -- key figures: one short text per component, read back from ML Metadata once it has finished --------

def key_figure(config: configs.PipelineConfig, run_id: str, component: str) -> str | None:
    """What `component` produced in run `run_id`, in a few words (None when there is nothing to say)."""
    store = run_summary.open_store(config.metadata)
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is None:
        return None
    executions = [e for e in store.get_executions_by_context(run.id)
                  if run_summary.component_id(store, e) == component]
    if not executions:
        return None
    execution = max(executions, key=lambda e: e.id)
    outputs = {}
    for artifact in run_summary._output_artifacts(store, execution.id):
        outputs.setdefault(run_summary._artifact_type(store, artifact), []).append(artifact)
    if component.startswith("DataValidationGate"):
        return _gate_figure(None, outputs)
    for kind, describe in _FIGURES.items():
        if kind in outputs:
            return describe(outputs[kind][0], outputs)
    return None


def _split_counts(uri: str) -> dict[str, int]:
    import tensorflow as tf

    counts = {}
    for split in sorted(Path(uri).glob("Split-*")):
        files = [str(f) for f in split.iterdir() if f.is_file()]
        counts[split.name[len("Split-"):]] = sum(1 for _ in tf.data.TFRecordDataset(files, "GZIP"))
    return counts


def _examples_figure(artifact, _outputs) -> str | None:
    props = {key: value.int_value for key, value in artifact.custom_properties.items()
             if key in run_summary.INGESTION_KEYS}
    if not props:
        return None
    text = f"{props.get('rows_in', '?')} rows in, {props.get('examples_out', '?')} examples out"
    if props.get("rows_quarantined"):
        text += f", {props['rows_quarantined']} quarantined"
    try:
        split_names = artifact.properties["split_names"].string_value
        counts = _split_counts(artifact.uri) if split_names else {}
        if counts and sum(counts.values()) == props.get("examples_out"):
            text += " (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
    except Exception:
        pass
    return text


def _anomalies_figure(artifact, _outputs) -> str:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found = {}
    for path in sorted(Path(artifact.uri).glob("Split-*/SchemaDiff.pb")):
        anomalies = anomalies_pb2.Anomalies.FromString(path.read_bytes())
        found[path.parent.name[len("Split-"):]] = sorted(anomalies.anomaly_info)
    if (Path(artifact.uri) / "drift.json").exists():
        return "drift checked"
    if not any(found.values()):
        return "no anomalies"
    return "anomalies: " + "; ".join(f"{split}: {', '.join(features)}" for split, features in found.items() if features)


def _gate_figure(_artifact, outputs) -> str:
    return "data passed the gate"


def _vocabulary_figure(artifact, _outputs) -> str | None:
    from models import features

    path = Path(artifact.uri) / "transform_fn" / "assets" / features.VOCABULARY_NAME
    if not path.exists():
        return None
    with path.open("rb") as f:
        return f"vocabulary of {sum(1 for _ in f)} tokens"


def _trainer_figure(artifact, _outputs) -> str | None:
    history = run_summary._read_json(Path(artifact.uri) / "history.json") or {}
    epochs = history.get("epochs_run")
    if not epochs:
        return None
    from models import features

    if history.get("started_from") == features.PRETRAINED_READER:
        return f"{len(epochs)} epoch(s), from the pretrained reader"
    return f"{len(epochs)} epoch(s)" + (", warm start" if history.get("warm_start") else "")


def _reader_figure(artifact, _outputs) -> str | None:
    """The pretrained reader (components/reader_pretrainer.py): what it read and its last validation loss."""
    texts = run_summary._custom_int(artifact, "texts")
    if texts is None:
        return None
    properties = artifact.custom_properties
    tokens = run_summary._custom_int(artifact, "tokens") or 0
    if run_summary._custom_str(artifact, "objective") == "labelled_sentences":
        text = f"classifier pretrained on {texts:,} labelled sentences ({tokens:,} tokens)"
        if "val_accuracy" in properties:
            text += f", val_accuracy {properties['val_accuracy'].double_value:.4f}"
    else:
        text = f"reader pretrained on {texts:,} texts ({tokens:,} tokens)"
        if "val_loss" in properties:
            text += f", val_loss {properties['val_loss'].double_value:.4f}"
    if run_summary._custom_str(artifact, "reused_from"):
        text += "; copied from an earlier run (the same texts, settings and code)"
    return text


def _evaluation_figure(artifact, outputs) -> str:
    blessing = outputs.get("ModelBlessing", [None])[0]
    blessed = blessing is not None and run_summary._custom_int(blessing, "blessed") == 1
    try:
        metrics = run_summary.load_metrics(artifact.uri)
    except Exception:
        metrics = {}
    shown = [f"{k} {metrics[k]:.4f}" for k in ("accuracy", "binary_accuracy", "auc", "AUC") if k in metrics]
    return ", ".join(shown + ["blessed" if blessed else "NOT blessed"])


def _infra_figure(artifact, _outputs) -> str:
    if run_summary._custom_int(artifact, "blessed") == 1:
        return "serving canaries passed"
    return "serving canaries FAILED: " + (run_summary._custom_str(artifact, "failures") or "see the log")


def _push_figure(artifact, _outputs) -> str:
    if run_summary._custom_int(artifact, "pushed") == 1:
        version = run_summary._custom_str(artifact, "pushed_version")
        return f"pushed version {version}" if version else "pushed"
    if "already_served_version" in artifact.custom_properties:
        return f"not pushed: already served as version {run_summary._custom_int(artifact, 'already_served_version')}"
    return "not pushed"


# The output type that says most about each component, in order of preference.
_FIGURES = {
    "ModelEvaluation": _evaluation_figure,
    "PushedModel": _push_figure,
    "InfraBlessing": _infra_figure,
    "ModelRun": _trainer_figure,
    "Model": _reader_figure,  # the Trainer's figure is its ModelRun's, above
    "TransformGraph": _vocabulary_figure,
    "ExampleAnomalies": _anomalies_figure,
    "Examples": _examples_figure,
}
