"""Pretraining the reader on unlabeled text: a bidirectional language model.

The classifier's reader (embedding and recurrent layers) first learns to
predict words: at every position the forward half of the bidirectional state
predicts the next token and the backward half the previous one (the biLM of
ELMo; Dai & Le 2015 pretrain the same way with a one-directional LM). The
softmax over the vocabulary is sampled (Jean et al. 2015), so a step costs
about what a classification step costs. The layers are built with the
classifier's names and shapes, so the Trainer starts from them by layer path
and by token (models/warm_start.py), as a warm start across spans does.

What it learns from: the training split's texts and unlabeled texts, never a
held-out one. Every unlabeled text that equals (after the Transform's
normalization) a text of a held-out split is dropped first, and the digest of
every text learnt from is kept with the result, so that can be checked.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from models import embeddings, features, preprocessing, tracing, warm_start

# Traced steps leave Keras' own code as written (models/tracing.py).
tracing.leave_keras_unconverted()

REPORT_FILE = "pretraining.json"
DIGESTS_FILE = "corpus_digests.txt.gz"
VOCABULARY_FILE = "vocabulary.txt"
SOFTMAX = ("softmax_forward", "softmax_backward")  # layer names; the classifier has none, so they stay here
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class ReaderShape:
    """The reader's layers, as the classifier builds them (ModelConfig's fields of the same names)."""
    embedding_dim: int = 50
    cell: str = "gru"
    rnn_units: int = 32
    rnn_layers: int = 1
    bidirectional: bool = True


@dataclasses.dataclass(frozen=True)
class PretrainingSettings:
    vocab_size: int = 30_000
    max_len: int = 320
    token_level: str = "word"
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 2e-3
    num_sampled: int = 256
    embedding_dropout: float = 0.1
    # A share of the corpus held out to report the language model's loss after each epoch.
    validation_share: float = 0.02
    seed: int = 42
    # GloVe-format vectors to start the embedding from ("" = random).
    pretrained_embeddings: str = ""


def dedup_key(text: str) -> str:
    """A text as the Transform reads it (lowercase, HTML breaks and control characters as
    spaces, whitespace collapsed), digested: two texts with one key are one text to the model."""
    text = _CONTROL.sub(" ", text).lower()
    text = " ".join(_BREAK.sub(" ", text).split())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def read_unlabeled(path: str) -> Iterator[str]:
    """The `text` column of a CSV file (plain or .gz; other columns, e.g. a label, are ignored)."""
    with tf.io.gfile.GFile(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        reader = csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise ValueError(f"{path}: an unlabeled source must be a CSV with a 'text' column, "
                             f"found columns {reader.fieldnames}")
        for row in reader:
            if row["text"] and row["text"].strip():
                yield row["text"]


@dataclasses.dataclass
class Corpus:
    texts: list[str]
    counts: dict[str, int]  # what was read, dropped and kept, by source


def build_corpus(train_texts: Iterable[str], unlabeled: dict[str, Iterable[str]],
                 held_out_texts: Iterable[str]) -> Corpus:
    """The training texts and the unlabeled ones, minus every text a held-out split holds and
    every repeat (the first occurrence is kept)."""
    held_out = {dedup_key(text) for text in held_out_texts}
    seen: set[str] = set()
    texts: list[str] = []
    counts = collections.Counter(held_out_texts=len(held_out))

    def add(source: str, items: Iterable[str]) -> None:
        for text in items:
            counts[f"{source}_read"] += 1
            key = dedup_key(text)
            if key in held_out:
                counts[f"{source}_dropped_held_out"] += 1
            elif key in seen:
                counts[f"{source}_dropped_repeat"] += 1
            else:
                seen.add(key)
                texts.append(text)
                counts[f"{source}_kept"] += 1

    add("train", train_texts)
    for name, items in unlabeled.items():
        add(name, items)
    counts["texts"] = len(texts)
    return Corpus(texts, dict(counts))


def tokenize_corpus(texts: list[str], token_level: str, batch: int = 2048) -> list[np.ndarray]:
    """Each text's tokens (bytes), by the Transform's own tokenizer."""
    tokens = []
    for start in range(0, len(texts), batch):
        ragged = preprocessing.tokenize(tf.constant(texts[start:start + batch]), token_level)
        # One conversion per batch: slicing an eager ragged tensor row by row costs ~1 ms a row.
        tokens.extend(np.split(ragged.flat_values.numpy(), ragged.row_splits.numpy()[1:-1]))
    return tokens


def learn_vocabulary(tokens: list[np.ndarray], size: int) -> list[str]:
    """The `size` most frequent tokens, most frequent first (ties by token, as tft.vocabulary)."""
    counter = collections.Counter()
    for row in tokens:
        counter.update(row.tolist())
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:size]
    return [token.decode("utf-8") for token, _ in ranked]


def to_ids(tokens: list[np.ndarray], vocabulary: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[texts, max_len] ids under the Transform's conventions (0 padding, 1..V, V+1 OOV), cut
    head-and-tail to max_len as the Transform cuts, and the lengths."""
    index = {token.encode("utf-8"): row for row, token in enumerate(vocabulary, start=1)}
    oov = len(vocabulary) + 1
    head, tail = preprocessing.head_and_tail(max_len)
    ids = np.zeros((len(tokens), max_len), np.int32)
    lengths = np.zeros(len(tokens), np.int32)
    for i, row in enumerate(tokens):
        row = list(row) if len(row) <= max_len else list(row[:head]) + list(row[len(row) - tail:])
        ids[i, :len(row)] = [index.get(token, oov) for token in row]
        lengths[i] = len(row)
    return ids, lengths


