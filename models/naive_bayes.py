"""Naive Bayes n-gram scores, stacked with the recurrent model's logit.

A bag of n-grams and a recurrent reader make different mistakes: the bag
counts every cue the training data showed, even one seen twice, which a
network fed a few thousand sentences does not learn; the reader sees order
and negation. Wang & Manning (2012) found the Naive Bayes log-count ratio of
binarized unigrams and bigrams a strong baseline on short sentiment snippets.

The ratios are counted on the training split. Their weight beside the
network's logit (and the logit's own scale and offset) is fitted by log loss
on the validation split: counted on the training split, n-gram scores are
overconfident there, so fitting the combination on it would overweight them.

The score is a sum over tokens, so it masks padding for free (padding forms
no n-gram) and has an exact per-token view: the running sum adds to the
model's trajectory.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
from scipy import sparse
from tensorflow.python.ops import lookup_ops

from models import calibration, features
from models import model as model_lib

MAX_ORDER = 3
SMOOTHING = 1.0  # alpha of Wang & Manning; chosen on polarity validation accuracy (README)


def ngram_keys(token_ids: tf.Tensor, order: int, id_space: int) -> tf.Tensor:
    """[batch, time, order] int64 keys of the 1..order-grams ending at each token; 0 = none.

    A k-gram of ids (i1, .., ik) gets the key i1*S^(k-1) + .. + ik with S =
    id_space > every id: exact (no hashing), and keys of different orders
    cannot meet since ids start at 1. An n-gram touching padding has no key.
    """
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"n-gram order must be 1 to {MAX_ORDER}, got {order}")
    if id_space ** order >= 2 ** 63:
        raise ValueError(f"{id_space} ids do not fit {order}-gram keys in int64")
    ids = tf.cast(token_ids, tf.int64)
    keys, gram, valid = [ids], ids, ids > 0
    for _k in range(1, order):
        # The k-gram ending at t extends the (k-1)-gram ending at t-1 by token t.
        shifted_gram = tf.pad(gram[:, :-1], [[0, 0], [1, 0]])
        shifted_valid = tf.pad(valid[:, :-1], [[0, 0], [1, 0]])
        gram = shifted_gram * id_space + ids
        valid = shifted_valid & (ids > 0)
        keys.append(tf.where(valid, gram, tf.zeros_like(gram)))
    return tf.stack(keys, axis=-1)


def first_occurrences(keys: tf.Tensor) -> tf.Tensor:
    """True where a key is present and no earlier token of the text carries it (binarized counts).

    A stable sort of each text's keys puts the earliest occurrence first in its
    run of equal keys: O(n log n) per text, where comparing all pairs of
    positions would take [time, time] memory per text (IMDB: 320 x 320).
    """
    batch = tf.shape(keys)[0]
    flat = tf.reshape(keys, [batch, -1])  # position t * order + k: earlier tokens first
    order = tf.argsort(flat, axis=-1, stable=True)
    ordered = tf.gather(flat, order, batch_dims=1)
    starts_run = tf.concat([tf.ones([batch, 1], tf.bool), ordered[:, 1:] != ordered[:, :-1]], axis=1)
    first = tf.gather(starts_run, tf.argsort(order, axis=-1, stable=True), batch_dims=1)
    return tf.reshape(first, tf.shape(keys)) & (keys > 0)


class NgramCounts(NamedTuple):
    """The n-grams of a labelled split: `matrix[example, j]` is 1 where the
    example holds n-gram `keys[j]` (binarized: once however often it repeats)."""

    keys: np.ndarray  # sorted distinct keys, int64
    matrix: sparse.csr_matrix  # [examples, keys], float32 0/1
    labels: np.ndarray  # bool, positive


def count_ngrams(dataset: tf.data.Dataset, order: int, id_space: int) -> NgramCounts:
    """The n-grams of a (token ids, {logit: label}) dataset, one sort for all of them
    (the ratios and the regression then index the same matrix)."""
    present, labels = [], []
    for ids, batch_labels in dataset:
        keys = ngram_keys(ids, order, id_space)
        first = first_occurrences(keys).numpy()
        keys = keys.numpy()
        present.extend(row[mask] for row, mask in zip(keys, first))
        labels.append(np.asarray(batch_labels[model_lib.LOGIT]).reshape(-1) > 0.5)
    keys, columns = np.unique(np.concatenate([np.zeros(0, np.int64), *present]), return_inverse=True)
    indptr = np.cumsum([0] + [row.size for row in present])
    matrix = sparse.csr_matrix((np.ones(columns.size, np.float32), columns.reshape(-1), indptr),
                               shape=(len(present), keys.size))
    return NgramCounts(keys, matrix, np.concatenate(labels) if labels else np.zeros(0, bool))


def log_count_ratios(dataset: tf.data.Dataset, order: int, id_space: int,
                     alpha: float = SMOOTHING) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys, log-count ratio per key) over a (token ids, {logit: label}) dataset."""
    counts = count_ngrams(dataset, order, id_space)
    return counts.keys, ratios_of(counts, alpha=alpha)


