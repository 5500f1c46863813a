"""Stops the pipeline when ExampleValidator found anomalies.

TFX's ExampleValidator records anomalies but lets the pipeline go on. This
gate sits between it and Transform: it reads the anomalies of every split,
drops the ones a user accepted on purpose, counts the affected examples with
TFDV, and fails with a message that names the feature, the anomaly, the count
and the anomalies artifact. Transform, Trainer and Pusher never run, so the
last pushed model stays the served one.

A schema cannot say "every class is present", so the gate also reads the label
distribution from StatisticsGen's statistics: every class of the label's
domain must appear in every split with at least `min_label_share` of it
(LABEL_CLASS_MISSING / LABEL_SHARE_OUT_OF_BOUNDS findings, allowed like any
anomaly). A one-class test split would otherwise score accuracy 1.0 with an
undefined AUC and be blessed.

When data arrives in spans, the gate also compares the new span with the
previous validated one (drift): the label distribution (L-infinity) and text
length (Jensen-Shannon divergence) with TFDV's drift comparators on the
training split's statistics, and the share of out-of-vocabulary tokens under
the latest Transform's vocabulary. A drift beyond the configured bounds stops
the run like an anomaly (and can be allowed the same way).

What passes is published as the gate's own outputs (`validated_examples`,
`validated_statistics`: hard links to ExampleGen's and StatisticsGen's files,
copies where links are impossible), so everything downstream, and every later
run's rolling window of spans, reads only data that passed.
"""


import errno
import json
import os
import shutil
from dataclasses import dataclass

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

ANOMALIES_FILE = "SchemaDiff.pb"
SCHEMA_FILE = "schema.pbtxt"
_TYPE_NAMES = {value: name for name, value in anomalies_pb2.AnomalyInfo.Type.items()}


class DataValidationError(RuntimeError):
    """The data does not match the curated schema; the message says how."""


@dataclass(frozen=True)
class Finding:
    split: str
    feature: str
    anomaly: str  # the TFDV anomaly type, e.g. INT_TYPE_BIG_INT
    description: str
    examples: int | None = None  # how many examples show it, where TFDV can tell

    @property
    def key(self) -> str:
        return f"{self.feature}:{self.anomaly}"

    def format(self) -> str:
        count = f"{self.examples} example(s)" if self.examples is not None else "count unknown"
        return f"  [{self.split}] {self.feature}: {self.anomaly} ({count}) - {self.description}"


def read_findings(anomalies_uri: str, splits: list[str]) -> list[Finding]:
    findings = []
    for split in splits:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        if not tf.io.gfile.exists(path):
            continue
        anomalies = anomalies_pb2.Anomalies.FromString(tf.io.gfile.GFile(path, "rb").read())
        findings += findings_in(anomalies, split)
    return findings


def findings_in(anomalies: anomalies_pb2.Anomalies, split: str) -> list[Finding]:
    findings = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        for reason in info.reason:
            findings.append(Finding(split, feature, _TYPE_NAMES.get(reason.type, str(reason.type)),
                                    reason.description or reason.short_description))
    for reason in anomalies.dataset_anomaly_info.reason:
        findings.append(Finding(split, "<dataset>", _TYPE_NAMES.get(reason.type, str(reason.type)),
                                reason.description or reason.short_description))
    return findings


LABEL_CLASS_MISSING = "LABEL_CLASS_MISSING"
LABEL_SHARE_OUT_OF_BOUNDS = "LABEL_SHARE_OUT_OF_BOUNDS"


def label_counts(statistics, label: str) -> dict[int, int]:
    """{class: examples} from a DatasetFeatureStatistics of a categorical integer label."""
    for feature in statistics.features:
        if list(feature.path.step) == [label] or feature.name == label:
            if not feature.HasField("string_stats"):
                raise ValueError(f"the statistics of {label!r} are not categorical: compute them with the schema "
                                 "(StatisticsGen's schema input), where the label is is_categorical")
            return {int(value.value): int(value.frequency) for value in feature.string_stats.top_values}
    return {}


