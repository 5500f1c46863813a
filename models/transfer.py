"""Pretraining the classifier on labelled text of the same task: movie-review sentences for polarity.

Polarity's 8.5k training sentences are few; IMDB's 25k labelled reviews are
the same task (the sentiment of a movie review) in another form. Cut into
sentences, each with its review's label, they give 300k noisy examples of the
length polarity reads. The classifier (the Trainer's own network, every layer)
learns on them first; the Trainer then starts from it by layer path and by
token (models/warm_start.py) and trains on polarity's sentences with a fresh
optimizer. Measured in bench/transfer_screen.py (docs/experiments.md).

What it learns from: labelled CSV files (`text`, `label` 0/1) that must not
be the pipeline's own held-out data. Every sentence equal (after the
Transform's normalization) to a held-out text of the pipeline is dropped, and
the digest of every sentence learnt from is kept with the result.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
import re
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from models import embeddings, features, pretraining, warm_start
from models import model as model_lib

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_SENTENCE_WORDS = 3


def sentences(text: str) -> list[str]:
    """The text's sentences of at least MIN_SENTENCE_WORDS words (split after . ! or ?)."""
    return [s for s in _SENTENCE_END.split(_BREAK.sub(" ", text)) if len(s.split()) >= MIN_SENTENCE_WORDS]