class BidirectionalLanguageModel(tf.keras.Model):
    """The reader plus two sampled softmaxes: forward states predict the next token, backward
    states the previous one. Trained through fit(); its loss is the mean per predicted token."""

    def __init__(self, rows: int, shape: ReaderShape, num_sampled: int, embedding_dropout: float,
                 embedding_matrix: np.ndarray | None = None):
        super().__init__(name="reader_language_model")
        if not shape.bidirectional:
            raise ValueError("the language model pretrains a bidirectional reader (model.bidirectional=true)")
        if shape.rnn_layers != 1:
            # A second bidirectional layer's forward half would read the first layer's backward
            # states, which have seen the very token it is asked to predict.
            raise ValueError(f"pretraining supports a reader of one recurrent layer (model.rnn_layers=1), "
                             f"not {shape.rnn_layers}")
        from models import model as model_lib

        self.rows, self.units, self.num_sampled = rows, shape.rnn_units, num_sampled
        self.embedding = tf.keras.layers.Embedding(rows, shape.embedding_dim, mask_zero=True, name="embedding",
                                                   embeddings_initializer="uniform")
        self.dropout = tf.keras.layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")
        # Named as models/model.py names them: bi<cell>_<index>.
        self.recurrent = [tf.keras.layers.Bidirectional(
            model_lib.recurrent_layer(shape.cell, shape.rnn_units, name=f"{shape.cell}_{index}"),
            name=f"bi{shape.cell}_{index}") for index in range(shape.rnn_layers)]
        self.softmax = [SampledSoftmax(rows, shape.rnn_units, name=name) for name in SOFTMAX]
        self.embedding.build((None, None))
        if embedding_matrix is not None:
            self.embedding.embeddings.assign(embedding_matrix)

    def call(self, ids, training=False):
        x = self.dropout(self.embedding(ids), training=training)
        mask = self.embedding.compute_mask(ids)
        for layer in self.recurrent:
            x = layer(x, mask=mask, training=training)
        return x

    def token_loss(self, ids, training=False):
        """Mean sampled-softmax loss over every (state, neighbouring token) pair inside the texts."""
        states = self(ids, training=training)
        forward, backward = states[..., :self.units], states[..., self.units:]
        real = ids > 0
        next_real = real[:, 1:]  # position t predicts t+1 where t+1 is a token
        losses = [
            self.softmax[0](tf.boolean_mask(forward[:, :-1], next_real), tf.boolean_mask(ids[:, 1:], next_real),
                            self.num_sampled),
            self.softmax[1](tf.boolean_mask(backward[:, 1:], next_real), tf.boolean_mask(ids[:, :-1], next_real),
                            self.num_sampled),
        ]
        return tf.add_n([tf.reduce_mean(loss) for loss in losses]) / 2.0

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self.token_loss(data, training=True)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return {"loss": loss}

    def test_step(self, data):
        return {"loss": self.token_loss(data, training=False)}


