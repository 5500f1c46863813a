"""ExampleGen for labelled review text, with splits carved by a stable hash.

TFX's CsvExampleGen maps one file pattern to one split, or hashes a single
input into splits. Sentiment datasets need both at once: IMDB keeps its
official test file and carves a validation slice out of its train file. This
executor reads each input split's files with a Beam file source and keeps the
examples whose text hashes into that split's bucket range, so the split is a
pure function of the data and the config, recorded in the component's
execution properties.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
from typing import Any, Iterable, Iterator, Mapping

import apache_beam as beam
import tensorflow as tf
from apache_beam.io import fileio
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen import component as example_gen_component
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs

from models import features

BUCKETS_KEY = "split_buckets"
NUM_BUCKETS_KEY = "num_buckets"


class DataFormatError(ValueError):
    """A row that cannot be turned into an example; names the file and line."""


def split_bucket(text: str, num_buckets: int) -> int:
    """Stable across runs, machines and Python versions (unlike hash())."""
    digest = hashlib.md5(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_buckets


def make_example(text: str, label: int, example_id: str) -> tf.train.Example:
    def bytes_feature(value: str) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                features.TEXT: bytes_feature(text),
                features.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                features.ID: bytes_feature(example_id),
            }
        )
    )


def read_labelled_csv(lines: Iterable[str], source_name: str) -> Iterator[tuple[str, int, str]]:
    """Yields (text, label, id) from a CSV with a `text,label` header.

    The id is `<file>:<line>` so every example can be traced to its source row.
    """
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DataFormatError(f"{source_name}: file is empty (expected a header line)") from None
    columns = {name.strip(): index for index, name in enumerate(header)}
    missing = [name for name in (features.TEXT, features.LABEL) if name not in columns]
    if missing:
        raise DataFormatError(f"{source_name}:1: header {header} lacks column(s) {missing}")
    text_index, label_index = columns[features.TEXT], columns[features.LABEL]
    for row in reader:
        line = reader.line_num
        if len(row) != len(header):
            raise DataFormatError(f"{source_name}:{line}: expected {len(header)} columns, found {len(row)}")
        raw_label = row[label_index].strip()
        try:
            label = int(raw_label)
        except ValueError:
            raise DataFormatError(f"{source_name}:{line}: label {raw_label!r} is not an integer") from None
        yield row[text_index], label, f"{source_name}:{line}"


def _read_file(readable_file: fileio.ReadableFile) -> Iterator[tuple[str, int, str]]:
    path = readable_file.metadata.path
    with readable_file.open() as raw:
        # Beam's compressed file objects are not io.IOBase, so decode line by line.
        lines = codecs.iterdecode(iter(raw.readline, b""), "utf-8")
        yield from read_labelled_csv(lines, os.path.basename(path))


@beam.ptransform_fn
def _ReadSplit(pipeline, input_base: str, pattern: str, bucket_range: tuple[int, int], num_buckets: int):
    lo, hi = bucket_range

    def in_split(row: tuple[str, int, str]) -> bool:
        return lo <= split_bucket(row[0], num_buckets) < hi

    return (
        pipeline
        | "Match" >> fileio.MatchFiles(os.path.join(input_base, pattern))
        | "Open" >> fileio.ReadMatches()
        | "Parse" >> beam.FlatMap(_read_file)
        | "KeepBuckets" >> beam.Filter(in_split)
        | "ToExample" >> beam.MapTuple(make_example)
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

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        input_config = example_gen_pb2.Input()
        json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        custom = decode_custom_config(exec_properties)
        num_buckets = int(custom.get(NUM_BUCKETS_KEY, 1))
        buckets = custom.get(BUCKETS_KEY, {})
        splits = {}
        for split in input_config.splits:
            bucket_range = tuple(int(b) for b in buckets.get(split.name, (0, num_buckets)))
            splits[split.name] = pipeline | f"ReadSplit[{split.name}]" >> _ReadSplit(
                exec_properties[standard_component_specs.INPUT_BASE_KEY],
                split.pattern,
                bucket_range,
                num_buckets,
            )
        return splits


def ReviewExampleGen(
    input_base: str, split_sources: Mapping[str, str], split_buckets: Mapping[str, tuple[int, int]], num_buckets: int
):
    """A FileBasedExampleGen whose splits are (file pattern, hash-bucket range) pairs."""
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=name, pattern=pattern) for name, pattern in split_sources.items()]
    )
    custom_config = encode_custom_config(
        {NUM_BUCKETS_KEY: num_buckets, BUCKETS_KEY: {name: list(r) for name, r in split_buckets.items()}}
    )
    return example_gen_component.FileBasedExampleGen(
        input_base=input_base,
        input_config=input_config,
        custom_config=custom_config,
        custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
    )
