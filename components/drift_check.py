"""Drift between spans: a new span is compared with the previous validated span before training.

TFDV's drift comparators on the training split's statistics (L-infinity on
the label distribution, Jensen-Shannon divergence on the text length), and
the share of out-of-vocabulary tokens under the latest Transform's
vocabulary, measured on held-out texts. A drift beyond the configured bounds
stops the run like an anomaly, and can be allowed the same way
(--allow-anomaly label, num_chars or oov_share).

A component of its own, run before the validation gate: it is re-run every
time (its inputs include the newest validated spans), while the gate, whose
inputs are this span's data only, stays cached on a re-run, so a re-run of a
span reuses its validated examples and everything trained on them.
"""

import json
import os
from typing import List

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.validation_gate import SCHEMA_FILE, DataValidationError, Finding, findings_in, is_allowed

DRIFT_FILE = "drift.json"
# What the drift check reads: the statistics of the split that trains; for the
# OOV share, texts of the eval split, which no vocabulary was learnt from (the
# previous span's training texts are all in its vocabulary by construction).
DRIFT_SPLIT = "train"
OOV_SPLIT = "eval"
OOV_SAMPLE = 2000
OOV_SHARE_HIGH = "OOV_SHARE_HIGH"
_COMPARATOR_TYPES = {"COMPARATOR_L_INFTY_HIGH", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
                     "COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH"}


def drift_schema(schema, label: str, num_chars: str, label_linf: float, num_chars_jsd: float):
    """A copy of the schema with TFDV drift comparators on the label and the text length."""
    drift = type(schema)()
    drift.CopyFrom(schema)
    for feature in drift.feature:
        if feature.name == label:
            feature.drift_comparator.infinity_norm.threshold = label_linf
        elif feature.name == num_chars:
            feature.drift_comparator.jensen_shannon_divergence.threshold = num_chars_jsd
    return drift


def drift_measurements(current, previous, schema) -> tuple[dict[str, float], list[Finding]]:
    """TFDV's drift comparison of two DatasetFeatureStatisticsLists: {feature: distance} and
    a finding per distance above its threshold (schema anomalies are ExampleValidator's job)."""
    import tensorflow_data_validation as tfdv

    anomalies = tfdv.validate_statistics(statistics=current, schema=schema, previous_statistics=previous)
    distances = {}
    for info in anomalies.drift_skew_info:
        for measurement in info.drift_measurements:
            distances[".".join(info.path.step)] = float(measurement.value)
    findings = [f for f in findings_in(anomalies, DRIFT_SPLIT) if f.anomaly in _COMPARATOR_TYPES]
    return distances, findings