class SampledSoftmax(tf.keras.layers.Layer):
    """Output weights over the vocabulary and the sampled softmax loss, in training and in
    validation alike (a full softmax over the held-out tokens would cost more than an epoch)."""

    def __init__(self, rows: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.rows = rows
        self.kernel = self.add_weight(name="kernel", shape=(rows, units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(rows,), initializer="zeros")

    def call(self, states, targets, num_sampled):
        # Ids are ranked by frequency (vocabulary order), which the log-uniform sampler assumes.
        return tf.nn.sampled_softmax_loss(self.kernel, self.bias, tf.cast(targets, tf.int64)[:, None], states,
                                          num_sampled=num_sampled, num_classes=self.rows)


def batches(ids: np.ndarray, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int,
            labels: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of texts of similar length, each trimmed to its longest text (as the Trainer batches);
    with `labels`, (ids, the batch's labels)."""
    order = np.argsort(lengths, kind="stable")
    starts = list(range(0, len(order), batch_size))
    if shuffle:
        np.random.default_rng(seed).shuffle(starts)

    def generate():
        for start in starts:
            rows = order[start:start + batch_size]
            text_ids = ids[rows, :max(1, int(lengths[rows].max()))]
            yield text_ids if labels is None else (text_ids, labels[rows])

    ids_spec = tf.TensorSpec([None, None], tf.int32)
    signature = ids_spec if labels is None else (ids_spec, tf.TensorSpec([None], tf.float32))
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)


def pretrain(corpus: Corpus, shape: ReaderShape, settings: PretrainingSettings, output_dir: str,
             progress: Callable[[str], None] = print) -> dict:
    """Learns the reader on `corpus` and writes to `output_dir`: the reader's state for the
    Trainer (warm_start.STATE_DIR), the vocabulary, the corpus digests and a report; returns the report."""
    started = time.time()
    tf.keras.utils.set_random_seed(settings.seed)
    tokens = tokenize_corpus(corpus.texts, settings.token_level)
    vocabulary = learn_vocabulary(tokens, settings.vocab_size)
    ids, lengths = to_ids(tokens, vocabulary, settings.max_len)
    rows = 1 + len(vocabulary) + features.NUM_OOV_BUCKETS
    progress(f"pretraining corpus: {len(corpus.texts):,} texts, {int(lengths.sum()):,} tokens read, "
             f"vocabulary {len(vocabulary):,}")

    held = np.random.default_rng(settings.seed).random(len(ids)) < settings.validation_share
    matrix = None
    if settings.pretrained_embeddings:
        matrix, found = embeddings.embedding_matrix(vocabulary, embeddings.resolve(settings.pretrained_embeddings),
                                                    shape.embedding_dim, features.NUM_OOV_BUCKETS, settings.seed)
        progress(f"embedding starts from {settings.pretrained_embeddings} for {found:,} of {len(vocabulary):,} tokens")
    model = BidirectionalLanguageModel(rows, shape, settings.num_sampled, settings.embedding_dropout, matrix)
    model.compile(optimizer=tf.keras.optimizers.Adam(settings.learning_rate, clipnorm=1.0))
    train = batches(ids[~held], lengths[~held], settings.batch_size, True, settings.seed)
    validation = batches(ids[held], lengths[held], settings.batch_size, False, settings.seed)
    history = model.fit(train.repeat(), validation_data=validation, epochs=settings.epochs,
                        steps_per_epoch=-(-int((~held).sum()) // settings.batch_size), verbose=2)

    state_dir = os.path.join(output_dir, warm_start.STATE_DIR)
    warm_start.save(model, warm_start.token_rows(vocabulary), state_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, VOCABULARY_FILE), "w") as f:
        f.write("\n".join(vocabulary) + "\n")
    with tf.io.gfile.GFile(os.path.join(output_dir, DIGESTS_FILE), "wb") as f:
        f.write(gzip.compress("\n".join(sorted(dedup_key(t) for t in corpus.texts)).encode() + b"\n", mtime=0))
    report = {
        "corpus": corpus.counts,
        "tokens": int(lengths.sum()),
        "vocabulary": len(vocabulary),
        "reader": dataclasses.asdict(shape),
        "settings": dataclasses.asdict(settings),
        "validation_texts": int(held.sum()),
        "loss": [float(v) for v in history.history["loss"]],
        "val_loss": [float(v) for v in history.history.get("val_loss", [])],
        "seconds": round(time.time() - started, 1),
    }
    with tf.io.gfile.GFile(os.path.join(output_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report


def corpus_digests(output_dir: str) -> set[str]:
    """The digests (dedup_key) of every text a pretraining at `output_dir` learnt from."""
    with tf.io.gfile.GFile(os.path.join(output_dir, DIGESTS_FILE), "rb") as f:
        return set(gzip.decompress(f.read()).decode().split())


REUSE_KEY_FILE = "reuse_key.txt"  # written last: its presence marks a finished pretraining


def reuse_key(objective: str, reader: str, settings: str, code: str, texts: Iterable[str],
              labels: Iterable[float] | None = None) -> str:
    """A digest of everything a pretraining's result depends on: the objective, the network's shape,
    the settings (seed included), the code, and the corpus text by text, in order, with its labels.
    Two pretrainings with one key learn the same network, so the second may copy the first's."""
    digest = hashlib.sha256()
    for part in (objective, reader, settings, code):
        digest.update(part.encode("utf-8") + b"\0")
    texts = list(texts)
    labels = [None] * len(texts) if labels is None else list(labels)
    for text, label in zip(texts, labels, strict=True):
        digest.update(text.encode("utf-8") + (b"\0" if label is None else b"\0%d" % int(label)) + b"\n")
    return digest.hexdigest()


def write_reuse_key(output_dir: str, key: str) -> None:
    with tf.io.gfile.GFile(os.path.join(output_dir, REUSE_KEY_FILE), "w") as f:
        f.write(key + "\n")


def find_reusable(output_dir: str, key: str) -> str | None:
    """The newest finished pretraining with this key among the directories beside `output_dir`: the
    earlier executions' artifacts of the same component, as the local orchestrator lays them out
    (`<root>/ReaderPretrainer/model/<execution>`). None if there is none (or another layout)."""
    here = output_dir.rstrip("/")
    found = []
    for path in tf.io.gfile.glob(os.path.join(os.path.dirname(here), "*", REUSE_KEY_FILE)):
        directory = os.path.dirname(path)
        if directory == here:
            continue
        with tf.io.gfile.GFile(path) as f:
            if f.read().strip() == key:
                name = os.path.basename(directory)
                found.append((int(name) if name.isdigit() else -1, directory))
    return max(found)[1] if found else None


def copy_pretraining(source: str, destination: str, **report_updates) -> dict:
    """Copies a finished pretraining's files into `destination`, all but its reuse key (which the
    caller writes last, once the copy is whole); returns its report, with `report_updates`."""
    for directory, _, files in tf.io.gfile.walk(source):
        target = os.path.join(destination, os.path.relpath(directory, source))
        tf.io.gfile.makedirs(target)
        for name in files:
            if directory == source and name == REUSE_KEY_FILE:
                continue
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, name), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(source, REPORT_FILE)) as f:
        report = json.load(f)
    # Where it was learnt, through copies of copies.
    report = {**report, "learnt_in": report.get("learnt_in", source), **report_updates}
    with tf.io.gfile.GFile(os.path.join(destination, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report