def ratios_of(counts: NgramCounts, alpha: float = SMOOTHING) -> np.ndarray:
    """The log-count ratio of each of `counts.keys` (Wang & Manning's r, smoothed by alpha)."""
    labels = counts.labels
    examples = {1: int(labels.sum()), 0: int((~labels).sum())}
    if not examples[0] or not examples[1]:
        raise ValueError(f"Naive Bayes needs both labels in the training split, got {examples}")
    in_positive = counts.matrix.T @ labels.astype(np.float64)
    in_all = counts.matrix.T @ np.ones(labels.size)
    p = in_positive + alpha
    q = in_all - in_positive + alpha
    return np.log(p / p.sum()) - np.log(q / q.sum())


def logistic_weights(counts: NgramCounts, ratios: np.ndarray, inverse_l2: float = 1.0) -> np.ndarray:
    """Per key: the ratio times its weight in a logistic regression on the ratio-scaled,
    binarized n-grams of the training split (NBSVM, Wang & Manning 2012, with a logistic
    loss instead of the SVM's hinge; L2-regularized, scikit-learn's C = `inverse_l2`).

    Naive Bayes counts each n-gram on its own, so correlated cues (a bigram and
    its unigrams) all add up; the regression weighs them jointly. The score
    stays a sum over the text's n-grams: the same layer, other values. It is
    solved in the dual, as liblinear advises for far more features than
    examples (IMDB: 3.4M trigram keys, 22.5k reviews): the same optimum, 2 s
    instead of 13 s.
    """
    from sklearn.linear_model import LogisticRegression

    matrix = counts.matrix
    scaled = sparse.csr_matrix((ratios[matrix.indices], matrix.indices, matrix.indptr), shape=matrix.shape)
    regression = LogisticRegression(C=inverse_l2, solver="liblinear", dual=True, max_iter=1000)
    regression.fit(scaled, counts.labels)
    return regression.coef_[0] * ratios


class _WeightsInitializer(lookup_ops.TableInitializerBase):
    """Fills a hash table from two variables, read when the table is initialized.

    A SavedModel initializes its tables after restoring its variables (in
    Python and in TF Serving's loader), so the keys and values travel in the
    variables checkpoint; KeyValueTensorInitializer would instead write them
    into the graph as constants (tens of MB for IMDB's trigrams).
    """

    def __init__(self, keys: tf.Variable, values: tf.Variable):
        self._keys, self._values = keys, values
        super().__init__(keys.dtype, values.dtype)

    def initialize(self, table):
        return tf.raw_ops.LookupTableImportV2(table_handle=table.resource_handle, keys=self._keys.read_value(),
                                              values=self._values.read_value())


