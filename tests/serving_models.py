"""SavedModels for the serving tests: a real (untrained) export and broken ones."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402


def export_tiny_model(tft_output, export_dir: str, seed: int = 0, rating_head: bool = False) -> str:
    """The pipeline's own export (Transform graph + Keras model), untrained."""
    from models import model as model_lib
    from models import trainer

    tf.keras.utils.set_random_seed(seed)
    clf = model_lib.build_model(trainer.embedding_input_dim(tft_output), embedding_dim=8, rnn_units=8,
                                attention_units=8, dense_units=8, rating_head=rating_head)
    trainer.export_model(clf, tft_output, export_dir)
    return export_dir


class _CrashesOnEmpty(tf.Module):
    """Plausible outputs for any text, except that an empty string raises."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        lengths = tf.strings.length(text)
        tf.debugging.assert_positive(lengths, message="empty text")
        batch = tf.shape(text)[0]
        steps = 4
        length = tf.minimum(tf.cast(lengths, tf.int64), steps)
        real = tf.sequence_mask(length, steps, dtype=tf.float32)
        attention = real / tf.maximum(tf.reduce_sum(real, axis=1, keepdims=True), 1.0)
        probability = tf.fill([batch], 0.75)
        return {"probability": probability, "label": tf.cast(probability >= 0.5, tf.int64),
                "attention": attention, "trajectory": real * 0.75, "length": length}


class _OutOfRange(_CrashesOnEmpty):
    """Answers everything, but with a 'probability' of 1.5 and a star 'rating' of 11."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        batch = tf.shape(text)[0]
        zeros = tf.zeros([batch, 1])
        return {"probability": tf.fill([batch], 1.5), "label": tf.ones([batch], tf.int64),
                "attention": zeros, "trajectory": zeros, "length": tf.zeros([batch], tf.int64),
                "rating": tf.fill([batch], 11.0)}


class _PerTextDisagrees(tf.Module):
    """A plausible serving_default, and a per-text signature whose probability and label differ."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        length = tf.minimum(tf.cast(tf.strings.length(text), tf.int64), 4)
        real = tf.sequence_mask(length, 4, dtype=tf.float32)
        attention = real / tf.maximum(tf.reduce_sum(real, axis=1, keepdims=True), 1.0)
        probability = tf.fill([tf.shape(text)[0]], 0.75)
        return {"probability": probability, "label": tf.cast(probability >= 0.5, tf.int64),
                "attention": attention, "trajectory": real * 0.75, "length": length}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def per_text(self, text):
        probability = tf.fill([tf.shape(text)[0]], 0.25)
        return {"probability": probability, "label": tf.cast(probability >= 0.5, tf.int64),
                "length": tf.minimum(tf.cast(tf.strings.length(text), tf.int64), 4)}


def export_module(module: tf.Module, export_dir: str) -> str:
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    return export_dir


def export_crashing_on_empty(export_dir: str) -> str:
    return export_module(_CrashesOnEmpty(), export_dir)


def export_out_of_range(export_dir: str) -> str:
    return export_module(_OutOfRange(), export_dir)


def export_per_text_disagreeing(export_dir: str) -> str:
    module = _PerTextDisagrees()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve,
                                                        "serving_per_text": module.per_text})
    return export_dir
