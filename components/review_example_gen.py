"""ExampleGen for labelled review text: any supported source in, three splits out.

The executor reads the source with a Beam pipeline (components/review_sources
does the parsing), keeps the official split where the source has one, and
otherwise splits by a stable hash of the text, so the split is a pure
function of the data and the recorded config, and duplicate texts never
straddle train and eval. Rows that cannot be parsed fail the run naming
file and line, or, with `quarantine`, go to a JSON-lines file beside the
examples; an ingestion report (rows in, examples out per split, rows
quarantined, test texts also in training) is written beside them too and
copied onto the Examples artifact, so rows in = rows out + rows quarantined
can be checked for every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterator, Mapping

import apache_beam as beam
import tensorflow as tf
from absl import logging
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen import component as example_gen_component
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs

from components import review_sources
from models import features

SPLITS = ("train", "eval", "test")
NUM_BUCKETS = 100
REPORT_FILE = "ingestion_report.json"
QUARANTINE_DIR = "quarantine"

# Keys of the executor's custom config.
EVAL_PERCENT = "eval_percent"
TEST_PERCENT = "test_percent"
QUARANTINE = "quarantine"
TEXT_COLUMN = "text_column"
LABEL_COLUMN = "label_column"
# False only where a split may be empty on purpose (parsing tests, `ingest` on a sample).
REQUIRE_EVERY_SPLIT = "require_every_split"
# A digest of the parsing code (pipeline/configs.example_gen_fingerprint), so
# a parser change is part of the cache key.
CODE_FINGERPRINT = "code_fingerprint"
# Data that arrives in spans: <input>/span-1/, span-2/, ..., each holding any
# source the readers accept. TFX's file-based driver picks the newest span (or
# the one a RangeConfig names) and records it on the Examples artifact.
SPAN_FOLDER_PREFIX = features.SPAN_FOLDER_PREFIX
SPAN_PATTERN = SPAN_FOLDER_PREFIX + "{SPAN}/*"


class RowRejectedError(ValueError):
    """A row could not be parsed and quarantine is off; names file and line."""


class EmptySplitError(ValueError):
    """A split got no examples: nothing downstream could train or evaluate on it."""


def split_bucket(text: str, num_buckets: int = NUM_BUCKETS) -> int:
    """Stable across runs, machines and Python versions (unlike hash())."""
    digest = hashlib.md5(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_buckets


def assign_split(review: review_sources.Review, eval_percent: int, test_percent: int) -> str:
    """The official split where the source has one (eval carved out of train), else by hash."""
    bucket = split_bucket(review.text)
    if review.source_split == "test":
        return "test"
    if review.source_split == "train":
        return "train" if bucket < NUM_BUCKETS - eval_percent else "eval"
    if bucket < NUM_BUCKETS - eval_percent - test_percent:
        return "train"
    return "eval" if bucket < NUM_BUCKETS - test_percent else "test"


# Raw features written for the Evaluator's slices only (not model inputs).
LENGTH_BUCKET = "length_bucket"  # e.g. "64-127": characters of the stripped text
SOURCE = "source"  # the file (or archive) the example came from: the id's part before ":"
LENGTH_BUCKET_BOUNDS = (64, 128, 256, 1024, 4096)


def to_example(review: review_sources.Review) -> tf.train.Example:
    def bytes_feature(value: str) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    def int_feature(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {
        features.TEXT: bytes_feature(review.text),
        features.LABEL: int_feature(review.label),
        features.ID: bytes_feature(review.id),
        # Lets the schema bound text length and reject empty or blank text.
        features.NUM_CHARS: int_feature(len(review.text.strip())),
    }
    num_chars = len(review.text.strip())
    lower = max([0] + [b for b in LENGTH_BUCKET_BOUNDS if b <= num_chars])
    upper = min([b for b in LENGTH_BUCKET_BOUNDS if b > num_chars], default=None)
    feature[LENGTH_BUCKET] = bytes_feature(f"{lower}-{upper - 1}" if upper else f"{lower}+")
    feature[SOURCE] = bytes_feature(review.id.split(":", 1)[0])
    if review.rating is not None:
        feature[features.RATING] = int_feature(review.rating)
    return tf.train.Example(features=tf.train.Features(feature=feature))


class _ReadSource(beam.DoFn):
    REJECTED = "rejected"

    def __init__(self, text_column: str, label_column: str, quarantine: bool):
        self._columns = (text_column, label_column)
        self._quarantine = quarantine

    def process(self, path: str) -> Iterator[Any]:
        for row in review_sources.read(path, *self._columns):
            if isinstance(row, review_sources.Rejected):
                if not self._quarantine:
                    raise RowRejectedError(
                        f"{row.id}: {row.reason}. Fix the row, or re-run with --quarantine to set "
                        "such rows aside and train on the rest"
                    )
                yield beam.pvalue.TaggedOutput(self.REJECTED, row._asdict())
            else:
                yield row


def _single_pattern(exec_properties: Mapping[str, Any]) -> str:
    input_config = example_gen_pb2.Input()
    json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    patterns = {split.pattern for split in input_config.splits}
    if len(patterns) != 1 or {s.name for s in input_config.splits} != set(SPLITS):
        raise ValueError(f"expected splits {SPLITS} over one source, got {input_config}")
    return patterns.pop()


def _count(pcoll, key: str):
    return pcoll | f"Count[{key}]" >> beam.combiners.Count.Globally() | f"Key[{key}]" >> beam.Map(lambda n: (key, n))


def _write_report(counts: dict[str, int], path: str) -> None:
    report = {
        "rows_in": counts["reviews"] + counts["rejected"],
        "examples_out": sum(counts[f"split:{split}"] for split in SPLITS),
        "rows_quarantined": counts["rejected"],
        "examples_per_split": {split: counts[f"split:{split}"] for split in SPLITS},
        "test_texts_in_training": counts["leaked"],
    }
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)


@beam.ptransform_fn
def _LeakedTestExamples(splits):
    """Test examples whose exact text also appears in train or eval."""

    def text_key(example: tf.train.Example) -> str:
        return hashlib.md5(example.features.feature[features.TEXT].bytes_list.value[0]).hexdigest()

    training_texts = (
        (splits["train"], splits["eval"])
        | "TrainingSplits" >> beam.Flatten()
        | "TrainingKeys" >> beam.Map(lambda e: (text_key(e), None))
        | "DistinctTraining" >> beam.Distinct()
    )
    test_texts = splits["test"] | "TestKeys" >> beam.Map(lambda e: (text_key(e), 1))
    return (
        {"training": training_texts, "test": test_texts}
        | "Join" >> beam.CoGroupByKey()
        | "Leaked" >> beam.FlatMap(lambda kv: kv[1]["test"] if kv[1]["training"] else [])
    )


def decode_custom_config(exec_properties: Mapping[str, Any]) -> dict[str, Any]:
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not raw:
        return {}
    config = example_gen_pb2.CustomConfig()
    json_format.Parse(raw, config)
    struct = struct_pb2.Struct()
    config.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


def encode_custom_config(values: Mapping[str, Any]) -> example_gen_pb2.CustomConfig:
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(values)))
    packed = any_pb2.Any()
    packed.Pack(struct)
    return example_gen_pb2.CustomConfig(custom_config=packed)


class Executor(BaseExampleGenExecutor):
    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("splits are built in GenerateExamplesByBeam")

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        self._output_uri = examples.uri
        super().Do(input_dict, output_dict, exec_properties)
        with tf.io.gfile.GFile(os.path.join(examples.uri, REPORT_FILE)) as f:
            report = json.load(f)
        for key in ("rows_in", "examples_out", "rows_quarantined", "test_texts_in_training"):
            examples.set_int_custom_property(key, report[key])
        # The driver resolved the span (and version) of the input; TFX's launcher does not
        # carry the driver's copy of the artifact over, so record them here.
        if exec_properties.get(example_gen_utils.SPAN_PROPERTY_NAME) is not None:
            examples.span = int(exec_properties[example_gen_utils.SPAN_PROPERTY_NAME])
        if exec_properties.get(example_gen_utils.VERSION_PROPERTY_NAME) is not None:
            examples.version = int(exec_properties[example_gen_utils.VERSION_PROPERTY_NAME])
        empty = [split for split in SPLITS if not report["examples_per_split"][split]]
        if empty and decode_custom_config(exec_properties).get(REQUIRE_EVERY_SPLIT, True):
            # Stop here, not in the Trainer minutes later with Keras' "Empty logs".
            source = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                                  _single_pattern(exec_properties))
            raise EmptySplitError(
                f"{source}: no examples in the {' and '.join(empty)} split(s) ({report['rows_in']} rows read, "
                f"{report['rows_quarantined']} quarantined, {report['examples_out']} examples); "
                "the input needs data rows of both classes in every split")
        logging.info("Ingestion report: %s", report)
        if report["rows_quarantined"]:
            logging.warning("%d rows could not be parsed and were quarantined under %s",
                            report["rows_quarantined"], os.path.join(examples.uri, QUARANTINE_DIR))
        if report["test_texts_in_training"]:
            logging.warning("train/test leakage: %d test examples have a text that is also in training",
                            report["test_texts_in_training"])

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        config = decode_custom_config(exec_properties)
        eval_percent, test_percent = int(config.get(EVAL_PERCENT, 10)), int(config.get(TEST_PERCENT, 10))

        source = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                              _single_pattern(exec_properties))
        paths = sorted(tf.io.gfile.glob(source))
        if not paths:
            raise FileNotFoundError(f"no input matches {source}")
        rows = (
            pipeline
            | "Sources" >> beam.Create(paths)
            | "Read" >> beam.ParDo(
                _ReadSource(config.get(TEXT_COLUMN, review_sources.TEXT_COLUMN),
                            config.get(LABEL_COLUMN, review_sources.LABEL_COLUMN),
                            bool(config.get(QUARANTINE, False)))
            ).with_outputs(_ReadSource.REJECTED, main="reviews")
        )
        by_split = rows.reviews | "AssignSplit" >> beam.Partition(
            lambda review, _: SPLITS.index(assign_split(review, eval_percent, test_percent)), len(SPLITS)
        )
        splits = {
            name: by_split[index] | f"ToExample[{name}]" >> beam.Map(to_example)
            for index, name in enumerate(SPLITS)
        }

        _ = (
            rows.rejected
            | "QuarantineJson" >> beam.Map(lambda row: json.dumps(row, ensure_ascii=False))
            | "WriteQuarantine" >> beam.io.WriteToText(
                os.path.join(self._output_uri, QUARANTINE_DIR, "rows"), file_name_suffix=".jsonl",
                shard_name_template="", num_shards=1)
        )
        counts = [_count(rows.reviews, "reviews"), _count(rows.rejected, "rejected"),
                  _count(splits | "Leakage" >> _LeakedTestExamples(), "leaked")]
        counts += [_count(splits[name], f"split:{name}") for name in SPLITS]
        _ = (
            counts
            | "AllCounts" >> beam.Flatten()
            | "CountsToDict" >> beam.combiners.ToDict()
            | "WriteReport" >> beam.Map(_write_report, os.path.join(self._output_uri, REPORT_FILE))
        )
        return splits


def ingest(source: str, output_uri: str, eval_percent: int = 10, test_percent: int = 10,
           quarantine: bool = False, beam_args: list[str] | None = None,
           require_every_split: bool = True) -> dict[str, Any]:
    """Runs this executor outside a pipeline (benchmarks, tests, debugging a source).

    Writes the splits under output_uri like the component does and returns the
    ingestion report.
    """
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = output_uri
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=name, pattern=os.path.basename(source)) for name in SPLITS])
    custom = encode_custom_config({EVAL_PERCENT: eval_percent, TEST_PERCENT: test_percent, QUARANTINE: quarantine,
                                   REQUIRE_EVERY_SPLIT: require_every_split})
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: os.path.dirname(source),
        standard_component_specs.INPUT_CONFIG_KEY: json_format.MessageToJson(input_config),
        standard_component_specs.OUTPUT_CONFIG_KEY: json_format.MessageToJson(example_gen_pb2.Output()),
        standard_component_specs.CUSTOM_CONFIG_KEY: json_format.MessageToJson(custom),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    executor = Executor(Executor.Context(beam_pipeline_args=beam_args)) if beam_args else Executor()
    executor.Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    with tf.io.gfile.GFile(os.path.join(output_uri, REPORT_FILE)) as f:
        return json.load(f)


def source_fingerprint(paths: list[str]) -> str:
    """A digest of every file a source is read from: path, size and mtime (ns).

    TFX's file-based driver stats what the input pattern matches; for a folder
    that is the folder itself, whose size and mtime do not change when a file
    inside it is edited, so an edited aclImdb or rt-polaritydata folder would
    be taken for cached data. Archives and CSVs are single files, but they
    get the nanosecond mtime too (TFX rounds to the second).
    """
    digest = hashlib.sha256()
    files = 0
    for path in sorted(paths):
        if fileio.isdir(path):
            members = [os.path.join(root, name) for root, _, names in fileio.walk(path) for name in names]
        else:
            members = [path]
        for member in sorted(members):
            if "://" in member:  # a remote filesystem: what its stat gives
                stat = fileio.stat(member)
                size, mtime_ns = stat.length, stat.mtime_nsec
            else:  # TensorFlow's local stat rounds mtime to the second
                stat = os.stat(member)
                size, mtime_ns = stat.st_size, stat.st_mtime_ns
            digest.update(f"{member}\0{size}\0{mtime_ns}\n".encode())
            files += 1
    return f"files:{files},sha256:{digest.hexdigest()}"


class Driver(example_gen_driver.FileBasedDriver):
    """TFX's file-based ExampleGen driver, with a fingerprint that sees inside folders."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info, component_info)
        input_config = example_gen_pb2.Input()
        json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        patterns = sorted({split.pattern for split in input_config.splits})
        paths = [path for pattern in patterns for path in fileio.glob(os.path.join(base, pattern))]
        exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = source_fingerprint(paths)
        return exec_properties


