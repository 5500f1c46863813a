"""`python -m pipeline lineage`: where a served model version came from, read back from ML Metadata.

A version directory under serving/ holds a SavedModel and nothing about how
it was made. ML Metadata holds the rest, as a graph of executions and
artifacts joined by input and output events; this module walks it upstream
from the push of one version:

    Pusher execution       -> PushedModel (destination, version)
      InfraValidator       -> InfraBlessing
      Evaluator            -> ModelBlessing, evaluation metrics, the gate's
                              thresholds (eval_config), baseline model
      Trainer              -> Model, ModelRun; custom_config (hyperparameters,
                              models_fingerprint: the digest of models/*.py)
        Transform          -> TransformGraph (vocabulary size)
          ExampleGen       -> Examples (splits and their counts, span,
                              ingestion report, input fingerprint)

and names the pipeline run that pushed it. The walk never follows a
`baseline_model` or `base_model` input: those lead into another model's
lineage. `python -m pipeline monitor` uses the same walk (`training_examples`)
to find the data a served version was trained on.

Exit codes of the command: 0 the chain was printed; 2 no chain: no served
version, an unknown --version, a store that cannot be opened, or no push of
that version recorded in the store.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

EXIT_OK, EXIT_NO_LINEAGE = 0, 2
PIPELINE_RUN = "pipeline_run"
# Inputs that lead into another model's lineage, not this one's.
OTHER_MODEL_INPUTS = ("baseline_model", "base_model")
# What the plain-text output shows of the Trainer's custom_config (all of it is in --json).
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate")
MODEL_SHAPE_KEYS = ("cell", "rnn_layers", "rnn_units", "bidirectional", "embedding_dim", "pooling", "dense_units",
                    "ensemble_size")


class LineageError(Exception):
    """No chain to show (no served version, unknown version, no push recorded): a message, exit code 2."""


# --- the graph


class MetadataGraph:
    """A store's executions and artifacts, joined by events; type names cached."""

    def __init__(self, store):
        from ml_metadata.proto import metadata_store_pb2

        self.store = store
        event = metadata_store_pb2.Event
        self._outputs = (event.OUTPUT, event.DECLARED_OUTPUT)
        self._inputs = (event.INPUT, event.DECLARED_INPUT)
        self._complete = metadata_store_pb2.Execution.COMPLETE
        self._state_names = {value: name for name, value in metadata_store_pb2.Execution.State.items()}
        self._type_names: dict[int, str] = {}

    def type_name(self, artifact) -> str:
        if artifact.type_id not in self._type_names:
            self._type_names[artifact.type_id] = self.store.get_artifact_types_by_id([artifact.type_id])[0].name
        return self._type_names[artifact.type_id]

    def state(self, execution) -> str:
        return self._state_names.get(execution.last_known_state, "UNKNOWN")

    def component(self, execution) -> str:
        from pipeline import run_summary

        return run_summary.component_id(self.store, execution)

    def context(self, execution, type_name: str) -> str | None:
        """The name of the execution's context of this type (e.g. its pipeline_run)."""
        for context in self.store.get_contexts_by_execution(execution.id):
            kind = context.type or self.store.get_context_types_by_id([context.type_id])[0].name
            if kind == type_name:
                return context.name
        return None

    def producers(self, artifact_id: int) -> list:
        """The executions that output the artifact: the one that made it first, then those that
        reused it from the cache (a cached execution outputs the same artifact again)."""
        ids = [e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id]) if e.type in self._outputs]
        executions = self.store.get_executions_by_id(ids) if ids else []
        return sorted(executions, key=lambda e: (e.last_known_state != self._complete, e.create_time_since_epoch,
                                                 e.id))

    def producer(self, artifact_id: int):
        producers = self.producers(artifact_id)
        return producers[0] if producers else None

    def _by_key(self, execution_id: int, kinds) -> dict[str, list]:
        events = [e for e in self.store.get_events_by_execution_ids([execution_id]) if e.type in kinds]
        artifacts = {a.id: a for a in (self.store.get_artifacts_by_id([e.artifact_id for e in events])
                                       if events else [])}
        found: dict[str, list] = {}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else ""
            if event.artifact_id in artifacts:
                found.setdefault(key, []).append(artifacts[event.artifact_id])
        return found

    def inputs(self, execution_id: int) -> dict[str, list]:
        """{input key: artifacts}, in event order."""
        return self._by_key(execution_id, self._inputs)

    def outputs(self, execution_id: int) -> dict[str, list]:
        return self._by_key(execution_id, self._outputs)

    def is_example_gen_output(self, artifact) -> bool:
        return self.type_name(artifact) == "Examples" and any(
            self.component(e).startswith("ExampleGen") for e in self.producers(artifact.id))