def sample_texts(examples_uri: str, split: str, text: str, limit: int = OOV_SAMPLE) -> list[bytes]:
    """The first `limit` texts of a split of an Examples artifact (gzipped TFRecords of tf.Example)."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    texts = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit):
        example = tf.train.Example.FromString(record.numpy())
        texts.append(example.features.feature[text].bytes_list.value[0])
    return texts


def oov_share(texts: list[bytes], transform_output, text: str) -> float:
    """The share of the tokens the model reads that its vocabulary maps to the OOV bucket."""
    from models import features

    if not texts:
        return 0.0
    vocabulary_size = transform_output.vocabulary_size_by_name(features.VOCABULARY_NAME)
    oov_id = 1 + vocabulary_size  # ids: 0 padding, 1..V vocabulary, V+1 OOV (models/features.py)
    transformed = transform_output.transform_raw_features({text: tf.constant(texts)[:, None]},
                                                          drop_unused_features=True)
    ids, lengths = transformed[features.TOKEN_IDS], transformed[features.LENGTH]
    real = tf.sequence_mask(tf.reshape(lengths, [-1]), tf.shape(ids)[1])
    oov = tf.logical_and(real, tf.equal(ids, oov_id))
    total = int(tf.reduce_sum(tf.cast(real, tf.int64)))
    return int(tf.reduce_sum(tf.cast(oov, tf.int64))) / total if total else 0.0


def drift_report(findings: list[Finding], current_span: int, previous_span: int, statistics_uri: str) -> str:
    lines = [f"Data validation failed: span {current_span} drifted from span {previous_span} beyond the "
             "configured bounds (DatasetConfig.drift)."]
    lines += [f"  [{f.split}] {f.feature}: {f.anomaly} - {f.description}" for f in findings]
    lines.append(f"Statistics: {statistics_uri}")
    lines.append("Check the new data, or accept the drift on purpose with --allow-anomaly FEATURE[:ANOMALY_TYPE], "
                 "or change the bounds with --set drift.FIELD=VALUE.")
    return "\n".join(lines)


def previous_of(span: int, statistics: list, examples: list):
    """The newest validated span older than `span`: (its statistics, its examples), or (None, None)."""
    older = [s for s in statistics or [] if int(s.span or 0) < span]
    if not older:
        return None, None
    chosen = max(older, key=lambda s: (int(s.span or 0), s.id))
    same_span = [e for e in examples or [] if int(e.span or 0) == int(chosen.span or 0)]
    return chosen, max(same_span, key=lambda e: e.id) if same_span else None


def check_drift(statistics, examples, previous_statistics, previous_examples, transform_graph, schema_proto,
                label: str, num_chars: str, text: str, label_linf: float, num_chars_jsd: float,
                oov_share_increase: float) -> tuple[dict, list[Finding]]:
    """Compares this span with the previous validated span: ({figures}, [findings above the bounds]).

    Nothing to compare on a first span, or on an input without spans (all span 0).
    """
    from tfx.components.statistics_gen import stats_artifact_utils

    current_span = int(examples.span or 0)
    figures = {"span": current_span,
               "previous_span": int(previous_statistics.span or 0) if previous_statistics is not None else None}
    if previous_statistics is None:
        figures["compared"] = False
        return figures, []
    previous_span = figures["previous_span"]
    figures["compared"] = True
    current = stats_artifact_utils.load_statistics(statistics, DRIFT_SPLIT).proto()
    previous = stats_artifact_utils.load_statistics(previous_statistics, DRIFT_SPLIT).proto()
    schema = drift_schema(schema_proto, label, num_chars, label_linf, num_chars_jsd)
    distances, findings = drift_measurements(current, previous, schema)
    figures["label_linf"] = distances.get(label)
    figures["num_chars_jsd"] = distances.get(num_chars)
    if transform_graph is not None and previous_examples is not None:
        import tensorflow_transform as tft

        transform_output = tft.TFTransformOutput(transform_graph.uri)
        now = oov_share(sample_texts(examples.uri, OOV_SPLIT, text), transform_output, text)
        before = oov_share(sample_texts(previous_examples.uri, OOV_SPLIT, text), transform_output, text)
        figures.update(oov_share=now, previous_oov_share=before)
        if now - before > oov_share_increase:
            findings.append(Finding(OOV_SPLIT, "oov_share", OOV_SHARE_HIGH,
                                    f"{now:.1%} of the tokens are out of the vocabulary, against {before:.1%} in "
                                    f"span {previous_span} (a rise above drift.oov_share_increase "
                                    f"{oov_share_increase:.1%})"))
    return figures, findings


DRIFT_LINE = "Drift from the previous span: "


@component
def SpanDriftCheck(
    examples: InputArtifact[standard_artifacts.Examples],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    drift: OutputArtifact[standard_artifacts.ExampleAnomalies],
    validated_statistics: InputArtifact[List[standard_artifacts.ExampleStatistics]] = None,
    validated_examples: InputArtifact[List[standard_artifacts.Examples]] = None,
    transform_graph: InputArtifact[standard_artifacts.TransformGraph] = None,
    allowed_anomalies: Parameter[str] = "[]",
    label: Parameter[str] = "label",
    num_chars: Parameter[str] = "num_chars",
    text: Parameter[str] = "text",
    label_linf: Parameter[float] = 0.1,
    num_chars_jsd: Parameter[float] = 0.1,
    oov_share_increase: Parameter[float] = 0.05,
) -> None:
    """Fails the run when this span drifted from the newest older validated span beyond the bounds."""
    import tensorflow_data_validation as tfdv

    schema_proto = tfdv.load_schema_text(os.path.join(schema.uri, SCHEMA_FILE))
    previous_statistics, previous_examples = previous_of(int(examples.span or 0), validated_statistics,
                                                         validated_examples)
    figures, findings = check_drift(statistics, examples, previous_statistics, previous_examples, transform_graph,
                                    schema_proto, label, num_chars, text, label_linf, num_chars_jsd,
                                    oov_share_increase)
    print(DRIFT_LINE + json.dumps(figures, sort_keys=True), flush=True)
    drift.span = examples.span
    drift.split_names = json.dumps([DRIFT_SPLIT])
    with tf.io.gfile.GFile(os.path.join(drift.uri, DRIFT_FILE), "w") as f:
        json.dump(figures, f, indent=2, sort_keys=True)
    findings = [f for f in findings if not is_allowed(f, json.loads(allowed_anomalies))]
    if findings:
        raise DataValidationError(drift_report(findings, figures["span"], figures["previous_span"], statistics.uri))
