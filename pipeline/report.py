"""The run report: one HTML page and its PNGs under the pipeline root, and the model card.

Written after every local run to `<pipeline root>/report/index.html`:
* a link to the model card (pipeline/model_card.py), written beside the pushed
  version (`<serving dir>/model_cards/<version>.md` and `.json`), or under the
  report directory saying why nothing was pushed;
* training curves (loss, accuracy and AUC when the model computed it, per
  epoch, train vs validation) from the Trainer's `history.json` (ModelRun artifact);
* TFMA metrics per slice (overall, text-length bucket, source file when the
  input holds several) and the
  confusion matrix at 0.5 (overall slice); with the rating head, the star
  rating's MAE and Pearson's r per slice, beside the MAE of predicting the
  mean rating of each test review's true class (class means from the train split);
* data statistics from TFDV (StatisticsGen) per split;
* a few test reviews with each token shaded by its attention weight and the
  trajectory (probability of positive after each token) plotted.

`gather()` reads a run back from ML Metadata and the artifacts; `render()` only
draws what it is given, so it can be tested without a run; `publish()` writes
the card, then the page that links it. The page is a Jinja2 template
(templates/report.html) with autoescape on, so every value from the run is
escaped. `screenshot()` opens the page in headless Chromium.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPORT_DIR = "report"
REPORT_FILE = "index.html"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html"
logger = logging.getLogger(__name__)
CHROMIUM = "/usr/bin/chromium"
SAMPLE_REVIEWS = 6
CONFUSION_KEYS = ("true_positives", "false_positives", "true_negatives", "false_negatives")


@dataclasses.dataclass
class ReportData:
    pipeline_name: str
    run_id: str
    summary: dict[str, Any]
    # {"loss": [...], "val_loss": [...], "binary_accuracy": [...], "val_binary_accuracy": [...]}
    history: dict[str, list[float]]
    # slice name ("Overall", "length_bucket=64-127", ...) -> metric -> value
    slices: dict[str, dict[str, float]]
    # split -> {"num_examples": n, "features": {name: {stat: value}}, "num_chars_histogram": [(low, high, count)]}
    statistics: dict[str, dict[str, Any]]
    # [{"text", "label" (true), "probability", "tokens", "attention", "trajectory"}]
    reviews: list[dict[str, Any]]
    infra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The Trainer's custom_config (configs.trainer_hyperparameters): dataset, vocabulary, model, training.
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The Evaluator's gate: {"thresholds": {metric: {"lower_bound", "upper_bound", "max_drop"}},
    # "validation_ok": bool | None, "failures": [str]}.
    gate: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The model the gate compared with (the latest blessed one): {"model_uri", "version" (its pushed
    # version, if it was pushed), "metrics" (its overall metrics on this test split)}; {} when none.
    baseline: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The export's signatures: name -> {"inputs": {name: "dtype [shape]"}, "outputs": {...}}.
    export: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The Pusher's destination (the serving directory), when the run has a Pusher.
    serving_dir: str | None = None
    # ExampleGen's input: {"input_base", "eval_percent", "test_percent"}.
    data_source: dict[str, Any] = dataclasses.field(default_factory=dict)
    # With the rating head: rating_baseline()'s MAE of predicting each test review's true-class mean rating.
    rating_baseline: dict[str, Any] = dataclasses.field(default_factory=dict)


# --- gathering ------------------------------------------------------------------------------------


def _run_artifacts(metadata, run_id: str) -> dict[str, list[str]]:
    from pipeline import run_summary

    store = run_summary.open_store(metadata)
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    found: dict[str, list[str]] = {}
    for execution in store.get_executions_by_context(run.id):
        for artifact in run_summary._output_artifacts(store, execution.id):
            found.setdefault(run_summary._artifact_type(store, artifact), []).append(artifact.uri)
    return found


def _slice_value(key) -> Any:
    if key.HasField("bytes_value"):
        return key.bytes_value.decode("utf-8", "replace")
    return key.int64_value if key.HasField("int64_value") else key.float_value


def load_slices(evaluation_uri: str) -> dict[str, dict[str, float]]:
    import tensorflow_model_analysis as tfma

    slices: dict[str, dict[str, float]] = {}
    for sliced in tfma.load_metrics(evaluation_uri):
        keys = sliced.slice_key.single_slice_keys
        name = "Overall" if not keys else ", ".join(f"{k.column}={_slice_value(k)}" for k in keys)
        values = slices.setdefault(name, {})
        for item in sliced.metric_keys_and_values:
            if item.key.model_name not in ("", "candidate") or item.key.is_diff:
                continue
            if item.value.HasField("double_value"):
                values[item.key.name] = item.value.double_value.value
    return slices


def load_statistics(statistics_uri: str) -> dict[str, dict[str, Any]]:
    import tensorflow_data_validation as tfdv

    result: dict[str, dict[str, Any]] = {}
    for split_dir in sorted(Path(statistics_uri).glob("Split-*")):
        path = split_dir / "FeatureStats.pb"
        if not path.exists():
            continue
        stats = tfdv.load_stats_binary(str(path)).datasets[0]
        split = split_dir.name[len("Split-"):]
        entry: dict[str, Any] = {"num_examples": int(stats.num_examples), "features": {}}
        for feature in stats.features:
            name = feature.path.step[0] if feature.path.step else feature.name
            if feature.HasField("num_stats"):
                n = feature.num_stats
                entry["features"][name] = {"type": "number", "mean": n.mean, "std": n.std_dev, "min": n.min,
                                           "max": n.max, "missing": n.common_stats.num_missing}
                if name == "num_chars":
                    histogram = [h for h in n.histograms if h.type == h.STANDARD] or list(n.histograms)
                    if histogram:
                        entry["num_chars_histogram"] = [(b.low_value, b.high_value, b.sample_count)
                                                        for b in histogram[0].buckets]
            elif feature.HasField("string_stats"):
                s = feature.string_stats
                entry["features"][name] = {"type": "string", "unique": s.unique, "avg_length": s.avg_length,
                                           "missing": s.common_stats.num_missing,
                                           "top": [(v.value, v.frequency) for v in s.top_values[:3]]}
        result[split] = entry
    return result


def sample_test_reviews(examples_uri: str, count: int = SAMPLE_REVIEWS, max_chars: int = 400) -> list[tuple[str, int]]:
    """Up to `count` short test reviews, half of each label, in file order (deterministic)."""
    import tensorflow as tf

    files = sorted(str(p) for p in (Path(examples_uri) / "Split-test").glob("*.gz"))
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        text = example.features.feature["text"].bytes_list.value[0].decode("utf-8")
        label = int(example.features.feature["label"].int64_list.value[0])
        if len(text) <= max_chars and len(by_label[label]) < count // 2:
            by_label[label].append(text)
        if all(len(v) >= count // 2 for v in by_label.values()):
            break
    return [(t, 1) for t in by_label[1]] + [(t, 0) for t in by_label[0]]


def rating_baseline(examples_uri: str) -> dict[str, Any]:
    """The MAE, on the rated test examples, of predicting the mean rating of each one's true class
    (class means over the rated train examples) and of predicting the overall train mean; {} without
    ratings. One pass over ExampleGen's train and test splits, parsing the label and rating only."""
    import numpy as np
    import tensorflow as tf

    from models import features, rating

    spec = {features.LABEL: tf.io.FixedLenFeature([], tf.int64),
            features.RATING: tf.io.FixedLenFeature([], tf.int64, default_value=0)}
    columns = {}
    for split in ("train", "test"):
        files = sorted(str(p) for p in (Path(examples_uri) / f"Split-{split}").glob("*.gz"))
        if not files:
            return {}
        parsed = [tf.io.parse_example(records, spec) for records in
                  tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192)]
        columns[split] = {key: np.concatenate([p[key].numpy() for p in parsed]) for key in spec}
    train, test = columns["train"], columns["test"]
    baselines = rating.class_mean_baselines(train[features.RATING], train[features.LABEL], test[features.RATING],
                                            test[features.LABEL])
    if baselines is None:
        return {}
    return {key: baselines[key] for key in ("class_mean_mae", "overall_mean_mae", "class_means",
                                            "rated_test_examples")}