class NaiveBayesScore(tf.keras.layers.Layer):
    """Per token: the summed ratios of the n-grams that first occur there ([batch, time]).

    The values are fixed when the layer is built: a hash table (one probe per
    n-gram) is filled from the layer's weights then, and again when a
    SavedModel loads. Against a binary search over IMDB's 3.4M sorted trigram
    keys, the whole score runs 2.6x faster (bench/ngram_lookup.py). Assigning
    to the weights afterwards leaves the table as it was: build a new layer
    (fit_and_stack does, with the scaled ratios).
    """

    def __init__(self, keys: np.ndarray, ratios: np.ndarray, order: int, id_space: int, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.order, self.id_space = order, id_space
        # Weights, not constants: the exporter saves the model's variables, and a
        # graph constant of a few million entries would bloat the SavedModel.
        self.keys = self.add_weight(name="keys", shape=keys.shape, dtype=tf.int64, initializer="zeros",
                                    trainable=False)
        self.ratios = self.add_weight(name="ratios", shape=ratios.shape, dtype=tf.float32,
                                      initializer="zeros", trainable=False)
        self.keys.assign(keys.astype(np.int64))
        self.ratios.assign(ratios.astype(np.float32))
        self.table = tf.lookup.StaticHashTable(_WeightsInitializer(self.keys, self.ratios), default_value=0.0)

    def call(self, token_ids):
        keys = ngram_keys(token_ids, self.order, self.id_space)
        values = self.table.lookup(keys)  # key 0 (no n-gram) is never in the table: 0
        return tf.reduce_sum(values * tf.cast(first_occurrences(keys), tf.float32), axis=-1)


def stacked(model: tf.keras.Model, score: NaiveBayesScore) -> tf.keras.Model:
    """The model with the score added to its logit, and its running sum to the trajectory
    (any other output, the rating head's, as it is)."""
    token_ids = tf.keras.Input(shape=(None,), dtype=tf.int64, name=features.TOKEN_IDS)
    outputs = model(token_ids)
    per_token = score(token_ids)
    total = tf.keras.layers.Lambda(lambda t: tf.reduce_sum(t, axis=1), name="naive_bayes_total")(per_token)
    running = tf.keras.layers.Lambda(lambda t: tf.cumsum(t, axis=1), name="naive_bayes_running")(per_token)
    stacked_outputs = {
        model_lib.LOGIT: tf.keras.layers.Add(name=model_lib.LOGIT)([outputs[model_lib.LOGIT], total]),
        features.ATTENTION: tf.keras.layers.Identity(name=features.ATTENTION)(outputs[features.ATTENTION]),
        features.TRAJECTORY: tf.keras.layers.Add(name=features.TRAJECTORY)([outputs[features.TRAJECTORY], running]),
    }
    if features.PREDICTED_RATING in outputs:  # the rating head is passed through unchanged
        stacked_outputs[features.PREDICTED_RATING] = tf.keras.layers.Identity(name=features.PREDICTED_RATING)(
            outputs[features.PREDICTED_RATING])
    return tf.keras.Model(token_ids, stacked_outputs, name=f"{model.name}_naive_bayes")


def scores(logit_model: tf.keras.Model, score: NaiveBayesScore, dataset: tf.data.Dataset):
    """[network logit, Naive Bayes score] per example ([n, 2]) and the labels, over a dataset."""
    @tf.function(input_signature=[dataset.element_spec[0]])
    def columns_of(ids):  # traced once: called eagerly, the recurrent loop ran step by step in Python
        logit = tf.reshape(logit_model(ids, training=False)[model_lib.LOGIT], [-1])
        return tf.stack([logit, tf.reduce_sum(score(ids), axis=1)], axis=1)

    columns, labels = [], []
    for ids, label in dataset:
        columns.append(columns_of(ids).numpy())
        labels.append(np.asarray(label[model_lib.LOGIT]).reshape(-1))
    return np.concatenate(columns), np.concatenate(labels)


def fit_and_stack(model: tf.keras.Model, logit_model: tf.keras.Model, train_dataset: tf.data.Dataset,
                  eval_dataset: tf.data.Dataset, order: int, id_space: int, logistic: bool = False):
    """Counts the ratios on train (with `logistic`, weighs them by a regression on train:
    logistic_weights), fits the combination on eval; returns (stacked model, weights, features).

    `weights` are (network scale, Naive Bayes scale, offset), already folded in:
    the network's head carries its scale and the offset, the ratios the other scale.
    Raises ValueError where the combination is not increasing in both scores.
    """
    counts = count_ngrams(train_dataset, order, id_space)
    keys, ratios = counts.keys, ratios_of(counts)
    if logistic:
        ratios = logistic_weights(counts, ratios)
    del counts
    score = NaiveBayesScore(keys, ratios, order, id_space, name="naive_bayes_unscaled")
    columns, labels = scores(logit_model, score, eval_dataset)
    weights = calibration.fit_logistic(columns, labels)
    scale, nb_scale, offset = weights
    if nb_scale <= 0:
        raise ValueError(f"the Naive Bayes score gets weight {nb_scale:.4f} on validation: it does not help")
    calibration.apply(model, scale, offset)
    scaled = NaiveBayesScore(keys, ratios * nb_scale, order, id_space, name="naive_bayes")
    return stacked(model, scaled), weights, int(keys.size)
