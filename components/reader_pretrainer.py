"""ReaderPretrainer: the classifier's reader learnt on unlabeled text first (models/pretraining.py).

It reads the training split of the validated examples and the configured
unlabeled CSV files, drops every text that equals a text of a held-out split
(eval or test) of the same examples, and writes a Model artifact holding the
reader's state where the Trainer's `base_model` looks for it
(`<uri>/warm_start`, models/warm_start.py), with the vocabulary it was
learnt with, the digest of every text it read, and a report.

A component of its own, so TFX caches it: its inputs are the validated
examples, the unlabeled files' digests and the code's, and the settings;
a later run with the same data and code reuses it without a step.
"""

import json
import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

TRAIN_SPLIT = "train"


def read_split_texts(examples_uri: str, split: str, text_feature: str):
    """Every text of a split of an Examples artifact (gzipped TFRecords of tf.Example)."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no examples in {examples_uri}/Split-{split}")
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        value = tf.train.Example.FromString(record.numpy()).features.feature[text_feature].bytes_list.value
        if value:
            yield value[0].decode("utf-8")


@component
def ReaderPretrainer(
    examples: InputArtifact[standard_artifacts.Examples],
    model: OutputArtifact[standard_artifacts.Model],
    unlabeled_sources: Parameter[str],
    reader: Parameter[str],
    settings: Parameter[str],
    text_feature: Parameter[str],
    source_fingerprint: Parameter[str] = "",
    code_fingerprint: Parameter[str] = "",
) -> None:
    """Pretrains the reader. unlabeled_sources: a JSON list of CSV paths; reader and settings:
    JSON of models.pretraining.ReaderShape and PretrainingSettings. The fingerprints only key the cache."""
    from absl import logging

    from models import pretraining

    del source_fingerprint, code_fingerprint
    splits = json.loads(examples.split_names)
    if TRAIN_SPLIT not in splits:
        raise ValueError(f"the examples at {examples.uri} have no {TRAIN_SPLIT!r} split (splits: {splits})")
    held_out_splits = [split for split in splits if split != TRAIN_SPLIT]
    held_out = [text for split in held_out_splits for text in read_split_texts(examples.uri, split, text_feature)]
    sources = json.loads(unlabeled_sources)
    corpus = pretraining.build_corpus(
        read_split_texts(examples.uri, TRAIN_SPLIT, text_feature),
        {os.path.basename(path): pretraining.read_unlabeled(path) for path in sources},
        held_out)
    logging.info("Pretraining corpus: %s", corpus.counts)
    report = pretraining.pretrain(corpus, pretraining.ReaderShape(**json.loads(reader)),
                                  pretraining.PretrainingSettings(**json.loads(settings)), model.uri,
                                  progress=logging.info)
    # What it learnt from, on the artifact itself: ML Metadata answers "did it read a test text?".
    model.set_string_custom_property("splits_read", TRAIN_SPLIT)
    model.set_string_custom_property("held_out_splits", ",".join(held_out_splits))
    model.set_string_custom_property("unlabeled_sources", json.dumps(sources))
    model.set_string_custom_property("corpus", json.dumps(corpus.counts, sort_keys=True))
    model.set_int_custom_property("texts", corpus.counts["texts"])
    model.set_int_custom_property("tokens", report["tokens"])
    model.set_float_custom_property("seconds", report["seconds"])
    if report["val_loss"]:
        model.set_float_custom_property("val_loss", report["val_loss"][-1])
