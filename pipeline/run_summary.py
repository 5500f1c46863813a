"""What a run did, read back from ML Metadata: per-component wall time, metrics,
blessing and pushed path. Printed at the end of a run and written as JSON
under the pipeline root, so a run can be audited without the logs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.metadata_store import StoreAddress, as_address, connect

SUMMARY_FILE = "run_summary.json"
INGESTION_KEYS = ("rows_in", "examples_out", "rows_quarantined", "test_texts_in_training")
_STATE_NAMES = {
    value: name for name, value in metadata_store_pb2.Execution.State.items()
}


@dataclass
class ComponentRun:
    component: str
    state: str
    wall_time_s: float


@dataclass
class RunSummary:
    pipeline_name: str
    run_id: str
    # The ML Metadata store the run recorded itself in (a URI without secrets).
    metadata_uri: str = ""
    components: list[ComponentRun] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    # Rows in, examples out, rows quarantined, test texts also in training.
    ingestion: dict[str, int] = field(default_factory=dict)
    blessed: bool | None = None
    pushed: bool = False
    pushed_path: str | None = None
    # Not pushed because the newest served version is this very model.
    already_served_version: int | None = None
    evaluation_uri: str | None = None
    model_uri: str | None = None
    anomalies_uri: str | None = None
    total_wall_time_s: float = 0.0
    # The run report (pipeline/report.py), when it was written.
    report_path: str | None = None
    # With an input in spans: the span this run read, the spans it trained on,
    # and its drift from the previous validated span (components/drift_check.py).
    span: int | None = None
    training_spans: list[int] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)
    # Epochs the Trainer ran, and what a warm start carried over (None: a cold start).
    epochs_run: int | None = None
    warm_start: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def format(self) -> str:
        lines = [f"Run {self.run_id} of {self.pipeline_name}"]
        if self.metadata_uri:
            lines.append(f"  metadata store: {self.metadata_uri}")
        lines += ["  component                      state      wall time"]
        for run in self.components:
            lines.append(f"  {run.component:<30} {run.state:<10} {run.wall_time_s:8.1f} s")
        lines.append(f"  {'total':<30} {'':<10} {self.total_wall_time_s:8.1f} s")
        if self.ingestion:
            lines.append("  ingestion: " + ", ".join(f"{k}={v}" for k, v in sorted(self.ingestion.items())))
            if self.ingestion.get("test_texts_in_training"):
                lines.append(f"  WARNING: {self.ingestion['test_texts_in_training']} test examples have a text "
                             "that is also in training (train/test leakage)")
        if self.span:
            lines.append(f"  span: {self.span}; trained on spans {', '.join(map(str, self.training_spans)) or '-'}")
        if self.drift.get("compared"):
            figures = ", ".join(f"{key}={self.drift[key]:.4f}" for key in
                                ("label_linf", "num_chars_jsd", "oov_share", "previous_oov_share")
                                if isinstance(self.drift.get(key), float))
            lines.append(f"  drift from span {self.drift.get('previous_span')}: {figures}")
        if self.epochs_run is not None:
            start = ("warm start: {tokens_carried} tokens carried, {tokens_new} new, {layers_reused} layers "
                     "reused".format(**self.warm_start) if self.warm_start else "cold start")
            lines.append(f"  training: {self.epochs_run} epoch(s), {start}")
        if self.metrics:
            lines.append("  test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(self.metrics.items())))
        lines.append(f"  blessed: {self.blessed}")
        if self.pushed:
            lines.append(f"  pushed:  {self.pushed_path}")
        elif self.already_served_version is not None:
            lines.append(f"  pushed:  no: the same model is already served as version {self.already_served_version}")
        else:
            lines.append("  pushed:  no")
        if self.report_path:
            lines.append(f"  report:  {self.report_path}")
        return "\n".join(lines)


def open_store(location: StoreAddress | Path | str) -> metadata_store.MetadataStore:
    """The store to read: a SQLite file's path, a store URI or address (pipeline/metadata_store.py)."""
    return connect(location, readonly=True)


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> str:
    runs = store.get_contexts_by_type("pipeline_run")
    runs = [run for run in runs if _executions_belong_to(store, run, pipeline_name)]
    if not runs:
        raise LookupError(f"no runs of {pipeline_name} in the metadata store")
    return max(runs, key=lambda run: run.create_time_since_epoch).name


def _executions_belong_to(store, run_context, pipeline_name: str) -> bool:
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return False
    parents = store.get_parent_contexts_by_context(run_context.id)
    if any(parent.id == pipeline.id for parent in parents):
        return True
    # Older layouts do not link run to pipeline; fall back to shared executions.
    run_executions = {e.id for e in store.get_executions_by_context(run_context.id)}
    return bool(run_executions & {e.id for e in store.get_executions_by_context(pipeline.id)})


