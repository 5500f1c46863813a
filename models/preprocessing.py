"""tf.Transform module: raw review text -> padded token ids and true length.

Tokenization lives in the Transform graph so training and serving cannot
disagree on it: the exported model carries this graph and takes raw strings.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from models import embeddings, features

# IMDB reviews carry HTML line breaks ("<br />", "<br/>", "<br>").
_HTML_BREAK = r"<br\s*/?>"
# Anything that is not a letter, digit, mark, space or apostrophe becomes its own
# token (RE2's \w is ASCII-only, so Unicode classes keep "naïve" whole).
_PUNCTUATION = r"([^\pL\pN\pM\s'])"

DEFAULT_VOCAB_SIZE = 20_000
DEFAULT_MAX_LEN = 256


TOKEN_LEVELS = ("word", "char")


# C0 control characters and DEL. tf.strings.lower(encoding="utf-8") stops at a
# NUL ("GOOD\x00 BAD" -> "good"), so they become spaces before anything else and
# training and serving both see the whole text. (C1 characters, U+0080-U+009F,
# are mis-decoded Windows-1252 punctuation in IMDB and stay punctuation tokens.)
_CONTROL = r"[\x00-\x1f\x7f]"


def normalize(texts: tf.Tensor) -> tf.Tensor:
    """Control characters as spaces, lowercase, HTML breaks dropped, runs of whitespace as one space."""
    texts = tf.strings.regex_replace(texts, _CONTROL, " ")
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


def head_and_tail(max_len: int) -> tuple[int, int]:
    """How many tokens a text longer than max_len keeps from its start and from its end.

    Reviews tend to state their verdict at the end, so a long text keeps its
    opening quarter and its closing three quarters rather than its first max_len tokens.
    """
    head = max_len // 4
    return head, max_len - head


def truncate(tokens: tf.RaggedTensor, max_len: int) -> tf.RaggedTensor:
    """Texts longer than max_len keep their first `head` and last `tail` tokens (see head_and_tail)."""
    head, tail = head_and_tail(max_len)
    lengths = tokens.row_lengths()
    positions = tf.ragged.range(lengths)
    keep = (positions < head) | (positions >= tf.expand_dims(lengths - tail, 1))
    return tf.ragged.boolean_mask(tokens, keep)


def truncate_list(tokens: list, length: int) -> list:
    """The same cut on a Python list, given the length the model reported (for display)."""
    if len(tokens) <= length:
        return tokens
    head, tail = head_and_tail(length)
    return tokens[:head] + tokens[len(tokens) - tail:]


def pad_and_truncate(ids: tf.RaggedTensor, max_len: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Dense [batch, max_len] ids with 0 as padding, and the true (capped) lengths."""
    ids = ids[:, :max_len]
    lengths = tf.cast(ids.row_lengths(), tf.int64)
    dense = ids.to_tensor(default_value=features.PADDING_ID, shape=[None, max_len])
    return dense, lengths


def pretrained_ids(tokens: tf.RaggedTensor, words: list[str], first_id: int) -> tf.RaggedTensor:
    """first_id + rank for tokens among `words`, -1 for the others.

    The table is built from constants, so it travels inside the Transform graph
    (and the served model) with no file to ship beside it.
    """
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(words, dtype=tf.string),
            tf.constant(np.arange(first_id, first_id + len(words), dtype=np.int64))),
        default_value=-1)
    return tf.ragged.map_flat_values(table.lookup, tokens)


def build_preprocessing_fn(vocab_size: int, max_len: int, token_level: str = "word",
                           pretrained_words: list[str] = ()):
    """Returns a preprocessing_fn with the vocabulary size, max length and token level bound.

    `pretrained_words` (most frequent first) extend the vocabulary learnt from
    the training data: a token the training data never showed (often in a
    small dataset) keeps its pretrained vector instead of collapsing into OOV.
    """
    pretrained_words = list(pretrained_words)

    def preprocessing_fn(inputs):
        texts = _dense_strings(inputs[features.TEXT])
        tokens = tokenize(texts, token_level)
        # The vocabulary counts every token; the model reads the kept ones.
        vocabulary = tft.vocabulary(tokens, top_k=vocab_size, vocab_filename=features.VOCABULARY_NAME)
        # tft ids are 0..V-1 for the vocabulary and V for out-of-vocabulary;
        # shifting by one frees 0 for padding.
        kept = truncate(tokens, max_len)
        vocab_ids = tft.apply_vocabulary(kept, vocabulary, num_oov_buckets=features.NUM_OOV_BUCKETS) + 1
        if pretrained_words:
            known = tft.apply_vocabulary(kept, vocabulary, default_value=-1).flat_values >= 0
            extra = pretrained_ids(kept, pretrained_words, features.first_pretrained_id(vocab_size)).flat_values
            vocab_ids = vocab_ids.with_flat_values(
                tf.where(known | (extra < 0), vocab_ids.flat_values, extra))
        token_ids, lengths = pad_and_truncate(vocab_ids, max_len)
        outputs = {features.TOKEN_IDS: token_ids, features.LENGTH: lengths}
        if features.LABEL in inputs:
            outputs[features.TRANSFORMED_LABEL] = tf.reshape(
                tf.cast(_dense_ints(inputs[features.LABEL]), tf.int64), [-1]
            )
        if features.RATING in inputs:
            # Like the label: present in training data, absent when serving text only.
            outputs[features.TRANSFORMED_RATING] = _optional_rating(inputs[features.RATING])
        return outputs

    return preprocessing_fn


def preprocessing_fn(inputs, custom_config=None):
    """Entry point for the TFX Transform component."""
    custom_config = custom_config or {}
    fn = build_preprocessing_fn(
        vocab_size=int(custom_config.get("vocab_size", DEFAULT_VOCAB_SIZE)),
        max_len=int(custom_config.get("max_len", DEFAULT_MAX_LEN)),
        token_level=custom_config.get("token_level", "word"),
        pretrained_words=_pretrained_vocabulary(custom_config),
    )
    return fn(inputs)


def _pretrained_vocabulary(custom_config) -> tuple[str, ...]:
    count = int(custom_config.get("pretrained_vocabulary") or 0)
    if not count:
        return ()
    return embeddings.pretrained_words(embeddings.resolve(custom_config["pretrained_embeddings"]), count)


def _dense_strings(value) -> tf.Tensor:
    """The schema makes `text` a required single value; accept [batch] or [batch, 1]."""
    if isinstance(value, tf.sparse.SparseTensor):
        value = tf.sparse.to_dense(value, default_value="")
    return tf.reshape(value, [-1])


def _dense_ints(value) -> tf.Tensor:
    if isinstance(value, tf.sparse.SparseTensor):
        value = tf.sparse.to_dense(value, default_value=0)
    return tf.reshape(value, [-1])


def _optional_rating(value) -> tf.Tensor:
    """The optional star rating as float32 [batch], 0 where an example has none.

    The schema makes it an optional single value (a sparse or ragged tensor);
    a batch where no example has one still gives one column of zeros.
    """
    if isinstance(value, tf.sparse.SparseTensor):
        value = tf.sparse.to_dense(value, default_value=0)
    elif isinstance(value, tf.RaggedTensor):
        value = value.to_tensor(default_value=0)
    value = tf.reshape(value, [tf.shape(value)[0], -1])
    first = tf.pad(value, [[0, 0], [0, 1]])[:, 0]  # the single value, or the padded 0
    return tf.cast(first, tf.float32)