def read_labelled(path: str) -> Iterator[tuple[str, int]]:
    """(text, label) of each row of a CSV file (plain or .gz) with `text` and `label` (0 or 1) columns."""
    with tf.io.gfile.GFile(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        reader = csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a labelled source must be a CSV with 'text' and 'label' columns, "
                             f"found columns {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise ValueError(f"{path}, line {line}: label {row['label']!r} is not 0 or 1")
            if row["text"] and row["text"].strip():
                yield row["text"], int(row["label"])


@dataclasses.dataclass
class LabelledCorpus:
    texts: list[str]
    labels: np.ndarray
    counts: dict[str, int]


def build_sentence_corpus(sources: dict[str, Iterable[tuple[str, int]]],
                          held_out_texts: Iterable[str]) -> LabelledCorpus:
    """Every sentence of every labelled text, with the text's label, minus those equal to a held-out text."""
    held_out = {pretraining.dedup_key(text) for text in held_out_texts}
    texts, labels, counts = [], [], {"held_out_texts": len(held_out)}
    for name, rows in sources.items():
        read = kept = 0
        for text, label in rows:
            read += 1
            for sentence in sentences(text):
                if pretraining.dedup_key(sentence) in held_out:
                    counts[f"{name}_sentences_dropped_held_out"] = counts.get(
                        f"{name}_sentences_dropped_held_out", 0) + 1
                    continue
                texts.append(sentence)
                labels.append(label)
                kept += 1
        counts[f"{name}_read"], counts[f"{name}_sentences_kept"] = read, kept
    counts["texts"] = len(texts)
    return LabelledCorpus(texts, np.asarray(labels, np.float32), counts)


def labelled_batches(ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool,
                     seed: int) -> tf.data.Dataset:
    """(token ids, {logit: label}) in the language model's batches of similar length (pretraining.batches)."""
    return pretraining.batches(ids, lengths, batch_size, shuffle, seed, labels.astype(np.float32)).map(
        lambda text_ids, label: (text_ids, {model_lib.LOGIT: label}))


class EpochShare(tf.keras.callbacks.Callback):
    """Reports every tenth of an epoch: one epoch of 300k sentences takes about 11 minutes."""

    def __init__(self, steps: int, epochs: int, progress: Callable[[str], None], parts: int = 10):
        super().__init__()
        self.steps, self.epochs, self.progress = steps, epochs, progress
        self.marks = {max(1, steps * part // parts): part * 100 // parts for part in range(1, parts)}
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 in self.marks:
            self.progress(f"{self.marks[batch + 1]}% of epoch {self.epoch}/{self.epochs}, "
                          f"loss {float((logs or {}).get('loss', float('nan'))):.4f}")


def pretrain_classifier(corpus: LabelledCorpus, model_settings: dict[str, Any],
                        settings: pretraining.PretrainingSettings, training: dict[str, Any], output_dir: str,
                        progress: Callable[[str], None] = print) -> dict:
    """Trains the classifier (models/model.build_model with `model_settings`) on `corpus` and writes to
    `output_dir` what the Trainer starts from (warm_start.STATE_DIR), the vocabulary, the corpus
    digests and a report; returns the report. `training`: learning_rate, clipnorm, weight_averaging."""
    started = time.time()
    tf.keras.utils.set_random_seed(settings.seed)
    tokens = pretraining.tokenize_corpus(corpus.texts, settings.token_level)
    vocabulary = pretraining.learn_vocabulary(tokens, settings.vocab_size)
    ids, lengths = pretraining.to_ids(tokens, vocabulary, settings.max_len)
    progress(f"labelled corpus: {len(corpus.texts):,} sentences, {int(lengths.sum()):,} tokens, "
             f"vocabulary {len(vocabulary):,}")
    matrix = None
    if settings.pretrained_embeddings:
        matrix, found = embeddings.embedding_matrix(vocabulary, embeddings.resolve(settings.pretrained_embeddings),
                                                    int(model_settings["embedding_dim"]), features.NUM_OOV_BUCKETS,
                                                    settings.seed)
        progress(f"embedding starts from {settings.pretrained_embeddings} for {found:,} of {len(vocabulary):,} tokens")
    model = model_lib.build_model(vocab_size=1 + len(vocabulary) + features.NUM_OOV_BUCKETS,
                                  embedding_matrix=matrix, **model_settings)
    train_model = model_lib.training_view(model)
    model_lib.compile_model(train_model, float(training["learning_rate"]), float(training["clipnorm"]),
                            float(training["weight_averaging"]))
    held = np.random.default_rng(settings.seed).random(len(ids)) < settings.validation_share
    train = labelled_batches(ids[~held], lengths[~held], corpus.labels[~held], settings.batch_size, True,
                             settings.seed)
    validation = labelled_batches(ids[held], lengths[held], corpus.labels[held], settings.batch_size, False,
                                  settings.seed)
    model_lib.build_metric_variables(train_model, next(iter(validation)))
    steps = -(-int((~held).sum()) // settings.batch_size)
    history = train_model.fit(train, validation_data=validation, epochs=settings.epochs, verbose=2,
                              callbacks=[EpochShare(steps, settings.epochs, progress)])

    warm_start.save(model, warm_start.token_rows(vocabulary), os.path.join(output_dir, warm_start.STATE_DIR))
    with tf.io.gfile.GFile(os.path.join(output_dir, pretraining.VOCABULARY_FILE), "w") as f:
        f.write("\n".join(vocabulary) + "\n")
    digests = sorted({pretraining.dedup_key(t) for t in corpus.texts})
    with tf.io.gfile.GFile(os.path.join(output_dir, pretraining.DIGESTS_FILE), "wb") as f:
        f.write(gzip.compress("\n".join(digests).encode() + b"\n", mtime=0))
    report = {
        "objective": "labelled_sentences",
        "corpus": corpus.counts,
        "tokens": int(lengths.sum()),
        "vocabulary": len(vocabulary),
        "model": model_settings,
        "settings": dataclasses.asdict(settings),
        "validation_texts": int(held.sum()),
        "loss": [float(v) for v in history.history["loss"]],
        "val_loss": [float(v) for v in history.history.get("val_loss", [])],
        "val_accuracy": [float(v) for v in history.history.get("val_accuracy", [])],
        "seconds": round(time.time() - started, 1),
    }
    with tf.io.gfile.GFile(os.path.join(output_dir, pretraining.REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report