def label_findings(counts: dict[int, int], classes: list[int], min_share: float, split: str,
                   label: str) -> list[Finding]:
    """A finding per class absent from the split, or below min_share of it."""
    total = sum(counts.values())
    findings = []
    for value in classes:
        count = counts.get(value, 0)
        if not count:
            findings.append(Finding(split, label, LABEL_CLASS_MISSING,
                                    f"no example of class {value} (counts {dict(sorted(counts.items()))})", 0))
        elif count < min_share * total:
            findings.append(Finding(split, label, LABEL_SHARE_OUT_OF_BOUNDS,
                                    f"class {value} is {count / total:.1%} of the split, below min_label_share "
                                    f"{min_share:.1%}", count))
    return findings


def label_classes(schema, label: str) -> list[int]:
    """The classes of the label's integer domain in the schema (e.g. [0, 1])."""
    for feature in schema.feature:
        if feature.name == label and feature.HasField("int_domain"):
            domain = feature.int_domain
            if domain.HasField("min") and domain.HasField("max") and domain.max - domain.min < 1000:
                return list(range(domain.min, domain.max + 1))
    raise ValueError(f"the schema gives the label {label!r} no bounded int_domain")


def is_allowed(finding: Finding, allowed: list[str]) -> bool:
    """An entry allows a feature ("text_length") or one anomaly of it ("text_length:INT_TYPE_BIG_INT")."""
    return finding.feature in allowed or finding.key in allowed


def count_anomalous_examples(examples_pattern: str, schema) -> dict[str, int]:
    """{"feature:ANOMALY": number of examples} for the files matching the pattern, from TFDV's
    per-example validation."""
    import tensorflow_data_validation as tfdv

    statistics = tfdv.validate_examples_in_tfrecord(
        data_location=examples_pattern, stats_options=tfdv.StatsOptions(schema=schema)
    )
    counts = {}
    for dataset in statistics.datasets:
        # TFDV names each slice "<feature>_<ANOMALY_TYPE>".
        for type_name in _TYPE_NAMES.values():
            suffix = f"_{type_name}"
            if dataset.name.endswith(suffix):
                counts[f"{dataset.name[: -len(suffix)]}:{type_name}"] = int(dataset.num_examples)
                break
    return counts


def validation_report(findings: list[Finding], anomalies_uri: str) -> str:
    lines = ["Data validation failed: the examples do not match the curated schema."]
    lines += [finding.format() for finding in findings]
    lines.append(f"Anomalies artifact: {anomalies_uri}")
    lines.append("Fix the data, or accept an anomaly on purpose with --allow-anomaly FEATURE[:ANOMALY_TYPE].")
    return "\n".join(lines)


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
    transformed = transform_output.transform_raw_features({text: tf.constant(texts)[:, None]}, drop_unused_features=True)
    ids, lengths = transformed[features.TOKEN_IDS], transformed[features.LENGTH]
    real = tf.sequence_mask(tf.reshape(lengths, [-1]), tf.shape(ids)[1])
    oov = tf.logical_and(real, tf.equal(ids, oov_id))
    total = int(tf.reduce_sum(tf.cast(real, tf.int64)))
    return int(tf.reduce_sum(tf.cast(oov, tf.int64))) / total if total else 0.0


def link_tree(source: str, destination: str) -> None:
    """Hard-links every file of `source` into `destination` (copies across devices or on remote storage)."""
    for root, _, names in tf.io.gfile.walk(source):
        target = os.path.join(destination, os.path.relpath(root, source))
        tf.io.gfile.makedirs(target)
        for name in names:
            src, dst = os.path.join(root, name), os.path.join(target, name)
            if "://" not in src:
                try:
                    os.link(src, dst)
                    continue
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                shutil.copy2(src, dst)
            else:
                tf.io.gfile.copy(src, dst, overwrite=True)


def drift_report(findings: list[Finding], current_span: int, previous_span: int, statistics_uri: str) -> str:
    lines = [f"Data validation failed: span {current_span} drifted from span {previous_span} beyond the "
             "configured bounds (DatasetConfig.drift)."]
    lines += [f"  [{f.split}] {f.feature}: {f.anomaly} - {f.description}" for f in findings]
    lines.append(f"Statistics: {statistics_uri}")
    lines.append("Check the new data, or accept the drift on purpose with --allow-anomaly FEATURE[:ANOMALY_TYPE], "
                 "or change the bounds with --set drift.FIELD=VALUE.")
    return "\n".join(lines)