def component_id(store, execution) -> str:
    for context in store.get_contexts_by_execution(execution.id):
        if context.type == "node" or store.get_context_types_by_id([context.type_id])[0].name == "node":
            return context.name.split(".", 1)[-1]
    return store.get_execution_types_by_id([execution.type_id])[0].name


def _output_artifacts(store, execution_id: int) -> list:
    events = store.get_events_by_execution_ids([execution_id])
    outputs = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    ids = [e.artifact_id for e in events if e.type in outputs]
    return store.get_artifacts_by_id(ids) if ids else []


def _input_artifacts(store, execution_id: int) -> list:
    events = store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.INPUT]
    return store.get_artifacts_by_id(ids) if ids else []


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _artifact_type(store, artifact) -> str:
    return store.get_artifact_types_by_id([artifact.type_id])[0].name


def _custom_int(artifact, key: str) -> int | None:
    value = artifact.custom_properties.get(key)
    return value.int_value if value is not None else None


def _custom_str(artifact, key: str) -> str | None:
    value = artifact.custom_properties.get(key)
    return value.string_value if value is not None else None


def load_metrics(evaluation_uri: str) -> dict[str, float]:
    """Overall-slice metrics of the candidate model from an Evaluator output."""
    import tensorflow_model_analysis as tfma

    metrics: dict[str, float] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue
        for item in slice_metrics.metric_keys_and_values:
            key = item.key
            if key.model_name not in ("", "candidate"):
                continue
            if key.is_diff:
                continue
            if item.value.HasField("double_value"):
                metrics[key.name] = item.value.double_value.value
    return metrics


def summarize_run(location: StoreAddress | Path | str, pipeline_name: str, run_id: str | None = None) -> RunSummary:
    store = open_store(location)
    run_id = run_id or latest_run_id(store, pipeline_name)
    run_context = store.get_context_by_type_and_name("pipeline_run", run_id)
    summary = RunSummary(pipeline_name=pipeline_name, run_id=run_id, metadata_uri=str(as_address(location)))
    executions = sorted(store.get_executions_by_context(run_context.id), key=lambda e: e.create_time_since_epoch)
    for execution in executions:
        component = component_id(store, execution)
        wall = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0
        state = _STATE_NAMES.get(execution.last_known_state, "UNKNOWN")
        summary.components.append(ComponentRun(component, state, wall))
        for artifact in _output_artifacts(store, execution.id):
            kind = _artifact_type(store, artifact)
            if kind == "ModelEvaluation":
                summary.evaluation_uri = artifact.uri
            elif kind == "ModelBlessing" and component.startswith("Evaluator"):
                summary.blessed = _custom_int(artifact, "blessed") == 1
            elif kind == "Model" and component.startswith("Trainer"):
                summary.model_uri = artifact.uri
            elif kind == "PushedModel":
                summary.pushed = _custom_int(artifact, "pushed") == 1
                summary.pushed_path = _custom_str(artifact, "pushed_destination") if summary.pushed else None
                if "already_served_version" in artifact.custom_properties:
                    summary.already_served_version = _custom_int(artifact, "already_served_version")
            elif kind == "Examples" and component.startswith("ExampleGen"):
                summary.ingestion = {
                    key: value.int_value for key, value in artifact.custom_properties.items()
                    if key in INGESTION_KEYS
                }
            elif kind == "ExampleAnomalies" and component.startswith("SpanDriftCheck"):
                summary.drift = _read_json(Path(artifact.uri) / "drift.json") or {}
            elif kind == "ExampleAnomalies" and component.startswith("ExampleValidator"):
                summary.anomalies_uri = artifact.uri
            elif kind == "ModelRun":
                history = _read_json(Path(artifact.uri) / "history.json") or {}
                if "epochs_run" in history:
                    summary.epochs_run = len(history["epochs_run"])
                    summary.warm_start = history.get("warm_start")
        if component.startswith("ExampleGen"):
            for artifact in _output_artifacts(store, execution.id):
                if "span" in artifact.properties and _artifact_type(store, artifact) == "Examples":
                    summary.span = artifact.properties["span"].int_value
        if component.startswith("Transform"):
            summary.training_spans = sorted(
                a.properties["span"].int_value for a in _input_artifacts(store, execution.id)
                if _artifact_type(store, a) == "Examples" and "span" in a.properties)
    if executions:
        summary.total_wall_time_s = (
            max(e.last_update_time_since_epoch for e in executions)
            - min(e.create_time_since_epoch for e in executions)
        ) / 1000.0
    if summary.evaluation_uri:
        summary.metrics = load_metrics(summary.evaluation_uri)
    return summary


def write_summary(summary: RunSummary, pipeline_root: Path) -> Path:
    path = pipeline_root / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary.to_json())
    return path
