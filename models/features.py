"""Feature names shared by the schema, Transform, Trainer, Evaluator and serving.

Kept in one module so a rename cannot leave one stage reading a key another
stage no longer writes.
"""

# Raw features, as ExampleGen writes them.
TEXT = "text"
LABEL = "label"
ID = "id"  # "<file>:<line>", traces an example to its source; not a model input.
NUM_CHARS = "num_chars"  # characters of the stripped text; lets the schema bound length.
RATING = "rating"  # the star rating, where the source has one (IMDB); not a model input.
# Inputs that arrive in spans are folders <input>/span-<N>/ (ExampleGen's {SPAN} pattern).
SPAN_FOLDER_PREFIX = "span-"

# Transformed features, as Transform writes them.
TOKEN_IDS = "token_ids"  # int64[max_len]: vocabulary ids, 0 = padding.
LENGTH = "length"  # int64 scalar: number of real (non-padding) tokens.
TRANSFORMED_LABEL = "label"
# float32 scalar: the star rating where the raw example has one, 0 = no rating.
# Only the training target of the rating head (ModelConfig.rating_head), never a model input.
TRANSFORMED_RATING = "rating"

# Vocabulary file written by tf.Transform (under transform_fn/assets).
VOCABULARY_NAME = "tokens"

# Id conventions: 0 is padding, vocabulary entries start at 1, and the single
# out-of-vocabulary bucket comes after the last vocabulary entry.
PADDING_ID = 0
NUM_OOV_BUCKETS = 1
# With a pretrained vocabulary (DatasetConfig.pretrained_vocabulary = N), a token
# the training vocabulary lacks but the pretrained vectors know gets id
# first_pretrained_id(vocab_size) + its rank among the N most frequent
# pretrained words, so it keeps its pretrained vector instead of becoming OOV.


def first_pretrained_id(vocab_size: int) -> int:
    """After padding, a vocabulary of at most vocab_size tokens and the OOV bucket."""
    return 1 + vocab_size + NUM_OOV_BUCKETS

# Model outputs, as named in the exported signatures.
PROBABILITY = "probability"
PREDICTED_LABEL = "label"
ATTENTION = "attention"  # per token: its weight in the pooled vector
TRAJECTORY = "trajectory"  # per token: positive-class probability over the first t tokens
TOKEN_LENGTH = "length"
PREDICTED_RATING = "rating"  # the rating head's star rating, in [RATING_MIN, RATING_MAX] (rating_head only)
RATING_MIN, RATING_MAX = 1.0, 10.0  # IMDB's star scale; 0 in TRANSFORMED_RATING means "no rating"
# The Evaluator's metrics of the rating head (TFMA metric names), read by the report and the model card.
RATING_MAE_METRIC = "rating_mae"
RATING_PEARSON_METRIC = "rating_pearson_r"

SERVING_SIGNATURE = "serving_default"  # raw UTF-8 strings in
TF_EXAMPLE_SIGNATURE = "serving_tf_example"  # serialized tf.Example in (TFMA)
# Raw strings in, only the one-per-text outputs out (probability, label, length, rating): no
# attention or trajectory, so those are not computed (1.3x the reviews/s on IMDB). The server
# answers an output_filter without per-token outputs with it; TF Serving users can name it.
PER_TEXT_SIGNATURE = "serving_per_text"

# TF Serving's warm-up requests inside a SavedModel (TFRecord of PredictionLog):
# written at export, replayed by TF Serving and by `python -m pipeline serve`.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

# What a Trainer started from, in its history.json ("started_from"): the ReaderPretrainer's output.
PRETRAINED_READER = "pretrained reader"