def pushes_of(graph: MetadataGraph, model_dir: Path | str) -> list:
    """The PushedModel artifacts whose pushed_destination is `model_dir` (symlinks resolved), newest first."""
    wanted = os.path.realpath(model_dir)
    pushes = [a for a in graph.store.get_artifacts_by_type("PushedModel")
              if "pushed_destination" in a.custom_properties
              and os.path.realpath(a.custom_properties["pushed_destination"].string_value or "/nonexistent") == wanted]
    return sorted(pushes, key=lambda a: (a.create_time_since_epoch, a.id), reverse=True)


def training_examples(graph: MetadataGraph, executions: Iterable) -> list:
    """The Examples ExampleGen wrote upstream of `executions`, nearest first (breadth first:
    Pusher -> Evaluator -> DataValidationGate -> ExampleGen's Examples, and Trainer -> Transform ->
    ... for every span of a training window). Does not follow baseline_model / base_model inputs."""
    found, seen_artifacts, seen_executions = [], set(), set()
    frontier = list(executions)
    while frontier:
        execution = frontier.pop(0)
        if execution.id in seen_executions:
            continue
        seen_executions.add(execution.id)
        for key, artifacts in graph.inputs(execution.id).items():
            if key in OTHER_MODEL_INPUTS:
                continue
            for artifact in artifacts:
                if artifact.id in seen_artifacts:
                    continue
                seen_artifacts.add(artifact.id)
                if graph.is_example_gen_output(artifact):
                    found.append(artifact)
                else:
                    frontier += graph.producers(artifact.id)
    return found


# --- reading one artifact or execution


def _iso_ms(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).isoformat(timespec="seconds")


def _value(value) -> Any:
    """A property value as plain Python (struct values as dicts)."""
    from google.protobuf import json_format

    kind = value.WhichOneof("value")
    if kind in ("struct_value", "proto_value"):
        return json_format.MessageToDict(getattr(value, kind))
    return getattr(value, kind) if kind else None


def _custom(artifact_or_execution, key: str, default=None) -> Any:
    if key in artifact_or_execution.custom_properties:
        return _value(artifact_or_execution.custom_properties[key])
    return default


def _json_property(execution, key: str) -> Any:
    raw = _custom(execution, key)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _execution(graph: MetadataGraph, execution) -> dict[str, Any] | None:
    if execution is None:
        return None
    return {"id": execution.id, "component": graph.component(execution), "state": graph.state(execution),
            "started": _iso_ms(execution.create_time_since_epoch),
            "finished": _iso_ms(execution.last_update_time_since_epoch),
            "run_id": graph.context(execution, PIPELINE_RUN)}


def _artifact(artifact) -> dict[str, Any] | None:
    return None if artifact is None else {"id": artifact.id, "uri": artifact.uri}


def _first(artifacts_by_key: dict[str, list], key: str):
    artifacts = artifacts_by_key.get(key) or []
    return artifacts[0] if artifacts else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _slice_name(spec: dict[str, Any]) -> str:
    parts = list(spec.get("feature_keys", [])) + [f"{k}={v}" for k, v in sorted(spec.get("feature_values", {}).items())]
    return ", ".join(parts) or "overall"


def _threshold(metric: str, class_name: str, slices: list[str], threshold: dict[str, Any]) -> dict[str, Any]:
    value = threshold.get("value_threshold")
    change = threshold.get("change_threshold")
    return {
        "metric": metric, "class_name": class_name, "slices": slices,
        "value": {k: value[k] for k in ("lower_bound", "upper_bound") if k in value} if value is not None else None,
        "change": {k: change[k] for k in ("direction", "absolute", "relative") if k in change}
        if change is not None else None,
    }