class _ReviewExampleGen(example_gen_component.FileBasedExampleGen):
    DRIVER_CLASS = Driver


def ReviewExampleGen(
    input_base: str,
    source: str,
    eval_percent: int,
    test_percent: int,
    quarantine: bool = False,
    text_column: str = review_sources.TEXT_COLUMN,
    label_column: str = review_sources.LABEL_COLUMN,
    code_fingerprint: str = "",
    span: int | None = None,
):
    """A FileBasedExampleGen over one source (file, archive, folder or glob) under input_base.

    Its cache key holds every input file's path, size and mtime (Driver) and
    `code_fingerprint`, so changed data or parsing code is read afresh. With
    `source=SPAN_PATTERN` it reads the newest span folder, or `span` if given.
    """
    from tfx.proto import range_config_pb2

    range_config = None
    if span is not None:
        if "{SPAN}" not in source:
            raise ValueError(f"a span ({span}) was asked for, but the source {source!r} has no {{SPAN}} pattern")
        range_config = range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span))
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=name, pattern=source) for name in SPLITS]
    )
    custom_config = encode_custom_config({
        EVAL_PERCENT: eval_percent, TEST_PERCENT: test_percent, QUARANTINE: quarantine,
        TEXT_COLUMN: text_column, LABEL_COLUMN: label_column, CODE_FINGERPRINT: code_fingerprint,
    })
    return _ReviewExampleGen(
        input_base=input_base,
        input_config=input_config,
        custom_config=custom_config,
        range_config=range_config,
        custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
    )