# TFMA's metric names of the gate's metric classes.
_METRIC_NAMES = {"BinaryAccuracy": "binary_accuracy", "AUC": "auc", "Precision": "precision", "Recall": "recall",
                 "ExampleCount": "example_count"}


def _bound(value: Any) -> float | None:
    """A threshold bound from EvalConfig JSON: a number, or {"value": number} (a wrapper message)."""
    if isinstance(value, dict):
        value = value.get("value")
    return float(value) if isinstance(value, (int, float)) else None


def gate_thresholds(eval_config: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The gate's thresholds, metric -> {"lower_bound", "upper_bound", "max_drop"}, from an EvalConfig
    as JSON (the Evaluator's `eval_config` execution property)."""
    import re

    thresholds: dict[str, dict[str, float]] = {}
    for spec in eval_config.get("metrics_specs", []):
        for metric in spec.get("metrics", []):
            class_name = metric.get("class_name", "")
            name = _METRIC_NAMES.get(class_name) or re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()
            found = [metric.get("threshold")] + [t.get("threshold") for t in metric.get("per_slice_thresholds", [])]
            for threshold in filter(None, found):
                entry = thresholds.setdefault(name, {})
                value = threshold.get("value_threshold") or {}
                for key in ("lower_bound", "upper_bound"):
                    if _bound(value.get(key)) is not None:
                        entry[key] = _bound(value.get(key))
                change = threshold.get("change_threshold") or {}
                absolute = _bound(change.get("absolute"))
                if absolute is not None and change.get("direction", "HIGHER_IS_BETTER") == "HIGHER_IS_BETTER":
                    entry["max_drop"] = -absolute
    return thresholds


def load_validation(evaluation_uri: str) -> tuple[bool | None, list[str]]:
    """The Evaluator's verdict and, when it did not bless, which threshold each failure broke."""
    import tensorflow_model_analysis as tfma

    try:
        result = tfma.load_validation_result(evaluation_uri)
    except Exception:  # an evaluation without thresholds writes no validation result
        return None, []
    failures = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            name = failure.metric_key.name + (" (change from the baseline)" if failure.metric_key.is_diff else "")
            value = (f" = {failure.metric_value.double_value.value:.4f}"
                     if failure.metric_value.HasField("double_value") else "")
            failures.append(f"{name}{value}: {failure.message}".strip())
    return bool(result.validation_ok), failures


def load_baseline_metrics(evaluation_uri: str) -> dict[str, float]:
    """The baseline model's overall metrics on this run's test split (TFMA evaluates both models)."""
    import tensorflow_model_analysis as tfma

    metrics: dict[str, float] = {}
    for sliced in tfma.load_metrics(evaluation_uri):
        if sliced.slice_key.single_slice_keys:
            continue
        for item in sliced.metric_keys_and_values:
            if item.key.model_name == "baseline" and not item.key.is_diff and item.value.HasField("double_value"):
                metrics[item.key.name] = item.value.double_value.value
    return metrics


def export_signatures(model_dir: str) -> dict[str, Any]:
    """The SavedModel's signatures (inputs and outputs with dtype and shape), read from saved_model.pb."""
    import tensorflow as tf
    from tensorflow.python.tools import saved_model_utils

    def describe(info) -> str:
        shape = ["?" if d.size < 0 else str(d.size) for d in info.tensor_shape.dim]
        return f"{tf.dtypes.as_dtype(info.dtype).name} [{', '.join(shape)}]"

    meta_graph = saved_model_utils.get_meta_graph_def(model_dir, "serve")
    return {name: {"inputs": {k: describe(v) for k, v in sig.inputs.items()},
                   "outputs": {k: describe(v) for k, v in sig.outputs.items()}}
            for name, sig in meta_graph.signature_def.items() if not name.startswith("__")}


def _execution_json(execution, key: str) -> Any:
    for properties in (execution.properties, execution.custom_properties):
        if key in properties:
            try:
                return json.loads(properties[key].string_value)
            except ValueError:
                return None
    return None


def _pushed_version_of(store, model_artifact_id: int) -> str | None:
    """The version the Pusher pushed a model artifact as, if it pushed it."""
    from ml_metadata.proto import metadata_store_pb2

    from pipeline import run_summary

    for event in store.get_events_by_artifact_ids([model_artifact_id]):
        if event.type != metadata_store_pb2.Event.INPUT:
            continue
        execution = store.get_executions_by_id([event.execution_id])[0]
        if not run_summary.component_id(store, execution).startswith("Pusher"):
            continue
        for artifact in run_summary._output_artifacts(store, execution.id):
            if (run_summary._artifact_type(store, artifact) == "PushedModel"
                    and run_summary._custom_int(artifact, "pushed") == 1):
                return run_summary._custom_str(artifact, "pushed_version")
    return None


def gather_run_context(metadata, run_id: str) -> dict[str, Any]:
    """From the run's executions: the Trainer's hyperparameters, the gate's thresholds, the baseline
    the Evaluator compared with, the Pusher's destination and ExampleGen's input."""
    from ml_metadata.proto import metadata_store_pb2

    from pipeline import run_summary

    store = run_summary.open_store(metadata)
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    found: dict[str, Any] = {"training": {}, "gate": {}, "baseline": {}, "serving_dir": None, "data_source": {}}
    for execution in store.get_executions_by_context(run.id):
        component = run_summary.component_id(store, execution)
        if component.startswith("Trainer"):
            found["training"] = _execution_json(execution, "custom_config") or {}
        elif component.startswith("Evaluator"):
            found["gate"]["thresholds"] = gate_thresholds(_execution_json(execution, "eval_config") or {})
            for event in store.get_events_by_execution_ids([execution.id]):
                keys = [step.key for step in event.path.steps if step.HasField("key")]
                if event.type == metadata_store_pb2.Event.INPUT and "baseline_model" in keys:
                    artifact = store.get_artifacts_by_id([event.artifact_id])[0]
                    found["baseline"] = {"model_uri": artifact.uri,
                                         "version": _pushed_version_of(store, artifact.id)}
        elif component.startswith("Pusher"):
            destination = _execution_json(execution, "push_destination") or {}
            filesystem = destination.get("filesystem") or {}
            found["serving_dir"] = filesystem.get("base_directory") or filesystem.get("baseDirectory")
        elif component.startswith("ExampleGen"):
            base = execution.properties.get("input_base") or execution.custom_properties.get("input_base")
            config = (_execution_json(execution, "custom_config") or {}).get("custom_config", {}).get("value", {})
            found["data_source"] = {"input_base": base.string_value if base is not None else "",
                                    **{k: config[k] for k in ("eval_percent", "test_percent") if k in config}}
    return found


def gather(metadata, summary) -> ReportData:
    from models import features
    from pipeline import predict

    artifacts = _run_artifacts(metadata, summary.run_id)
    history: dict[str, list[float]] = {}
    for uri in artifacts.get("ModelRun", []):
        path = Path(uri) / "history.json"
        if path.exists():
            history = json.loads(path.read_text())
    slices = load_slices(summary.evaluation_uri) if summary.evaluation_uri else {}
    # StatisticsGen's statistics (Transform also writes ExampleStatistics, of another layout).
    stats_uris = [u for u in artifacts.get("ExampleStatistics", []) if f"{os.sep}StatisticsGen{os.sep}" in u]
    statistics = load_statistics(stats_uris[0]) if stats_uris else {}
    reviews: list[dict[str, Any]] = []
    baseline: dict[str, Any] = {}
    if summary.model_uri and artifacts.get("Examples"):  # noqa: SIM102
        from tfx.utils import path_utils

        # ExampleGen's raw examples, not Transform's transformed ones (both are Examples).
        raw = [uri for uri in artifacts["Examples"] if f"{os.sep}ExampleGen{os.sep}" in uri] or artifacts["Examples"]
        samples = sample_test_reviews(raw[0])
        if features.RATING_MAE_METRIC in slices.get("Overall", {}):
            try:
                baseline = rating_baseline(raw[0])
            except Exception:
                logger.exception("Computing the rating baseline failed")
                baseline = {}
        if samples:
            signature = predict.load_signature(Path(path_utils.serving_model_path(summary.model_uri)))
            texts = [t for t, _ in samples]
            for (text, label), result in zip(samples, predict.predict(signature, texts)):
                reviews.append({"text": text, "true_label": label, **result})
    infra: dict[str, Any] = {}
    for uri in artifacts.get("InfraBlessing", []):
        path = Path(uri) / "infra_validation.json"
        if path.exists():
            infra = json.loads(path.read_text())
    data = ReportData(summary.pipeline_name, summary.run_id, dataclasses.asdict(summary), history, slices,
                      statistics, reviews, infra)
    data.rating_baseline = baseline
    # What the model card needs beyond the page; a part that cannot be read leaves its field empty.
    try:
        context = gather_run_context(metadata, summary.run_id)
        data.training, data.gate, data.baseline = context["training"], context["gate"], context["baseline"]
        data.serving_dir, data.data_source = context["serving_dir"], context["data_source"]
    except Exception:
        logger.exception("Reading the run's settings for the model card failed")
    if summary.evaluation_uri:
        try:
            data.gate["validation_ok"], data.gate["failures"] = load_validation(summary.evaluation_uri)
            if data.baseline:
                data.baseline["metrics"] = load_baseline_metrics(summary.evaluation_uri)
        except Exception:
            logger.exception("Reading the Evaluator's validation result failed")
    if summary.model_uri:
        try:
            from tfx.utils import path_utils

            data.export = export_signatures(path_utils.serving_model_path(summary.model_uri))
        except Exception:
            logger.exception("Reading the export's signatures failed")
    return data


# --- drawing --------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Panels of the training curves: (title, the keys a history may name the metric by).
CURVES = (("loss", ("loss",)), ("accuracy", ("binary_accuracy", "accuracy")), ("AUC", ("auc",)))


def _curve(history: dict[str, list[float]], names: tuple[str, ...], prefix: str) -> list[float]:
    return next((history[prefix + name] for name in names if history.get(prefix + name)), [])


def plot_training_curves(history: dict[str, list[float]], path: Path) -> list[str]:
    """Loss, accuracy and (when the model computed it) AUC per epoch, train vs validation, side by side.

    Returns the titles of the panels drawn (empty, and no file, without a history)."""
    panels = [(title, names) for title, names in CURVES
              if _curve(history or {}, names, "") or _curve(history or {}, names, "val_")]
    if not panels:
        return []
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    # After a resume from a checkpoint the history starts past epoch 1.
    epochs = [e + 1 for e in history.get("epochs_run") or []]
    for ax, (title, names) in zip(axes[0], panels):
        for prefix, label, style in (("", "train", "-o"), ("val_", "validation", "--s")):
            values = _curve(history, names, prefix)
            if values:
                ax.plot(epochs if len(epochs) == len(values) else range(1, len(values) + 1), values, style,
                        label=label)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [title for title, _ in panels]


def confusion_counts(metrics: dict[str, float]) -> dict[str, float] | None:
    if not all(k in metrics for k in CONFUSION_KEYS):
        return None
    return {k: metrics[k] for k in CONFUSION_KEYS}


def plot_confusion_matrix(counts: dict[str, float], path: Path) -> None:
    plt = _plt()
    matrix = [[counts["true_negatives"], counts["false_positives"]],
              [counts["false_negatives"], counts["true_positives"]]]
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    image = ax.imshow(matrix, cmap="Blues")
    for i in range(2):
        for j in range(2):
            value = matrix[i][j]
            ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=16,
                    color="white" if value > max(max(r) for r in matrix) / 2 else "black")
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (test, threshold 0.5)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_slices(slices: dict[str, dict[str, float]], path: Path) -> bool:
    rows = [(name, m["binary_accuracy"], m.get("example_count", 0)) for name, m in slices.items()
            if "binary_accuracy" in m]
    if not rows:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [f"{n} (n={int(c)})" for n, _, c in rows]
    ax.barh(names, [a for _, a, _ in rows], color=["#444" if n == "Overall" else "#4a90d9" for n, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title("accuracy per slice (test split)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_length_histogram(statistics: dict[str, dict[str, Any]], path: Path) -> bool:
    splits = {s: e["num_chars_histogram"] for s, e in statistics.items() if e.get("num_chars_histogram")}
    if not splits:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for split, buckets in splits.items():
        total = sum(c for _, _, c in buckets) or 1
        ax.step([(lo + hi) / 2 for lo, hi, _ in buckets], [c / total for _, _, c in buckets], where="mid", label=split)
    ax.set_xlabel("characters per text (num_chars)")
    ax.set_ylabel("share of examples")
    ax.set_title("text length by split (TFDV)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_trajectory(review: dict[str, Any], path: Path) -> None:
    plt = _plt()
    tokens, trajectory = review["tokens"], review["trajectory"]
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(tokens) + 1.5), 2.8))
    ax.plot(range(1, len(trajectory) + 1), trajectory, "-o", markersize=3, color="#d9534f")
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.set_xlim(0.5, max(1, len(trajectory)) + 0.5)
    ax.set_ylabel("P(positive)")
    if len(tokens) <= 60:
        ax.set_xticks(range(1, len(tokens) + 1), tokens, rotation=70, fontsize=8)
    else:
        ax.set_xlabel("tokens read")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the page -------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f3f3f3; }
td.name, th.name { text-align: left; }
.ok { color: #1a7f37; font-weight: bold; } .no { color: #c62828; font-weight: bold; }
.review { border: 1px solid #ddd; border-radius: 6px; padding: 10px; margin: 12px 0; }
.tokens span { padding: 1px 2px; margin: 1px; border-radius: 3px; display: inline-block; }
img { max-width: 100%; }
"""


def _fmt(value: Any) -> str:
    """A table cell as text; the template escapes it."""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"header": list(header), "rows": [[_fmt(c) for c in row] for row in rows]}


def _shaded_tokens(review: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(token, attention weight, shade 0.08-1, the heaviest token darkest) per token."""
    top = max(review["attention"] or [1.0]) or 1.0
    return [(token, weight, 0.08 + 0.92 * (weight / top))
            for token, weight in zip(review["tokens"], review["attention"])]


def _environment():
    import jinja2

    # autoescape=True whatever the template's name: every value from the run is escaped.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _href(target: Path, out_dir: Path) -> str:
    """A link from the page to `target`: relative when it can be, else a file:// URI."""
    try:
        return Path(os.path.relpath(Path(target).resolve(), Path(out_dir).resolve())).as_posix()
    except ValueError:  # another drive
        return Path(target).resolve().as_uri()


def render(data: ReportData, out_dir: Path, card=None, card_error: str | None = None) -> Path:
    """Writes index.html and its PNGs into out_dir; returns the page's path.

    `card`: the model_card.WrittenCard to link (publish() writes it first); `card_error`: why it could not be.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    summary = data.summary
    context: dict[str, Any] = {
        "css": _CSS, "pipeline_name": data.pipeline_name, "run_id": data.run_id,
        "blessed": summary.get("blessed"), "infra_blessed": data.infra.get("blessed", "n/a"),
        "pushed": str(summary.get("pushed_path") or "no"),
        "infra_failures": "; ".join(data.infra.get("failures") or []),
        "components": None, "card": None, "card_error": card_error, "curves": [],
        "slices": None, "slices_img": False, "confusion_img": False,
        "statistics": None, "text_length_img": False, "reviews": [], "rating": None,
    }
    components = summary.get("components") or []
    if components:
        context["components"] = _table(["component", "state", "wall time (s)"],
                                       [[c["component"], c["state"], float(c["wall_time_s"])] for c in components])
    if card is not None:
        context["card"] = {"pushed": card.pushed, "version": card.version, "md_path": str(card.markdown),
                           "md_href": _href(card.markdown, out_dir), "json_href": _href(card.json, out_dir),
                           "reason": card.card["deployment"].get("not_pushed_reason")}

    context["curves"] = plot_training_curves(data.history, out_dir / "training_curves.png")

    if data.slices:
        metric_names = ["example_count", "binary_accuracy", "auc", "precision", "recall"]
        rows = [[name, int(m.get("example_count", 0))] + [m.get(k, float("nan")) for k in metric_names[1:]]
                for name, m in data.slices.items()]
        context["slices"] = _table(["slice"] + metric_names, rows)
        context["slices_img"] = plot_slices(data.slices, out_dir / "slices.png")
        context["rating"] = rating_section(data)
        counts = confusion_counts(data.slices.get("Overall", {}))
        if counts:
            plot_confusion_matrix(counts, out_dir / "confusion_matrix.png")
            context["confusion_img"] = True

    if data.statistics:
        rows = []
        for split, entry in data.statistics.items():
            for name, stats in sorted(entry["features"].items()):
                if stats["type"] == "number":
                    detail = (f"mean {stats['mean']:.1f}, std {stats['std']:.1f}, min {stats['min']:.0f}, "
                              f"max {stats['max']:.0f}")
                else:
                    top = ", ".join(f"{v[:20]} ({int(f)})" for v, f in stats.get("top", []))
                    detail = f"{stats['unique']} unique, avg length {stats['avg_length']:.1f}; top: {top}"
                rows.append([f"{split} / {name}", entry["num_examples"], int(stats["missing"]), detail])
        context["statistics"] = _table(["split / feature", "examples", "missing", "statistics"], rows)
        context["text_length_img"] = plot_length_histogram(data.statistics, out_dir / "text_length.png")

    for i, review in enumerate(data.reviews):
        image = None
        if review["tokens"]:
            plot_trajectory(review, out_dir / f"trajectory_{i}.png")
            image = f"trajectory_{i}.png"
        context["reviews"].append({
            "truth": "positive" if review["true_label"] == 1 else "negative",
            "verdict": "positive" if review["label"] == 1 else "negative",
            "probability": float(review["probability"]), "tokens": _shaded_tokens(review), "image": image,
            "rating": float(review["rating"]) if "rating" in review else None})

    page = _environment().get_template(TEMPLATE).render(**context)
    path = out_dir / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def rating_section(data: ReportData) -> dict[str, Any] | None:
    """The rating head's MAE and Pearson's r per slice and the baselines' MAE; None without the head."""
    from models import features

    names = (features.RATING_MAE_METRIC, features.RATING_PEARSON_METRIC)
    rows = [[name, m[names[0]], m.get(names[1], float("nan"))] for name, m in (data.slices or {}).items()
            if names[0] in m]
    if not rows:
        return None
    baseline = data.rating_baseline or {}
    return {"table": _table(["slice", "MAE (stars)", "Pearson's r"], rows),
            "class_mean_mae": _fmt(baseline["class_mean_mae"]) if "class_mean_mae" in baseline else None,
            "overall_mean_mae": _fmt(baseline["overall_mean_mae"]) if "overall_mean_mae" in baseline else None}


def publish(data: ReportData, out_dir: Path) -> Path:
    """Writes the model card (beside the pushed version, or under out_dir when nothing was pushed),
    then the page that links it; returns the page's path. A card that cannot be written is named on
    the page instead of failing the report."""
    from pipeline import model_card

    card, card_error = None, None
    try:
        card = model_card.write_card(data, out_dir)
    except Exception as error:
        logger.exception("Writing the model card failed")
        card_error = f"{type(error).__name__}: {error}"
    return render(data, out_dir, card=card, card_error=card_error)


def write_report(metadata, pipeline_root: Path, summary) -> Path:
    """`metadata`: the store, as a SQLite path, URI or metadata_store.StoreAddress."""
    return publish(gather(metadata, summary), pipeline_root / REPORT_DIR)


def screenshot(html_path: Path, png_path: Path, width: int = 1200, height: int = 3000,
               chromium: str = CHROMIUM, timeout_s: float = 120.0) -> Path:
    """Renders the page in headless Chromium (fresh profile, no network services) to a PNG."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={png_path}", Path(html_path).resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if not Path(png_path).exists():
        raise RuntimeError(f"chromium wrote no screenshot to {png_path}")
    return Path(png_path)


def image_is_blank(path: Path, min_std: float = 2.0) -> bool:
    """True when a PNG is (close to) one flat colour."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype="float32")
    return pixels.size == 0 or float(pixels.std()) < min_std
