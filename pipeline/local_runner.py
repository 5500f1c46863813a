"""Runs the pipeline on this machine: Beam DirectRunner, SQLite ML Metadata."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from components.review_example_gen import EmptySplitError, RowRejectedError  # noqa: E402
from components.review_sources import SourceFormatError  # noqa: E402
from components.validation_gate import DataValidationError  # noqa: E402
from pipeline import configs, run_summary  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402

# Failures caused by the data, reported as such rather than as a traceback.
DATA_ERRORS = (DataValidationError, EmptySplitError, RowRejectedError, SourceFormatError)


class PipelineFailed(RuntimeError):
    """The run stopped before pushing; the message says why."""


def _data_error_in(error: BaseException) -> BaseException | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, DATA_ERRORS):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def run(config: configs.PipelineConfig) -> run_summary.RunSummary:
    """Runs every component, then returns (and writes) the run summary."""
    config.metadata_path.parent.mkdir(parents=True, exist_ok=True)
    config.pipeline_root.mkdir(parents=True, exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(config.metadata_path))
    print(
        f"Running {config.pipeline_name} on {config.input_path}\n"
        f"  pipeline root: {config.pipeline_root}\n  metadata:      {config.metadata_path}",
        flush=True,
    )
    logging.set_verbosity(logging.INFO)
    started = time.time()
    try:
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata))
    except Exception as error:
        cause = _data_error_in(error)
        if cause is None:
            raise
        # Beam appends "[while running ...]" to errors raised inside a DoFn.
        message = str(cause).split(" [while running")[0]
        raise PipelineFailed(
            f"{message}\nThe run stopped before training; nothing was pushed and the served model is unchanged."
        ) from error
    summary = run_summary.summarize_run(config.metadata_path, config.pipeline_name)
    summary.total_wall_time_s = round(time.time() - started, 1)
    try:
        from pipeline import report  # matplotlib and TFMA only once the run is done

        summary.report_path = str(report.write_report(config.metadata_path, config.pipeline_root, summary))
    except Exception:  # the report must not turn a finished run into a failed one
        logging.exception("Writing the run report failed")
    path = run_summary.write_summary(summary, config.pipeline_root)
    print(summary.format(), flush=True)
    print(f"Summary written to {path}", flush=True)
    return summary
