"""TFX Trainer module: input pipeline, training loop and exported signatures.

Batches are built from texts of similar length and trimmed to their own
longest text, so an epoch costs what the real tokens cost, not
batch_size x max_len.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
from typing import Any, Mapping

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from models import calibration, embeddings, features, naive_bayes, optimization, warm_start
from models import model as model_lib
from pipeline import configs

HISTORY_FILE = "history.json"
# Under <pipeline root>/Trainer: per-epoch checkpoints of unfinished trainings.
CHECKPOINTS_DIR = "checkpoints"
# Validation metrics early stopping can watch, and whether lower or higher is better.
MONITORS = configs.EARLY_STOPPING_MONITORS

# The hyperparameters as the Trainer takes them: typed, or the custom_config dict they are sent as.
Hyperparameters = configs.TrainerConfig | Mapping[str, Any]


def trainer_config(hyperparameters: Hyperparameters | None) -> configs.TrainerConfig:
    """The typed hyperparameters: a TrainerConfig as it is, or one rebuilt from a custom_config
    dict (configs.trainer_hyperparameters; fields it leaves out take the config's defaults)."""
    if isinstance(hyperparameters, configs.TrainerConfig):
        return hyperparameters
    return configs.TrainerConfig.from_custom_config(hyperparameters or {})


def training_config(training: configs.TrainingConfig | Mapping[str, Any]) -> configs.TrainingConfig:
    """A TrainingConfig as it is, or one rebuilt from custom_config's "training" dict."""
    if isinstance(training, configs.TrainingConfig):
        return training
    return configs.TrainingConfig.from_dict(training)


def embedding_input_dim(tf_transform_output: tft.TFTransformOutput,
                        hyperparameters: Hyperparameters | None = None) -> int:
    """Padding id 0 + the vocabulary the analyzer kept + the OOV bucket (+ the pretrained vocabulary)."""
    config = trainer_config(hyperparameters)
    if config.pretrained_vocabulary:
        return features.first_pretrained_id(config.vocab_size) + config.pretrained_vocabulary
    vocab = tf_transform_output.vocabulary_size_by_name(features.VOCABULARY_NAME)
    return 1 + vocab + features.NUM_OOV_BUCKETS


def trim_to_longest(token_ids: tf.Tensor, lengths: tf.Tensor, multiple: int = 1) -> tf.Tensor:
    """Drops the padding columns that no text in the batch reaches (keeps at least one).

    The width is rounded up to a multiple of `multiple`: a few masked columns
    cost less than a new tensor shape, which TensorFlow's CPU kernels set up
    and cache per shape.
    """
    longest = tf.maximum(tf.reduce_max(lengths), 1)
    width = (longest + multiple - 1) // multiple * multiple
    return token_ids[:, :tf.minimum(width, tf.shape(token_ids, out_type=width.dtype)[1])]


def length_batched_dataset(
    dataset: tf.data.Dataset,
    batch_size: int,
    sort_window_batches: int,
    shuffle_batches: bool,
    seed: int | None,
    length_multiple: int = 1,
    rating: bool = False,
) -> tf.data.Dataset:
    """Groups parsed examples into batches of similar length, trimmed to their longest.

    Examples are read in windows of `sort_window_batches` batches, sorted by
    length inside the window and cut into batches. The order of batches is then
    shuffled (when training) so the model does not see lengths in order.
    With `rating` the targets also hold the star rating (0 = none) for the rating head.
    """
    window = batch_size * sort_window_batches

    def sort_window(batch):
        order = tf.argsort(batch[features.LENGTH], stable=True)
        return {key: tf.gather(value, order) for key, value in batch.items()}

    def split_window(batch):
        return tf.data.Dataset.from_tensor_slices(batch).batch(batch_size)

    def to_model_inputs(batch):
        ids = trim_to_longest(batch[features.TOKEN_IDS], batch[features.LENGTH], length_multiple)
        label = tf.cast(batch[features.TRANSFORMED_LABEL], tf.float32)
        targets = {model_lib.LOGIT: label}
        if rating:
            targets[features.PREDICTED_RATING] = tf.cast(batch[features.TRANSFORMED_RATING], tf.float32)
        return ids, targets

    dataset = dataset.batch(window).map(sort_window).flat_map(split_window)
    if shuffle_batches:
        dataset = dataset.shuffle(sort_window_batches * 4, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(to_model_inputs)
    # Autotuned prefetch stalled for close to a minute between epochs with
    # uneven batch shapes; a fixed small prefetch does not.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def check_complete(paths: list[str]) -> None:
    """Raises DataLossError for a GZIP file that is cut short or corrupt.

    TensorFlow's GZIP reader takes a file cut at some points as complete (the
    cut lands where a record ends: measured on a transformed split, 28 of 380
    cut points read back fewer records without an error), so a truncated cached
    artifact would train on part of its data without a word. Python's gzip
    checks the end-of-stream marker, the CRC and the length.
    """
    for path in paths:
        try:
            with tf.io.gfile.GFile(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
                while stream.read(1 << 22):
                    pass
        except (EOFError, OSError) as error:
            raise tf.errors.DataLossError(None, None, f"{path} is truncated or corrupt: {error}") from None


def input_fn(
    file_patterns: list[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    sort_window_batches: int,
    shuffle: bool,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    length_multiple: int = 1,
    rating: bool = False,
) -> tf.data.Dataset:
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_patterns}")
    check_complete(files)
    feature_spec = tf_transform_output.transformed_feature_spec()
    if rating and features.TRANSFORMED_RATING not in feature_spec:
        raise ValueError(NO_RATINGS + " (the transformed examples have no rating feature: the schema or the "
                         "source has none)")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(1024).map(lambda records: tf.io.parse_example(records, feature_spec)).unbatch()
    return length_batched_dataset(dataset, batch_size, sort_window_batches, shuffle, seed, length_multiple, rating)


NO_RATINGS = ("model.rating_head is on, but the training split holds no star rating: set model.rating_head=false "
              "(--set model.rating_head=false)")


def check_has_ratings(file_patterns: list[str], tf_transform_output: tft.TFTransformOutput) -> int:
    """How many transformed examples carry a rating; ValueError (NO_RATINGS) when none does.

    One pass that parses the rating alone: a rating head trained on no
    rating would serve the untrained head's guesses.
    """
    spec = tf_transform_output.transformed_feature_spec()
    if features.TRANSFORMED_RATING not in spec:
        raise ValueError(NO_RATINGS + " (the transformed examples have no rating feature)")
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    only_rating = {features.TRANSFORMED_RATING: spec[features.TRANSFORMED_RATING]}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096).map(
        lambda records: tf.io.parse_example(records, only_rating)[features.TRANSFORMED_RATING])
    rated = sum(int(tf.math.count_nonzero(ratings > 0)) for ratings in dataset)
    if not rated:
        raise ValueError(NO_RATINGS)
    return rated


class SentimentExportModule(tf.Module):
    """What the SavedModel serves: the Transform graph followed by the Keras model."""

    def __init__(self, model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput, length_multiple: int = 1):
        super().__init__()
        # The signatures need the model's variables, not the Keras object: saving
        # that makes TensorFlow trace every layer's call for Keras metadata no one
        # loads (60 s for one polarity model, 287 s for an ensemble of 3, against
        # 20 s for the ensemble without it).
        self._call_model = model.__call__
        self.model_variables = list(model.variables)
        # Resources the layers own (the Naive Bayes n-gram table), so the SavedModel rebuilds them.
        self.model_resources = [value for layer in model_lib.keras_layers(model) for value in vars(layer).values()
                                if isinstance(value, tf.saved_model.experimental.TrackableResource)]
        self.length_multiple = length_multiple
        self.tft_layer = tf_transform_output.transform_features_layer()
        # Clients send text only; the label and bookkeeping features are not needed to serve.
        self._serving_feature_spec = {
            features.TEXT: tf_transform_output.raw_feature_spec()[features.TEXT]
        }

    def _predict_transformed(self, transformed, per_token: bool = True) -> dict[str, tf.Tensor]:
        lengths = transformed[features.LENGTH]
        ids = trim_to_longest(transformed[features.TOKEN_IDS], lengths, self.length_multiple)
        outputs = self._call_model(ids, training=False)
        probability = tf.sigmoid(outputs[model_lib.LOGIT])
        served = {
            features.PROBABILITY: probability,
            features.PREDICTED_LABEL: tf.cast(probability >= 0.5, tf.int64),
            features.TOKEN_LENGTH: lengths,
        }
        if per_token:
            # Steps past a text's own length are padding: report them as 0. Without them,
            # the traced function drops the ops that compute them (the prefix poolings).
            real = tf.sequence_mask(lengths, tf.shape(ids)[1], dtype=probability.dtype)
            served[features.ATTENTION] = outputs[features.ATTENTION] * real
            served[features.TRAJECTORY] = tf.sigmoid(outputs[features.TRAJECTORY]) * real
        if features.PREDICTED_RATING in outputs:  # model.rating_head: the star rating, in [1, 10]
            served[features.PREDICTED_RATING] = outputs[features.PREDICTED_RATING]
        return served

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(self, text):
        """Raw UTF-8 texts in; probability, label, per-token attention and length out."""
        transformed = self.tft_layer({features.TEXT: tf.reshape(text, [-1, 1])})
        return self._predict_transformed(transformed)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text_per_text(self, text):
        """Raw UTF-8 texts in; only the one-per-text outputs (probability, label, length, rating)."""
        transformed = self.tft_layer({features.TEXT: tf.reshape(text, [-1, 1])})
        return self._predict_transformed(transformed, per_token=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(self, serialized):
        """Serialized tf.Examples in (what TFMA sends); probability and label (and rating) out."""
        raw = tf.io.parse_example(serialized, self._serving_feature_spec)
        outputs = self._predict_transformed(self.tft_layer(raw), per_token=False)
        keys = (features.PROBABILITY, features.PREDICTED_LABEL, features.PREDICTED_RATING)
        return {key: outputs[key] for key in keys if key in outputs}


def warmup_texts(max_len: int, length_multiple: int = 1) -> list[list[str]]:
    """One request per padded width the export can see (it trims a batch to its longest
    text, rounded up to length_multiple), an empty text, and one batch of mixed lengths."""
    step = max(1, length_multiple)
    widths = sorted({min(width, max_len) for width in range(step, max_len + step, step)})
    requests = [[""]] + [[" ".join(["a"] * width)] for width in widths]
    requests.append([" ".join(["a"] * max(1, max_len * k // 7)) for k in range(8)])
    return requests


def write_warmup_requests(export_dir: str, max_len: int, length_multiple: int = 1) -> int:
    """TF Serving's warm-up file: PredictionLog records of the raw-text signatures' requests
    (serving_default and serving_per_text, the same texts); returns the count."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(export_dir, features.WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    requests = warmup_texts(max_len, length_multiple)
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name in (features.SERVING_SIGNATURE, features.PER_TEXT_SIGNATURE):
            for texts in requests:
                request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature_name))
                request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
                count += 1
    return count


def export_model(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput, export_dir: str,
                 length_multiple: int = 1) -> None:
    module = SentimentExportModule(model, tf_transform_output, length_multiple)
    signatures = {
        features.SERVING_SIGNATURE: module.serve_text,
        features.PER_TEXT_SIGNATURE: module.serve_text_per_text,
        features.TF_EXAMPLE_SIGNATURE: module.serve_tf_examples,
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    max_len = tf_transform_output.transformed_feature_spec()[features.TOKEN_IDS].shape[0]
    write_warmup_requests(export_dir, int(max_len), length_multiple)


def pretrained_matrix(tf_transform_output: tft.TFTransformOutput, hyperparameters: Hyperparameters, seed: int):
    """The embedding matrix from pretrained vectors, or None for a random start."""
    config = trainer_config(hyperparameters)
    if not config.model.pretrained_embeddings:
        return None
    # The dataset configs name it relative to the data directory.
    path = embeddings.resolve(config.model.pretrained_embeddings)
    vocabulary = [t.decode("utf-8") for t in tf_transform_output.vocabulary_by_name(features.VOCABULARY_NAME)]
    extra = config.pretrained_vocabulary
    matrix, found = embeddings.embedding_matrix(
        vocabulary, path, config.model.embedding_dim, features.NUM_OOV_BUCKETS, seed,
        pretrained_words=list(embeddings.pretrained_words(path, extra)),
        first_pretrained_id=features.first_pretrained_id(config.vocab_size))
    logging.info("Pretrained vectors for %d of %d vocabulary tokens from %s (+%d pretrained-only words)",
                 found, len(vocabulary), path, extra)
    return matrix


def apply_thread_settings(training: configs.TrainingConfig | Mapping[str, Any]) -> None:
    """Sizes TensorFlow's thread pools as configured, where the runtime has not started yet.

    When it has (the local runner sets them through the environment instead),
    a mismatch is logged rather than failing the run: it changes speed, not results.
    """
    training = training_config(training)
    threading = tf.config.threading
    for pool, get, set_ in (("intra", threading.get_intra_op_parallelism_threads,
                             threading.set_intra_op_parallelism_threads),
                            ("inter", threading.get_inter_op_parallelism_threads,
                             threading.set_inter_op_parallelism_threads)):
        threads, variable = getattr(training, f"{pool}_op_threads"), configs.TF_THREAD_VARIABLES[pool]
        # The runtime reads the environment when it starts; get() shows only what set_() was given.
        if not threads or get() == threads or os.environ.get(variable) == str(threads):
            continue
        try:
            set_(threads)
        except RuntimeError:
            logging.warning("TensorFlow is already running with %s-op threads = %d (configured %d); set "
                            "%s before TensorFlow starts to apply it", pool, get(), threads, variable)


class ValidateOnAverage(tf.keras.callbacks.Callback):
    """Validates on the moving average of the weights that the optimizer keeps (weight_averaging).

    The average of the last few hundred steps generalises better than the
    last step's weights on small data. The optimizer updates it inside the
    compiled training step (models/optimization.py); this callback only puts
    it into the model's variables for the validation at the end of each epoch
    and takes the raw weights back after it, so training carries on from them
    and the per-epoch checkpoint (BackupAndRestore) holds the raw weights
    beside the optimizer's averages. Early stopping records the averages
    (EarlyStoppingOnAverage), and Model.fit leaves them in the model at the end
    (the optimizer's finalize_variable_values): what is exported.
    """

    def on_train_begin(self, logs=None):
        if not getattr(self.model.optimizer, "use_ema", False):
            raise ValueError("weight averaging needs an optimizer that keeps the average: compile with "
                             "models.model.compile_model(..., weight_averaging=DECAY)")

    def on_test_begin(self, logs=None):
        self._averaged = optimization.averaged_weights(self.model)
        self._averaged.__enter__()

    def on_test_end(self, logs=None):
        self._averaged.__exit__(None, None, None)


class EarlyStoppingOnAverage(tf.keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping, recording (and at the end restoring) the averaged weights
    when the optimizer keeps an average; the model's own weights otherwise."""

    def on_epoch_end(self, epoch, logs=None):
        with optimization.averaged_weights(self.model):
            super().on_epoch_end(epoch, logs)


def training_callbacks(training: configs.TrainingConfig | Mapping[str, Any]) -> list[tf.keras.callbacks.Callback]:
    """Early stopping (keeping the best epoch's weights) and the learning-rate schedule.

    Both watch the same validation metric. Loss can rise from overconfidence
    while accuracy and AUC still improve, so the metric is configurable.
    """
    training = training_config(training)  # TrainingConfig checks the metric and the schedule
    monitor = training.early_stopping_monitor
    mode = MONITORS[monitor]
    # The average itself is kept by the optimizer (build_models passes weight_averaging to it).
    callbacks = [ValidateOnAverage()] if training.weight_averaging else []
    callbacks += [EarlyStoppingOnAverage(monitor=monitor, mode=mode, patience=training.early_stopping_patience,
                                         restore_best_weights=True, verbose=1)]
    if training.lr_schedule == "plateau":
        callbacks.append(tf.keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=0,
                                                              min_lr=1e-5, verbose=1))
    return callbacks


def embedding_rows(tf_transform_output: tft.TFTransformOutput, hyperparameters: Hyperparameters) -> dict[str, int]:
    """{token: embedding row} for this Transform's vocabulary (and the pretrained-only words)."""
    config = trainer_config(hyperparameters)
    vocabulary = [t.decode("utf-8") for t in tf_transform_output.vocabulary_by_name(features.VOCABULARY_NAME)]
    extra, path = config.pretrained_vocabulary, config.model.pretrained_embeddings
    words = list(embeddings.pretrained_words(embeddings.resolve(path), extra)) if extra and path else []
    return warm_start.token_rows(vocabulary, words, features.first_pretrained_id(config.vocab_size))


def build_models(tf_transform_output: tft.TFTransformOutput, hyperparameters: Hyperparameters,
                 seed: int, base_model: str | None = None) -> tuple[tf.keras.Model, tf.keras.Model, dict | None]:
    """The configured model (what is exported), its compiled training view, and
    what a warm start carried over from `base_model` (None for a cold start).

    Training computes the logit only; the exported model adds the per-token outputs.
    """
    config = trainer_config(hyperparameters)
    training = config.training
    model = model_lib.build_model(
        vocab_size=embedding_input_dim(tf_transform_output, config),
        embedding_matrix=pretrained_matrix(tf_transform_output, config, seed),
        **{k: v for k, v in dataclasses.asdict(config.model).items() if k != "pretrained_embeddings"},
    )
    carried = None
    if (training.warm_start or config.pretrained_reader) and base_model:
        state = warm_start.state_dir_of(base_model)
        if tf.io.gfile.exists(os.path.join(state, warm_start.WEIGHTS_FILE)):
            carried = warm_start.restore(model, state, embedding_rows(tf_transform_output, config))
            logging.info("Started from %s: %s", state, carried)
        elif config.pretrained_reader:
            raise FileNotFoundError(f"the pretrained reader at {state} holds no {warm_start.WEIGHTS_FILE}")
        else:
            logging.warning("Warm start asked for, but %s holds no saved state (a model from before warm "
                            "starts were saved); training from scratch", state)
    elif training.warm_start:
        logging.info("Warm start asked for, but there is no blessed model yet; training from scratch")
    train_model = model_lib.training_view(model, training.adversarial_epsilon)
    model_lib.compile_model(train_model, training.learning_rate, training.clipnorm, training.weight_averaging)
    return model, train_model, carried


def train(
    train_files: list[str],
    eval_files: list[str],
    tf_transform_output: tft.TFTransformOutput,
    hyperparameters: Hyperparameters,
    log_dir: str | None = None,
    backup_dir: str | None = None,
    base_model: str | None = None,
    warm_start_dir: str | None = None,
) -> tuple[tf.keras.Model, dict[str, list[float]]]:
    """Trains the configured model; returns it with its per-epoch history.

    With `backup_dir`, the weights, optimizer and epoch are saved there after
    every epoch (Keras' BackupAndRestore); a training killed midway resumes
    from the last finished epoch when run again with the same directory, and
    the directory is emptied once training ends. history["epochs_run"] lists
    the epochs this call ran (it starts past 0 after a resume).

    With training.warm_start and `base_model` (a previous export), the network
    starts from that model's saved state (models/warm_start.py); history["warm_start"]
    says what was carried over. `warm_start_dir` receives this network's state
    for the next warm start.
    """
    # Rebuilding the typed config checks it (TrainingConfig.__post_init__: e.g. Naive Bayes
    # stacking and Platt scaling both fit the logit), before anything trains.
    config = trainer_config(hyperparameters)
    training = config.training
    apply_thread_settings(training)
    seed = training.seed
    tf.keras.utils.set_random_seed(seed)

    batching = dict(
        batch_size=training.batch_size,
        sort_window_batches=training.length_sort_window_batches,
        length_multiple=training.length_multiple,
        rating=config.model.rating_head,
    )
    if config.model.rating_head:
        logging.info("Rating head: %d training examples carry a rating",
                     check_has_ratings(train_files, tf_transform_output))
    train_dataset = input_fn(
        train_files, tf_transform_output, shuffle=True, shuffle_buffer=training.shuffle_buffer,
        seed=seed, **batching,
    )
    eval_dataset = input_fn(eval_files, tf_transform_output, shuffle=False, **batching)
    if training.shuffle_labels:
        # A deliberately broken candidate (tests of the gate): labels shuffled within each batch.
        train_dataset = train_dataset.map(
            lambda ids, labels: (ids, {k: tf.random.shuffle(v, seed=seed) for k, v in labels.items()}))

    model, train_model, carried = build_models(tf_transform_output, config, seed, base_model)
    train_model.summary(print_fn=logging.info)

    callbacks = training_callbacks(training)
    if backup_dir:
        # First, so the epoch is saved before anything else reacts to its end.
        callbacks.insert(0, tf.keras.callbacks.BackupAndRestore(backup_dir))
    if log_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    model_lib.build_metric_variables(train_model, next(iter(eval_dataset)))
    history = train_model.fit(
        train_dataset,
        validation_data=eval_dataset,
        epochs=training.epochs,
        callbacks=callbacks,
        verbose=2,
    )
    epochs_run = [int(epoch) for epoch in history.epoch]
    history = {key: [float(v) for v in values] for key, values in history.history.items()}
    history["epochs_run"] = epochs_run
    history["warm_start"] = carried
    if carried and config.pretrained_reader:
        history["started_from"] = features.PRETRAINED_READER
    if warm_start_dir and training.warm_start:
        # The network before any stacking: what the next warm start rebuilds and fills.
        warm_start.save(model, embedding_rows(tf_transform_output, config), warm_start_dir)
    if epochs_run and epochs_run[0] > 0:
        logging.info("Resumed from the checkpoint of epoch %d in %s", epochs_run[0], backup_dir)
    if training.calibrate_logit:
        history["logit_calibration"] = list(calibrate_logit(model, train_model, eval_dataset) or ())
    if training.naive_bayes_ngrams:
        model, history["naive_bayes_stacking"] = stack_naive_bayes(
            model, train_model, train_dataset, eval_dataset, training.naive_bayes_ngrams,
            embedding_input_dim(tf_transform_output, config), training.naive_bayes_logistic)
    return model, history


def calibrate_logit(model: tf.keras.Model, train_model: tf.keras.Model,
                    eval_dataset: tf.data.Dataset) -> tuple[float, float] | None:
    """Fits Platt scaling on the validation split and folds it into `model` (see models/calibration.py).

    Where no increasing map fits (a model no better than chance on validation),
    the model is left as trained: the Evaluator's gate, not a Trainer crash,
    is what should turn it away.
    """
    try:
        scale, offset = calibration.fit(*calibration.logits_and_labels(train_model, eval_dataset, model_lib.LOGIT))
    except ValueError as error:
        logging.warning("Logit left uncalibrated: %s", error)
        return None
    calibration.apply(model, scale, offset)
    logging.info("Logit calibrated on the validation split: logit -> %.4f * logit %+.4f", scale, offset)
    return scale, offset


def stack_naive_bayes(model: tf.keras.Model, train_model: tf.keras.Model, train_dataset: tf.data.Dataset,
                      eval_dataset: tf.data.Dataset, order: int, id_space: int,
                      logistic: bool = False) -> tuple[tf.keras.Model, list[float]]:
    """Adds Naive Bayes n-gram scores to the logit (see models/naive_bayes.py).

    Returns the stacked model and its weights [network, Naive Bayes, offset];
    where the validation split finds no use for the scores, the model as
    trained and [] (the Evaluator's gate judges it, as without them).
    """
    try:
        stacked, weights, count = naive_bayes.fit_and_stack(model, train_model, train_dataset, eval_dataset,
                                                           order, id_space, logistic)
    except ValueError as error:
        logging.warning("Naive Bayes n-grams left out: %s", error)
        return model, []
    logging.info("Stacked %d n-grams (order <= %d%s): logit -> %.4f * logit %+.4f * naive_bayes %+.4f",
                 count, order, ", weighed by a logistic regression" if logistic else "", *weights)
    return stacked, list(weights)


def backup_dir_for(fn_args) -> str:
    """Where a Trainer execution keeps its per-epoch checkpoints: the same for every
    execution with the same inputs and hyperparameters, so a re-run after a kill
    (a new execution, with new output directories) finds them."""
    key = json.dumps({"train": sorted(fn_args.train_files), "eval": sorted(fn_args.eval_files),
                      "transform": fn_args.transform_output, "config": fn_args.custom_config,
                      "base_model": getattr(fn_args, "base_model", None)}, sort_keys=True)
    # model_run_dir is <pipeline root>/Trainer/model_run/<execution id>.
    component_dir = os.path.dirname(os.path.dirname(fn_args.model_run_dir.rstrip("/")))
    return os.path.join(component_dir, CHECKPOINTS_DIR, hashlib.sha256(key.encode()).hexdigest()[:16])


def run_fn(fn_args) -> None:
    """Entry point for the TFX Trainer component."""
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    config = configs.TrainerConfig.from_custom_config(fn_args.custom_config)
    model, history = train(
        fn_args.train_files,
        fn_args.eval_files,
        tf_transform_output,
        config,
        log_dir=fn_args.model_run_dir,
        backup_dir=backup_dir_for(fn_args),
        base_model=fn_args.base_model,
        warm_start_dir=warm_start.state_dir_of(fn_args.serving_model_dir),
    )
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), "w") as f:
        json.dump(history, f, indent=2)
    export_model(model, tf_transform_output, fn_args.serving_model_dir, config.training.length_multiple)
