"""ReaderPretrainer: the classifier's reader learnt first, before the Trainer starts from it.

Two objectives (PretrainingConfig.objective):
* `language_model` (models/pretraining.py): the reader learns to predict words
  on the training split of the validated examples and the configured
  unlabeled CSV files;
* `labelled_sentences` (models/transfer.py): the whole classifier learns the
  same task on the sentences of labelled CSV files of another dataset.

Either way it drops every text that equals a text of a held-out split (eval
or test) of the validated examples, and writes a Model artifact holding the
network's state where the Trainer's `base_model` looks for it
(`<uri>/warm_start`, models/warm_start.py), with the vocabulary it was
learnt with, the digest of every text it read, and a report.

A component of its own, so TFX caches it: its inputs are the validated
examples, the unlabeled files' digests and the code's, and the settings;
a later run with the same data and code reuses it without a step. A new
span's examples miss that cache, but when the corpus left after dropping
their held-out texts, the settings and the code are an earlier execution's
(models/pretraining.reuse_key), it copies that result instead of learning
it again.
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
    labelled_sources: Parameter[str] = "[]",
    objective: Parameter[str] = "language_model",
    reuse_earlier: Parameter[int] = 1,
) -> None:
    """Pretrains the reader. unlabeled_sources, labelled_sources: JSON lists of CSV paths; reader:
    JSON of models.pretraining.ReaderShape (language_model) or of the classifier's build_model
    arguments (labelled_sentences); settings: JSON of PretrainingSettings, plus `clipnorm` and
    `weight_averaging` for the classifier. The source fingerprint only keys TFX's cache.
    reuse_earlier: copy an earlier execution's result with the same corpus, settings and code
    (a new span's run whose held-out texts the corpus never held) instead of learning it again."""
    from absl import logging

    from models import pretraining, transfer

    del source_fingerprint

    def progress(text: str) -> None:
        logging.info("progress: %s", text)  # the run's console shows these lines (pipeline/console.py)

    splits = json.loads(examples.split_names)
    if TRAIN_SPLIT not in splits:
        raise ValueError(f"the examples at {examples.uri} have no {TRAIN_SPLIT!r} split (splits: {splits})")
    held_out_splits = [split for split in splits if split != TRAIN_SPLIT]
    held_out = [text for split in held_out_splits for text in read_split_texts(examples.uri, split, text_feature)]
    sources = json.loads(unlabeled_sources)
    values = json.loads(settings)
    labels = None
    if objective == "labelled_sentences":
        sources = json.loads(labelled_sources)
        training = {key: values.pop(key) for key in ("clipnorm", "weight_averaging")}
        training["learning_rate"] = values["learning_rate"]
        corpus = transfer.build_sentence_corpus(
            {os.path.basename(path): transfer.read_labelled(path) for path in sources}, held_out)
        labels = corpus.labels
        splits_read = ""  # the pipeline's own examples: only their held-out texts, to drop them
    elif objective == "language_model":
        corpus = pretraining.build_corpus(
            read_split_texts(examples.uri, TRAIN_SPLIT, text_feature),
            {os.path.basename(path): pretraining.read_unlabeled(path) for path in sources},
            held_out)
        splits_read = TRAIN_SPLIT
    else:
        raise ValueError(f"unknown pretraining objective {objective!r}")
    logging.info("Pretraining corpus: %s", corpus.counts)

    key = pretraining.reuse_key(objective, reader, settings, code_fingerprint, corpus.texts, labels)
    earlier = pretraining.find_reusable(model.uri, key) if reuse_earlier else None
    if earlier:
        progress(f"the same {corpus.counts['texts']:,} texts, settings and code as {earlier}: copied, not learnt again")
        # This run's counts (its held-out texts differ; the texts learnt from do not).
        report = pretraining.copy_pretraining(earlier, model.uri, corpus=corpus.counts, reused_from=earlier)
        model.set_string_custom_property("reused_from", earlier)
    elif objective == "labelled_sentences":
        report = transfer.pretrain_classifier(corpus, json.loads(reader), pretraining.PretrainingSettings(**values),
                                              training, model.uri, progress=progress)
    else:
        report = pretraining.pretrain(corpus, pretraining.ReaderShape(**json.loads(reader)),
                                      pretraining.PretrainingSettings(**values), model.uri, progress=progress)
    pretraining.write_reuse_key(model.uri, key)  # last: the result is whole
    # What it learnt from, on the artifact itself: ML Metadata answers "did it read a test text?".
    model.set_string_custom_property("objective", objective)
    model.set_string_custom_property("splits_read", splits_read)
    model.set_string_custom_property("held_out_splits", ",".join(held_out_splits))
    model.set_string_custom_property("labelled_sources" if objective == "labelled_sentences" else
                                     "unlabeled_sources", json.dumps(sources))
    model.set_string_custom_property("corpus", json.dumps(corpus.counts, sort_keys=True))
    model.set_int_custom_property("texts", corpus.counts["texts"])
    model.set_int_custom_property("tokens", report["tokens"])
    model.set_float_custom_property("seconds", report["seconds"])
    if report["val_loss"]:
        model.set_float_custom_property("val_loss", report["val_loss"][-1])
    if report.get("val_accuracy"):
        model.set_float_custom_property("val_accuracy", report["val_accuracy"][-1])
