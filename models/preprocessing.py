"""tf.Transform module: raw review text -> padded token ids and true length.

Tokenization lives in the Transform graph so training and serving cannot
disagree on it: the exported model carries this graph and takes raw strings.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from models import features  # noqa: E402

# IMDB reviews carry HTML line breaks ("<br />", "<br/>", "<br>").
_HTML_BREAK = r"<br\s*/?>"
# Anything that is not a letter, digit, mark, space or apostrophe becomes its own
# token (RE2's \w is ASCII-only, so Unicode classes keep "naïve" whole).
_PUNCTUATION = r"([^\pL\pN\pM\s'])"

DEFAULT_VOCAB_SIZE = 20_000
DEFAULT_MAX_LEN = 256


TOKEN_LEVELS = ("word", "char")


def normalize(texts: tf.Tensor) -> tf.Tensor:
    """Lowercase, HTML breaks dropped, runs of whitespace as one space."""
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, _HTML_BREAK, " ")
    return tf.strings.strip(tf.strings.regex_replace(texts, r"\s+", " "))


def tokenize(texts: tf.Tensor, token_level: str = "word") -> tf.RaggedTensor:
    """Words (punctuation split off, whitespace split) or characters (spaces included)."""
    texts = normalize(texts)
    if token_level == "char":
        return tf.strings.unicode_split(texts, "UTF-8")
    if token_level != "word":
        raise ValueError(f"token_level {token_level!r} is not one of {TOKEN_LEVELS}")
    texts = tf.strings.regex_replace(texts, _PUNCTUATION, r" \1 ")
    return tf.strings.split(texts)


def pad_and_truncate(ids: tf.RaggedTensor, max_len: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Dense [batch, max_len] ids with 0 as padding, and the true (capped) lengths."""
    ids = ids[:, :max_len]
    lengths = tf.cast(ids.row_lengths(), tf.int64)
    dense = ids.to_tensor(default_value=features.PADDING_ID, shape=[None, max_len])
    return dense, lengths


def build_preprocessing_fn(vocab_size: int, max_len: int, token_level: str = "word"):
    """Returns a preprocessing_fn with the vocabulary size, max length and token level bound."""

    def preprocessing_fn(inputs):
        texts = _dense_strings(inputs[features.TEXT])
        tokens = tokenize(texts, token_level)
        # tft ids are 0..V-1 for the vocabulary and V for out-of-vocabulary;
        # shifting by one frees 0 for padding.
        vocab_ids = tft.compute_and_apply_vocabulary(
            tokens,
            top_k=vocab_size,
            num_oov_buckets=features.NUM_OOV_BUCKETS,
            vocab_filename=features.VOCABULARY_NAME,
        )
        token_ids, lengths = pad_and_truncate(vocab_ids + 1, max_len)
        outputs = {features.TOKEN_IDS: token_ids, features.LENGTH: lengths}
        if features.LABEL in inputs:
            outputs[features.TRANSFORMED_LABEL] = tf.reshape(
                tf.cast(_dense_ints(inputs[features.LABEL]), tf.int64), [-1]
            )
        return outputs

    return preprocessing_fn


def preprocessing_fn(inputs, custom_config=None):
    """Entry point for the TFX Transform component."""
    custom_config = custom_config or {}
    fn = build_preprocessing_fn(
        vocab_size=int(custom_config.get("vocab_size", DEFAULT_VOCAB_SIZE)),
        max_len=int(custom_config.get("max_len", DEFAULT_MAX_LEN)),
        token_level=custom_config.get("token_level", "word"),
    )
    return fn(inputs)


def _dense_strings(value) -> tf.Tensor:
    """The schema makes `text` a required single value; accept [batch] or [batch, 1]."""
    if isinstance(value, tf.sparse.SparseTensor):
        value = tf.sparse.to_dense(value, default_value="")
    return tf.reshape(value, [-1])


def _dense_ints(value) -> tf.Tensor:
    if isinstance(value, tf.sparse.SparseTensor):
        value = tf.sparse.to_dense(value, default_value=0)
    return tf.reshape(value, [-1])