def gate_thresholds(eval_config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The thresholds of a TFMA EvalConfig (as the JSON TFX records in the Evaluator's eval_config):
    one entry per metric and threshold, with its slices, value bounds and change bounds."""
    found = []
    for spec in (eval_config or {}).get("metrics_specs", []):
        for config in spec.get("metrics", []):
            class_name = config.get("class_name", "")
            metric = config.get("name") or _snake(class_name)
            if "threshold" in config:
                found.append(_threshold(metric, class_name, ["every slice"], config["threshold"]))
            for per_slice in config.get("per_slice_thresholds", []):
                slices = [_slice_name(s) for s in per_slice.get("slicing_specs", [])] or ["every slice"]
                found.append(_threshold(metric, class_name, slices, per_slice.get("threshold", {})))
        for metric, threshold in sorted(spec.get("thresholds", {}).items()):
            found.append(_threshold(metric, "", ["every slice"], threshold))
        for metric, per_slice in sorted(spec.get("per_slice_thresholds", {}).items()):
            for item in per_slice.get("thresholds", []):
                slices = [_slice_name(s) for s in item.get("slicing_specs", [])] or ["every slice"]
                found.append(_threshold(metric, "", slices, item.get("threshold", {})))
    return found


def _vocabulary_size(transform_graph_uri: str) -> int | None:
    from models import features

    path = Path(transform_graph_uri) / "transform_fn" / "assets" / features.VOCABULARY_NAME
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if line.rstrip("\n"))
    except OSError:
        return None


def _served_version_of(graph: MetadataGraph, model) -> int | None:
    """The version a Model was pushed as, if a Pusher pushed it."""
    from ml_metadata.proto import metadata_store_pb2

    events = graph.store.get_events_by_artifact_ids([model.id])
    users = graph.store.get_executions_by_id([e.execution_id for e in events
                                              if e.type == metadata_store_pb2.Event.INPUT]) if events else []
    for execution in sorted(users, key=lambda e: e.create_time_since_epoch):
        for push in graph.outputs(execution.id).get("pushed_model", []):
            if _custom(push, "pushed") == 1 and _custom(push, "pushed_version"):
                return int(_custom(push, "pushed_version"))
    return None


def _model(graph: MetadataGraph, model) -> dict[str, Any] | None:
    if model is None:
        return None
    trainer = graph.producer(model.id)
    return {**_artifact(model), "run_id": graph.context(trainer, PIPELINE_RUN) if trainer else None,
            "served_as_version": _served_version_of(graph, model)}


# --- the chain


def trace(store, model_dir: Path | str, store_label: str = "", metrics: bool = True) -> dict[str, Any]:
    """The lineage of the served version in `model_dir` (<serving dir>/<version>), as a JSON-ready dict.

    `store`: an open ml_metadata MetadataStore. Raises LineageError when the store
    records no push to `model_dir`. `metrics=False` skips reading the evaluation
    (TensorFlow Model Analysis is slow to import).
    """
    from pipeline import metadata_store, run_summary

    model_dir = Path(model_dir)
    graph = MetadataGraph(store)
    pushes = [p for p in pushes_of(graph, model_dir) if _custom(p, "pushed") == 1]
    push, pusher = next(((p, e) for p in pushes for e in graph.producers(p.id)), (None, None))
    if pusher is None:
        where = f"the ML Metadata store {store_label}" if store_label else "this ML Metadata store"
        raise LineageError(f"no push of {model_dir} is recorded in {where}: is it the store the run that pushed it "
                           f"used? (give --metadata URI, or set ${metadata_store.ENV_URI})")
    pusher_inputs = graph.inputs(pusher.id)
    model = _first(pusher_inputs, "model")
    version = _custom(push, "pushed_version")
    lineage: dict[str, Any] = {
        "model_dir": str(model_dir),
        "version": int(version) if version else (int(model_dir.name) if model_dir.name.isdigit() else None),
        "metadata_uri": store_label or None,
        "pipeline": graph.context(pusher, "pipeline"),
        "run_id": graph.context(pusher, PIPELINE_RUN),
        "pusher": {"execution": _execution(graph, pusher),
                   "pushed_model": {**_artifact(push), "destination": _custom(push, "pushed_destination"),
                                    "version": int(version) if version else None},
                   "model": _artifact(model)},
    }

    infra_blessing = _first(pusher_inputs, "infra_blessing")
    lineage["infra_validator"] = None if infra_blessing is None else {
        "execution": _execution(graph, graph.producer(infra_blessing.id)),
        "blessing": {**_artifact(infra_blessing), "blessed": _custom(infra_blessing, "blessed") == 1,
                     "failures": _custom(infra_blessing, "failures") or None},
    }

    model_blessing = _first(pusher_inputs, "model_blessing")
    evaluator = graph.producer(model_blessing.id) if model_blessing is not None else None
    if evaluator is not None:
        evaluator_inputs, evaluator_outputs = graph.inputs(evaluator.id), graph.outputs(evaluator.id)
        evaluation = _first(evaluator_outputs, "evaluation")
        values = None
        if metrics and evaluation is not None and os.path.isdir(evaluation.uri):
            values = run_summary.load_metrics(evaluation.uri)
        lineage["evaluator"] = {
            "execution": _execution(graph, evaluator),
            "blessing": {**_artifact(model_blessing), "blessed": _custom(model_blessing, "blessed") == 1},
            "evaluation": _artifact(evaluation),
            "metrics": values,
            "thresholds": gate_thresholds(_json_property(evaluator, "eval_config")),
            "example_splits": _json_property(evaluator, "example_splits"),
            "baseline_model": _model(graph, _first(evaluator_inputs, "baseline_model")),
        }
    else:
        lineage["evaluator"] = None

    trainer = graph.producer(model.id) if model is not None else None
    transform = None
    if trainer is not None:
        trainer_inputs, trainer_outputs = graph.inputs(trainer.id), graph.outputs(trainer.id)
        custom_config = _json_property(trainer, "custom_config") or {}
        training, shape = custom_config.get("training") or {}, custom_config.get("model") or {}
        model_run = _first(trainer_outputs, "model_run")
        history = _read_json(Path(model_run.uri) / "history.json") if model_run is not None else None
        lineage["trainer"] = {
            "execution": _execution(graph, trainer),
            "model": _artifact(_first(trainer_outputs, "model") or model),
            "model_run": None if model_run is None else {
                **_artifact(model_run),
                "epochs_run": len(history["epochs_run"]) if isinstance(history, dict) and "epochs_run" in history
                else None},
            "models_fingerprint": custom_config.get("models_fingerprint"),
            "hyperparameters": {
                **{key: training.get(key) for key in TRAINING_KEYS},
                "max_len": custom_config.get("max_len"), "vocab_size": custom_config.get("vocab_size"),
                "model": {key: shape[key] for key in MODEL_SHAPE_KEYS if key in shape},
            },
            "custom_config": custom_config,
            "base_model": _model(graph, _first(trainer_inputs, "base_model")),
        }
        transform_graph = _first(trainer_inputs, "transform_graph")
        transform = graph.producer(transform_graph.id) if transform_graph is not None else None
        lineage["transform"] = None if transform is None else {
            "execution": _execution(graph, transform),
            "custom_config": _json_property(transform, "custom_config"),
            "transform_graph": {**_artifact(transform_graph), "vocabulary_size": _vocabulary_size(transform_graph.uri)},
        }
    else:
        lineage["trainer"] = lineage["transform"] = None

    # The data: upstream of Transform (every span it read), else of whatever else the push depends on.
    start = [transform] if transform is not None else [e for e in (trainer, evaluator, pusher) if e is not None]
    lineage["examples"] = [_examples(graph, examples) for examples in
                           sorted(training_examples(graph, start),
                                  key=lambda a: (_span(a) or 0, a.create_time_since_epoch, a.id))]
    return lineage


def _span(artifact) -> int | None:
    return artifact.properties["span"].int_value if "span" in artifact.properties else None


def _examples(graph: MetadataGraph, examples) -> dict[str, Any]:
    from components.review_example_gen import REPORT_FILE
    from pipeline.run_summary import INGESTION_KEYS

    example_gen = graph.producer(examples.id)
    report_path = Path(examples.uri) / REPORT_FILE
    report = _read_json(report_path)
    split_names = (json.loads(examples.properties["split_names"].string_value)
                   if "split_names" in examples.properties else None)
    return {
        **_artifact(examples),
        "execution": _execution(graph, example_gen),
        "input_base": _custom(example_gen, "input_base") if example_gen is not None else None,
        "span": _span(examples),
        "split_names": split_names,
        "split_counts": report.get("examples_per_split") if isinstance(report, dict) else None,
        "ingestion": {key: _custom(examples, key) for key in INGESTION_KEYS if key in examples.custom_properties},
        "ingestion_report": str(report_path) if report is not None else None,
        "input_fingerprint": _custom(examples, "input_fingerprint"),
    }


# --- plain text


def _when(execution: dict[str, Any], run_id: str | None) -> str:
    """Id, state, start; the run too when it is not the run that pushed (a result reused from the cache)."""
    text = f"execution {execution['id']}, {execution['state']}, {execution['started']}"
    return text + (f", in run {execution['run_id']}" if execution.get("run_id") not in (None, run_id) else "")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4f}"
    return str(value)


def _blessed(blessed: bool) -> str:
    return "blessed" if blessed else "NOT blessed"


def _threshold_text(threshold: dict[str, Any]) -> str:
    parts = []
    value = threshold.get("value") or {}
    if "lower_bound" in value:
        parts.append(f">= {value['lower_bound']:g}")
    if "upper_bound" in value:
        parts.append(f"<= {value['upper_bound']:g}")
    change = threshold.get("change")
    if change:
        bound = ", ".join(f"{kind} {change[kind]:g}" for kind in ("absolute", "relative") if kind in change)
        parts.append(f"change from baseline {bound} ({change.get('direction', 'no direction').lower()})")
    return f"{threshold['metric']} [{', '.join(threshold['slices'])}]: " + (", ".join(parts) or "no bound")


def _model_text(model: dict[str, Any]) -> str:
    served = f", served as version {model['served_as_version']}" if model["served_as_version"] else ""
    return f"Model {model['id']} of run {model['run_id']}{served} ({model['uri']})"


def format_text(lineage: dict[str, Any]) -> str:
    """The chain, indented upstream: push, gate, training, transform, data."""
    lines = [f"Served version {lineage['version']} ({lineage['model_dir']})",
             f"  pipeline run: {lineage['run_id']} of {lineage['pipeline']}",
             f"  metadata store: {lineage['metadata_uri'] or '-'}"]
    run = lineage["run_id"]
    pusher = lineage["pusher"]
    push = pusher["pushed_model"]
    lines += [f"Pusher: {_when(pusher['execution'], run)}",
              f"  PushedModel {push['id']}: version {push['version']} at {push['destination']}"]
    infra = lineage["infra_validator"]
    if infra:
        failures = f" ({infra['blessing']['failures']})" if infra["blessing"]["failures"] else ""
        lines += [f"  InfraValidator: {_when(infra['execution'], run)}",
                  f"    InfraBlessing {infra['blessing']['id']}: {_blessed(infra['blessing']['blessed'])}{failures}"]
    else:
        lines.append("  InfraValidator: none recorded")
    evaluator = lineage["evaluator"]
    if evaluator:
        lines += [f"  Evaluator: {_when(evaluator['execution'], run)}",
                  f"    ModelBlessing {evaluator['blessing']['id']}: {_blessed(evaluator['blessing']['blessed'])}"]
        if evaluator["metrics"] is not None:
            metrics = sorted(evaluator["metrics"].items())
            lines.append("    metrics: " + ", ".join(f"{k}={_number(v)}" for k, v in metrics))
        if evaluator["evaluation"]:
            lines.append(f"    evaluation: {evaluator['evaluation']['uri']}")
        for threshold in evaluator["thresholds"]:
            lines.append(f"    threshold: {_threshold_text(threshold)}")
        if evaluator["baseline_model"]:
            lines.append(f"    baseline: {_model_text(evaluator['baseline_model'])}")
        else:
            lines.append("    baseline: none (no blessed model before this one)")
    else:
        lines.append("  Evaluator: none recorded")
    trainer = lineage["trainer"]
    if trainer:
        hyper = trainer["hyperparameters"]
        lines += [f"  Trainer: {_when(trainer['execution'], run)}",
                  f"    Model {trainer['model']['id']}: {trainer['model']['uri']}"]
        if trainer["model_run"]:
            epochs = trainer["model_run"]["epochs_run"]
            lines.append(f"    ModelRun {trainer['model_run']['id']}: {trainer['model_run']['uri']}"
                         + (f" ({epochs} epoch(s) run)" if epochs is not None else ""))
        lines += ["    training: " + ", ".join(f"{k}={hyper[k]}" for k in (*TRAINING_KEYS, "max_len", "vocab_size")),
                  "    model: " + ", ".join(f"{k}={v}" for k, v in hyper["model"].items()),
                  f"    models fingerprint: {trainer['models_fingerprint']}"]
        if trainer["base_model"]:
            lines.append(f"    warm start from: {_model_text(trainer['base_model'])}")
    else:
        lines.append("  Trainer: none recorded")
    transform = lineage["transform"]
    indent = "    "
    if transform:
        graph = transform["transform_graph"]
        vocabulary = f" ({graph['vocabulary_size']} vocabulary tokens)" if graph["vocabulary_size"] is not None else ""
        lines += [f"    Transform: {_when(transform['execution'], run)}",
                  f"      TransformGraph {graph['id']}: {graph['uri']}{vocabulary}"]
        indent = "      "
    for examples in lineage["examples"] or []:
        lines.append(f"{indent}ExampleGen: {_when(examples['execution'], run)}" if examples["execution"] else
                     f"{indent}ExampleGen: execution not recorded")
        span = f", span {examples['span']}" if examples["span"] is not None else ""
        lines.append(f"{indent}  Examples {examples['id']}{span}: {examples['uri']}")
        counts = examples["split_counts"] or {}
        names = examples["split_names"] or sorted(counts)
        lines.append(f"{indent}    splits: " + ", ".join(f"{n}={counts[n]}" if n in counts else n for n in names))
        if examples["ingestion"]:
            lines.append(f"{indent}    ingestion: " + ", ".join(f"{k}={v}" for k, v in examples["ingestion"].items()))
        if examples["input_base"]:
            lines.append(f"{indent}    input: {examples['input_base']}")
        lines.append(f"{indent}    input fingerprint: {examples['input_fingerprint'] or '-'}")
        if examples["ingestion_report"]:
            lines.append(f"{indent}    ingestion report: {examples['ingestion_report']}")
    if not lineage["examples"]:
        lines.append(f"{indent}ExampleGen: no Examples recorded upstream")
    return "\n".join(lines)


# --- command line


def lineage_command(args) -> int:
    try:
        lineage = _lineage_for(args)
    except LineageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_LINEAGE
    print(json.dumps(lineage, indent=2, sort_keys=True) if args.json else format_text(lineage))
    return EXIT_OK


def _lineage_for(args) -> dict[str, Any]:
    from pipeline import configs, metadata_store, run_summary, serve

    dataset = configs.DATASETS[args.dataset]
    output_dir = configs.output_dir_of(args.output_dir)
    pipeline_name = dataset.pipeline_name
    serving_dir = dataset.serving_dir(output_dir)
    versions = serve.versions_on_disk(serving_dir)
    if not versions:
        raise LineageError(f"no served model version under {serving_dir}; give the --output-dir of the run")
    if args.version is not None and args.version not in versions:
        raise LineageError(f"no version {args.version} under {serving_dir}; served versions: "
                           + ", ".join(map(str, versions)))
    version = args.version if args.version is not None else versions[-1]
    try:
        address = metadata_store.address_for(args.metadata, output_dir / "metadata" / f"{pipeline_name}.sqlite")
        store = run_summary.open_store(address)
    except metadata_store.MetadataStoreError as error:
        raise LineageError(str(error)) from None
    return trace(store, serving_dir / str(version), store_label=str(address))


def add_parser(commands) -> None:
    from pipeline import configs

    parser = commands.add_parser(
        "lineage", help="where a served model version came from: push, gate, training, data (from ML Metadata)",
        description="Walks ML Metadata upstream from the push of a served version. Exit codes: 0 printed, "
                    "2 no lineage (no served version, unknown --version, store not reachable, no push recorded).")
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    parser.add_argument("--version", type=int, help="the served version (default: the newest under "
                        "<output-dir>/serving/sentiment-<dataset>)")
    parser.add_argument("--output-dir", help="the run's output directory (default: $SENTIMENT_OUTPUT_DIR or "
                        "./outputs)")
    parser.add_argument("--metadata", metavar="URI", help="the ML Metadata store the run used (as for `run`; "
                        "default $SENTIMENT_METADATA_URI, else the SQLite file under --output-dir)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")
