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

With data in spans, components/drift_check.py runs before the gate and stops
a span that drifted from the previous validated one.

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


@component
def DataValidationGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    examples: InputArtifact[standard_artifacts.Examples],
    schema: InputArtifact[standard_artifacts.Schema],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    validated_examples: OutputArtifact[standard_artifacts.Examples],
    validated_statistics: OutputArtifact[standard_artifacts.ExampleStatistics],
    allowed_anomalies: Parameter[str] = "[]",
    label: Parameter[str] = "label",
    min_label_share: Parameter[float] = 0.1,
) -> None:
    """Fails the run when a split has an anomaly or a label distribution that was not allowed;
    otherwise publishes the examples and statistics as validated."""
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
        raise DataValidationError(validation_report(findings + label_problems, anomalies.uri))

    link_tree(examples.uri, validated_examples.uri)
    link_tree(statistics.uri, validated_statistics.uri)
    for target, source in ((validated_examples, examples), (validated_statistics, statistics)):
        target.split_names = source.split_names
        target.span = source.span
    validated_examples.version = examples.version
