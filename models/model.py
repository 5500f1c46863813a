"""The many-to-one classifier: tokens in, one logit out, attention weights exposed.

Padding is masked end to end: the embedding emits a mask for id 0, the
recurrent layers carry their state unchanged through masked steps, and the
attention softmax gives masked steps exactly zero weight. So the prediction for
a text does not depend on how much padding its batch adds.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from models import features  # noqa: E402

LOGIT = "logit"


class AttentionPooling(tf.keras.layers.Layer):
    """Additive (Bahdanau-style) attention that pools a sequence to one vector.

    score_t = v . tanh(W h_t + b); weights = softmax over unmasked steps.
    Returns (pooled [batch, features], weights [batch, time]).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True

    def build(self, input_shape):
        self.projection = tf.keras.layers.Dense(self.units, activation="tanh", name="projection")
        self.score = tf.keras.layers.Dense(1, use_bias=False, name="score")
        super().build(input_shape)

    def call(self, sequence, mask=None):
        scores = tf.squeeze(self.score(self.projection(sequence)), axis=-1)
        if mask is not None:
            # A large negative (not -inf) keeps all-masked rows finite.
            scores = tf.where(mask, scores, tf.fill(tf.shape(scores), -1e9))
        weights = tf.nn.softmax(scores, axis=-1)
        if mask is not None:
            weights = weights * tf.cast(mask, weights.dtype)
        pooled = tf.reduce_sum(sequence * tf.expand_dims(weights, -1), axis=1)
        return pooled, weights

    def compute_mask(self, inputs, mask=None):
        # The pooled output has no time axis, so nothing to mask downstream.
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def build_model(
    vocab_size: int,
    embedding_dim: int = 64,
    rnn_units: int = 64,
    rnn_layers: int = 1,
    bidirectional: bool = True,
    attention_units: int = 64,
    dense_units: int = 64,
    embedding_dropout: float = 0.2,
    rnn_dropout: float = 0.0,
    dense_dropout: float = 0.3,
) -> tf.keras.Model:
    """Returns a Keras model mapping token ids [batch, time] to logit and attention.

    `vocab_size` counts every id the embedding must hold, padding and OOV
    included. The time axis is unknown so batches can be trimmed to their own
    longest text.
    """
    token_ids = tf.keras.Input(shape=(None,), dtype=tf.int64, name=features.TOKEN_IDS)
    x = tf.keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(token_ids)
    # Drops whole embedding channels rather than single values, which
    # regularises a recurrent reader better.
    x = tf.keras.layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
    for layer_index in range(rnn_layers):
        recurrent = tf.keras.layers.LSTM(
            rnn_units, return_sequences=True, dropout=rnn_dropout, name=f"lstm_{layer_index}"
        )
        if bidirectional:
            recurrent = tf.keras.layers.Bidirectional(recurrent, name=f"bilstm_{layer_index}")
        x = recurrent(x)
    pooled, attention = AttentionPooling(attention_units, name="attention_pooling")(x)
    hidden = tf.keras.layers.Dense(dense_units, activation="relu", name="dense")(pooled)
    hidden = tf.keras.layers.Dropout(dense_dropout, name="dense_dropout")(hidden)
    logit = tf.keras.layers.Dense(1, name="logit_dense")(hidden)
    logit = tf.keras.layers.Reshape((), name=LOGIT)(logit)
    attention = tf.keras.layers.Identity(name=features.ATTENTION)(attention)
    return tf.keras.Model(
        inputs=token_ids,
        outputs={LOGIT: logit, features.ATTENTION: attention},
        name="bilstm_attention",
    )


def compile_model(model: tf.keras.Model, learning_rate: float, clipnorm: float) -> None:
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=clipnorm),
        loss={LOGIT: tf.keras.losses.BinaryCrossentropy(from_logits=True)},
        metrics={
            LOGIT: [
                tf.keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                tf.keras.metrics.AUC(name="auc", from_logits=True),
            ]
        },
    )