def check_drift(statistics, examples, previous_statistics, previous_examples, transform_graph, schema_proto,
                label: str, num_chars: str, text: str, label_linf: float, num_chars_jsd: float,
                oov_share_increase: float) -> tuple[dict, list[Finding]]:
    """Compares this span with the previous validated span: ({figures}, [findings above the bounds]).

    Only a newer span is compared: a re-run of the same span (or an input without
    spans, all span 0) has nothing to drift from.
    """
    from tfx.components.statistics_gen import stats_artifact_utils

    current_span = int(examples.span or 0)
    previous_span = int(previous_statistics.span or 0) if previous_statistics is not None else None
    figures = {"span": current_span, "previous_span": previous_span}
    if previous_span is None or previous_span >= current_span:
        figures["compared"] = False
        return figures, []
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


@component
def DataValidationGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    examples: InputArtifact[standard_artifacts.Examples],
    schema: InputArtifact[standard_artifacts.Schema],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    validated_examples: OutputArtifact[standard_artifacts.Examples],
    validated_statistics: OutputArtifact[standard_artifacts.ExampleStatistics],
    previous_statistics: InputArtifact[standard_artifacts.ExampleStatistics] = None,
    previous_examples: InputArtifact[standard_artifacts.Examples] = None,
    transform_graph: InputArtifact[standard_artifacts.TransformGraph] = None,
    allowed_anomalies: Parameter[str] = "[]",
    label: Parameter[str] = "label",
    min_label_share: Parameter[float] = 0.1,
    num_chars: Parameter[str] = "num_chars",
    text: Parameter[str] = "text",
    label_linf: Parameter[float] = 0.1,
    num_chars_jsd: Parameter[float] = 0.1,
    oov_share_increase: Parameter[float] = 0.05,
) -> None:
    """Fails the run when a split has an anomaly, a label distribution or a drift from the
    previous span that was not allowed; otherwise publishes the examples and statistics as validated."""
    import tensorflow_data_validation as tfdv
    from tfx.components.statistics_gen import stats_artifact_utils

    splits = artifact_utils.decode_split_names(anomalies.split_names)
    allowed = json.loads(allowed_anomalies)
    schema_proto = tfdv.load_schema_text(os.path.join(schema.uri, SCHEMA_FILE))
    findings = [f for f in read_findings(anomalies.uri, splits) if not is_allowed(f, allowed)]
    classes = label_classes(schema_proto, label)
    label_problems = []
    for split in artifact_utils.decode_split_names(statistics.split_names):
        split_statistics = stats_artifact_utils.load_statistics(statistics, split).proto().datasets[0]
        label_problems += label_findings(label_counts(split_statistics, label), classes, min_label_share,
                                         split, label)
    label_problems = [f for f in label_problems if not is_allowed(f, allowed)]
    # Drift is measured even when the schema already failed: a span from another
    # domain shows in both, and the message should say so.
    figures, drift = check_drift(statistics, examples, previous_statistics, previous_examples, transform_graph,
                                 schema_proto, label, num_chars, text, label_linf, num_chars_jsd,
                                 oov_share_increase)
    print(f"Drift from the previous span: {json.dumps(figures, sort_keys=True)}")
    drift = [f for f in drift if not is_allowed(f, allowed)]
    messages = []
    if findings or label_problems:
        counted = {}
        for split in sorted({f.split for f in findings}):
            try:
                pattern = os.path.join(examples.uri, f"Split-{split}", "*")
                counted[split] = count_anomalous_examples(pattern, schema_proto)
            except Exception as error:  # the counts are a courtesy; the failure must still be reported
                counted[split] = {}
                print(f"could not count anomalous examples in {split}: {error}")
        findings = [
            Finding(f.split, f.feature, f.anomaly, f.description, counted[f.split].get(f.key)) for f in findings
        ]
        messages.append(validation_report(findings + label_problems, anomalies.uri))
    if drift:
        messages.append(drift_report(drift, figures["span"], figures["previous_span"], statistics.uri))
    if messages:
        raise DataValidationError("\n".join(messages))

    link_tree(examples.uri, validated_examples.uri)
    link_tree(statistics.uri, validated_statistics.uri)
    for target, source in ((validated_examples, examples), (validated_statistics, statistics)):
        target.split_names = source.split_names
        target.span = source.span
    validated_examples.version = examples.version
    with tf.io.gfile.GFile(os.path.join(validated_statistics.uri, DRIFT_FILE), "w") as f:
        json.dump(figures, f, indent=2, sort_keys=True)
    for key, value in figures.items():
        if isinstance(value, float):
            validated_statistics.set_float_custom_property(f"drift_{key}", value)
