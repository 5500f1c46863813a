"""Trainer benchmark: accuracy, AUC and speed of the configured model, against the
TensorFlow text-classification tutorial's BiLSTM measured in the same process.

Reads the artifacts a pipeline run left (ExampleGen examples, Transform graph
and transformed examples), so it measures exactly what the Trainer sees:

    make pipeline DATASET=imdb            # once, for the artifacts
    .venv/bin/python bench/train_benchmark.py --dataset imdb --tutorial-steps 120
    .venv/bin/python bench/train_benchmark.py --dataset polarity --seeds 5 [--set model.pretrained_embeddings=...]

IMDB: trains on the train split, stops early on the eval split, reports the
official test set. Polarity: the mean over N seeds of a random 90/10 split of
all examples (10% of the 90% held out for early stopping). Prints the figures
and writes them to bench/results/train_<dataset>.json (or --output).

Where the transformed examples carry the star rating (IMDB, Transform since the
rating head), the run also reports, on the rated test examples, two baselines:
the MAE of predicting the training split's mean rating, and of predicting the
mean rating of the example's true class; and with model.rating_head the head's
MAE and Pearson's r.

Where the dataset's config pretrains (pretraining.enabled), every run starts,
as the Trainer does, from the pipeline run's ReaderPretrainer artifact (or
--pretrained-reader); the results record which, and how many of this dataset's
texts its corpus holds (none may, since polarity's splits here are random).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from models import calibration, features, naive_bayes, pretraining, rating, trainer  # noqa: E402
from models import model as model_lib  # noqa: E402
from pipeline import configs, data_sources  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class StepTimer(tf.keras.callbacks.Callback):
    """Wall time per epoch, and training throughput after the first `warmup` steps of each epoch.

    Throughput counts training steps only: the clock stops at the last training
    batch, so validation at the end of an epoch is not charged to it.
    """

    def __init__(self, examples_per_epoch: int, batch_size: int, warmup: int = 5):
        super().__init__()
        self.examples_per_epoch, self.batch_size, self.warmup = examples_per_epoch, batch_size, warmup
        self.epoch_seconds: list[float] = []
        self.steady_examples = 0
        self.steady_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._steady_start = None
        self._steady_batches = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch + 1 == self.warmup:
            self._steady_start = now
        elif self._steady_start is not None:
            self._steady_batches += 1
            self._last_batch_end = now

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        if self._steady_start is not None and self._steady_batches:
            self.steady_seconds += self._last_batch_end - self._steady_start
            self.steady_examples += self._steady_batches * self.batch_size


def latest(pattern: str) -> str:
    matches = sorted(glob.glob(pattern), key=lambda p: int(p.rstrip("/").split("/")[-1]))
    if not matches:
        raise SystemExit(f"no artifacts match {pattern}: run the pipeline for this dataset first")
    return matches[-1]


def parse_all(files: list[str], tf_transform_output) -> dict[str, np.ndarray]:
    spec = tf_transform_output.transformed_feature_spec()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096).map(
        lambda r: tf.io.parse_example(r, spec))
    parts = list(dataset.as_numpy_iterator())
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def transformed_splits(root: Path, tf_transform_output, names=("train", "eval", "test")) -> dict[str, dict]:
    """Each split as the Trainer's features, from the newest pipeline run under `root`.

    Transform's own output where it wrote the split (train and eval); ExampleGen's
    raw split through the same transform graph where it did not (the pipeline does
    not materialize the test split: the Evaluator scores raw examples).
    """
    transformed = Path(latest(str(root / "Transform" / "transformed_examples" / "*")))
    examples = None
    splits = {}
    for name in names:
        files = sorted(glob.glob(str(transformed / f"Split-{name}" / "*")))
        if files:
            splits[name] = parse_all(files, tf_transform_output)
            continue
        examples = examples or Path(latest(str(root / "ExampleGen" / "examples" / "*")))
        splits[name] = transform_raw(sorted(glob.glob(str(examples / f"Split-{name}" / "*.gz"))), tf_transform_output)
    return splits


def transform_raw(files: list[str], tf_transform_output) -> dict[str, np.ndarray]:
    """Raw tf.Examples (GZIP TFRecords) through the transform graph, as dense arrays."""
    if not files:
        raise SystemExit("no examples to transform: run the pipeline for this dataset first")
    spec = tf_transform_output.raw_feature_spec()
    layer = tf_transform_output.transform_features_layer()
    parts = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        outputs = layer(tf.io.parse_example(batch, spec))
        parts.append({key: (tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value).numpy()
                      for key, value in outputs.items()})
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def batches(arrays: dict[str, np.ndarray], training: dict, shuffle: bool, seed: int,
            with_rating: bool = False) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        dataset = dataset.shuffle(len(arrays[features.LENGTH]), seed=seed, reshuffle_each_iteration=True)
    return trainer.length_batched_dataset(dataset, int(training["batch_size"]),
                                          int(training["length_sort_window_batches"]), shuffle, seed,
                                          int(training.get("length_multiple") or 1), rating=with_rating)


def rating_baselines(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict | None:
    """MAE on the rated test examples of predicting the training split's mean rating, and the
    mean rating of the example's true class; None where the examples carry no rating."""
    if features.TRANSFORMED_RATING not in train or features.TRANSFORMED_RATING not in test:
        return None
    baselines = rating.class_mean_baselines(train[features.TRANSFORMED_RATING], train[features.TRANSFORMED_LABEL],
                                            test[features.TRANSFORMED_RATING], test[features.TRANSFORMED_LABEL])
    if baselines is None:
        return None
    return {"test_rated_examples": baselines["rated_test_examples"], "train_mean_rating": baselines["overall_mean"],
            "train_class_mean_rating": baselines["class_means"],
            "mae_predict_overall_mean": baselines["overall_mean_mae"],
            "mae_predict_true_class_mean": baselines["class_mean_mae"]}


def seconds_per_pass(fn, batches_: tf.data.Dataset) -> float:
    """Seconds of one pass of `fn` (traced, as serving runs it) over the token ids of the
    batches, after a first pass that traces it; reading the batches is counted too."""
    traced = tf.function(fn, reduce_retracing=True)
    for _ in range(2):
        started = time.perf_counter()
        for ids, _ in batches_:
            traced(ids)
    return time.perf_counter() - started


def compare_stackings(train_model, train_batches, valid_batches, test_batches, id_space: int,
                      orders=(1, 2, 3), inverse_l2s=(1.0,)) -> dict:
    """The same network stacked with each kind of n-gram score: each order, the ratios as they
    are or weighed by the logistic regression (naive_bayes.logistic_weights) at each of
    `inverse_l2s` (named `_c<C>` unless C = 1, the Trainer's). Each combination is fitted on
    validation as the Trainer fits it; validation accuracy cross-fitted (each half scored by
    the fit on the other), test accuracy by the fit on all of validation."""
    network = {name: calibration.logits_and_labels(train_model, batches_, model_lib.LOGIT)
               for name, batches_ in (("valid", valid_batches), ("test", test_batches))}
    # What each score costs beside the network it is added to, on the test split, in one process.
    results = {"network_test_pass_seconds": round(seconds_per_pass(
        lambda ids: train_model(ids, training=False)[model_lib.LOGIT], test_batches), 2)}
    for order in orders:
        counts = naive_bayes.count_ngrams(train_batches, order, id_space)
        keys, ratios = counts.keys, naive_bayes.ratios_of(counts)
        kinds, seconds = [("ratios", ratios)], {}
        for inverse_l2 in inverse_l2s:
            name = "logistic" if inverse_l2 == 1.0 else f"logistic_c{inverse_l2:g}"
            started = time.perf_counter()
            kinds.append((name, naive_bayes.logistic_weights(counts, ratios, inverse_l2)))
            seconds[name] = round(time.perf_counter() - started, 1)
        for name, values in kinds:
            score = naive_bayes.NaiveBayesScore(keys, values, order, id_space)
            columns = {split: np.stack([network[split][0], np.concatenate(
                [score(ids).numpy().sum(axis=1) for ids, _ in batches_])], axis=1)
                for split, batches_ in (("valid", valid_batches), ("test", test_batches))}
            (_, valid_labels), (_, test_labels) = network["valid"], network["test"]
            weights = np.asarray(calibration.fit_logistic(columns["valid"], valid_labels))
            stacked = columns["test"] @ weights[:-1] + weights[-1]
            results[f"order{order}_{name}"] = {
                "ngrams": int(keys.size),
                "val_accuracy_cross_fitted": calibration.cross_fitted_accuracy(columns["valid"], valid_labels),
                "val_accuracy_ngrams_alone_cross_fitted": calibration.cross_fitted_accuracy(
                    columns["valid"][:, 1], valid_labels),
                "test_accuracy": float(np.mean((stacked > 0) == (test_labels > 0.5))),
                "weights": [float(w) for w in weights],
                **({"regression_seconds": seconds[name]} if name in seconds else {}),
                "score_test_pass_seconds": round(seconds_per_pass(score, test_batches), 2),
            }
            print(f"order {order} {name}: val {results[f'order{order}_{name}']['val_accuracy_cross_fitted']:.4f}",
                  flush=True)
    return results


def stacked_cross_fitted_accuracy(network_logits, stacked_logits, weights, labels) -> float:
    """Cross-fitted accuracy of the network's logit beside the weighted n-gram score (the stacked
    logit less the network's mapped part), each half of the split mapped by the fit on the other."""
    scale, _, offset = weights
    score = stacked_logits - (scale * network_logits + offset)
    return calibration.cross_fitted_accuracy(np.stack([network_logits, score], axis=1), labels)


def train_and_stack(train, valid, test, labelled, transform_output, hyperparameters, seed,
                    with_rating: bool = False, first: tuple[dict, int] | None = None,
                    start: list[np.ndarray] | None = None,
                    more_labelled: dict | None = None) -> tuple[dict, tf.keras.Model]:
    """The Trainer's network trained on `train`, stopped early on `valid`, then stacked with the n-gram
    score counted on `labelled`, as the Trainer does; returns its figures and the stacked model.

    With `first` = (examples, epochs) it first trains that many epochs on other examples, then
    goes on from those weights with a fresh optimizer; `start` (the model's weights) starts from
    weights trained elsewhere instead. `more_labelled` also reports the stack with the n-grams
    counted on `labelled` and those examples. Validation accuracy of the stack is cross-fitted;
    test accuracy is only reported.
    """
    training = hyperparameters["training"]

    def batched(arrays, shuffle):
        return batches(arrays, training, shuffle, seed if shuffle else 0, with_rating=with_rating)

    started = time.perf_counter()
    tf.keras.utils.set_random_seed(seed)
    model, train_model, _ = trainer.build_models(transform_output, hyperparameters, seed)
    if start is not None:
        model.set_weights(start)
    valid_batches, test_batches = batched(valid, False), batched(test, False)
    model_lib.build_metric_variables(train_model, next(iter(valid_batches)))
    first_stage = None
    if first:
        examples, epochs = first
        history = train_model.fit(batched(examples, True), validation_data=valid_batches, epochs=epochs, verbose=2)
        first_stage = {"examples": int(len(examples[features.LENGTH])), "epochs": epochs,
                       "val_accuracy_by_epoch": [round(float(v), 4) for v in history.history["val_accuracy"]],
                       "seconds": round(time.perf_counter() - started, 1)}
        model_lib.compile_model(train_model, float(training["learning_rate"]), float(training["clipnorm"]),
                                float(training["weight_averaging"]))
        model_lib.build_metric_variables(train_model, next(iter(valid_batches)))
    history = train_model.fit(batched(train, True), validation_data=valid_batches, epochs=int(training["epochs"]),
                              callbacks=trainer.training_callbacks(training), verbose=2)
    train_seconds = time.perf_counter() - started
    valid_logits, valid_labels = calibration.logits_and_labels(train_model, valid_batches, model_lib.LOGIT)
    test_logits, test_labels = calibration.logits_and_labels(train_model, test_batches, model_lib.LOGIT)

    def stack(counted):
        stacked, weights = trainer.stack_naive_bayes(
            model, train_model, batched(counted, True), valid_batches, int(training["naive_bayes_ngrams"]),
            trainer.embedding_input_dim(transform_output, hyperparameters), bool(training["naive_bayes_logistic"]))
        stacked_valid, _ = calibration.logits_and_labels(stacked, valid_batches, model_lib.LOGIT)
        stacked_test, _ = calibration.logits_and_labels(stacked, test_batches, model_lib.LOGIT)
        return stacked, weights, stacked_valid, stacked_test

    more = None
    if more_labelled is not None:
        both = {key: np.concatenate([labelled[key], more_labelled[key]]) for key in labelled if key in more_labelled}
        _, more_weights, more_valid, more_test = stack(both)
        more = {"ngram_examples": int(len(both[features.LENGTH])),
                "val_accuracy_stacked_cross_fitted": stacked_cross_fitted_accuracy(
                    valid_logits, more_valid, more_weights, valid_labels),
                "test_accuracy_stacked": float(np.mean((more_test > 0) == (test_labels > 0.5))),
                "stacking_weights": more_weights}
    stacked, weights, stacked_valid, stacked_test = stack(labelled)
    return {
        "train_examples": int(len(train[features.LENGTH])),
        **({"first_stage": first_stage} if first_stage else {}),
        "epochs_run": len(history.history["val_auc"]),
        "val_auc_by_epoch": [round(float(v), 4) for v in history.history["val_auc"]],
        "val_accuracy_network": float(np.mean((valid_logits > 0) == (valid_labels > 0.5))),
        "test_accuracy_network": float(np.mean((test_logits > 0) == (test_labels > 0.5))),
        "val_accuracy_stacked_cross_fitted": stacked_cross_fitted_accuracy(
            valid_logits, stacked_valid, weights, valid_labels),
        "test_accuracy_stacked": float(np.mean((stacked_test > 0) == (test_labels > 0.5))),
        "stacking_weights": weights,
        **({"with_more_ngrams": more} if more else {}),
        "train_seconds": round(train_seconds, 1),
    }, stacked


def train_and_test(train, valid, test, tf_transform_output, hyperparameters, seed,
                   stacking_variants: dict | None = None, base_model: str | None = None):
    """Trains one model; returns its metrics and timings (`stacking_variants`: compare_stackings' keywords;
    `base_model`: where the Trainer would start from, e.g. the pretrained reader)."""
    training = hyperparameters["training"]
    rating_head = bool(hyperparameters["model"].get("rating_head"))
    if rating_head and features.TRANSFORMED_RATING not in train:
        raise SystemExit(trainer.NO_RATINGS + " (these Transform artifacts predate the rating: re-run the pipeline)")

    def batched(arrays, training, shuffle, seed):  # with the head, the targets hold the rating
        return batches(arrays, training, shuffle, seed, with_rating=rating_head)

    tf.keras.utils.set_random_seed(seed)
    model, train_model, carried = trainer.build_models(tf_transform_output, hyperparameters, seed,
                                                       base_model)  # the Trainer's own
    if base_model and not carried:
        raise SystemExit(f"nothing was carried over from {base_model}")
    timer = StepTimer(len(train[features.LENGTH]), int(training["batch_size"]))
    callbacks = [timer] + trainer.training_callbacks(training)  # the Trainer's own
    started = time.perf_counter()
    valid_batches = batched(valid, training, False, 0)
    model_lib.build_metric_variables(train_model, next(iter(valid_batches)))  # as the Trainer does
    history = train_model.fit(batched(train, training, True, seed), validation_data=valid_batches,
                              epochs=int(training["epochs"]), callbacks=callbacks, verbose=2)
    train_seconds = time.perf_counter() - started

    calibrated = {}
    if training.get("calibrate_logit"):
        valid_logits, valid_labels = calibration.logits_and_labels(train_model, batched(valid, training, False, 0),
                                                                   model_lib.LOGIT)
        calibrated = {"val_accuracy_uncalibrated": float(np.mean((valid_logits > 0) == (valid_labels > 0.5))),
                      "val_accuracy_cross_fitted": calibration.cross_fitted_accuracy(valid_logits, valid_labels)}
        # The Trainer's own step (train_model shares its layers with the exported model).
        fitted = trainer.calibrate_logit(train_model, train_model, batched(valid, training, False, 0))
        calibrated["scale"], calibrated["offset"] = fitted or (1.0, 0.0)  # None: left uncalibrated

    stacking = {}
    if training.get("naive_bayes_ngrams"):
        valid_batches = batched(valid, training, False, 0)
        valid_logits, valid_labels = calibration.logits_and_labels(train_model, valid_batches, model_lib.LOGIT)
        # The Trainer's own step; the stacked model shares the network's layers with train_model.
        id_space = trainer.embedding_input_dim(tf_transform_output, hyperparameters)
        if stacking_variants:
            # Before the Trainer's stacking, which folds its fit into the network's head.
            variants = compare_stackings(train_model, batched(train, training, False, 0), valid_batches,
                                         batched(test, training, False, 0), id_space, **stacking_variants)
        model, weights = trainer.stack_naive_bayes(model, train_model, batched(train, training, True, seed),
                                                   valid_batches, int(training["naive_bayes_ngrams"]), id_space,
                                                   bool(training.get("naive_bayes_logistic")))
        stacking = {"val_accuracy_network": float(np.mean((valid_logits > 0) == (valid_labels > 0.5))),
                    # What calibrate_logit alone would give the same network, for comparison.
                    "val_accuracy_network_calibrated_cross_fitted": calibration.cross_fitted_accuracy(
                        valid_logits, valid_labels),
                    "weights": weights}
        if stacking_variants:
            stacking["variants"] = variants
        if weights:
            stacked_logits, _ = calibration.logits_and_labels(model, valid_batches, model_lib.LOGIT)
            stacking["val_accuracy_cross_fitted"] = stacked_cross_fitted_accuracy(
                valid_logits, stacked_logits, weights, valid_labels)
    served = model if stacking else train_model

    test_batches = batches(test, training, False, 0, with_rating=features.TRANSFORMED_RATING in test)
    wanted = (model_lib.LOGIT, features.PREDICTED_RATING) if rating_head else (model_lib.LOGIT,)
    predict = tf.function(lambda ids: [served(ids, training=False)[key] for key in wanted],
                          input_signature=[tf.TensorSpec([None, None], tf.int64)])
    predict(next(iter(test_batches))[0])  # trace once, outside the timing
    started = time.perf_counter()
    logits, labels, predicted_ratings, true_ratings = [], [], [], []
    for ids, label in test_batches:
        outputs = predict(ids)
        logits.append(outputs[0].numpy())
        labels.append(label[model_lib.LOGIT].numpy())
        if rating_head:
            predicted_ratings.append(outputs[1].numpy())
        if features.PREDICTED_RATING in label:
            true_ratings.append(label[features.PREDICTED_RATING].numpy())
    infer_seconds = time.perf_counter() - started
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    ratings = {}
    baselines = rating_baselines(train, test)
    if baselines:
        ratings["baselines"] = baselines
    if rating_head:
        predicted, actual = np.concatenate(predicted_ratings), np.concatenate(true_ratings)
        rated = actual > 0
        ratings.update({"test_mae": float(np.abs(predicted[rated] - actual[rated]).mean()),
                        "test_pearson_r": rating.pearson_r(predicted, actual),
                        "test_predicted_range": [float(predicted.min()), float(predicted.max())],
                        "best_val_rating_mae": None})
        if baselines:
            # The fair baseline: the mean rating of the class the model predicts (no true label given).
            means = baselines["train_class_mean_rating"]
            by_prediction = np.where(logits >= 0, means["positive"], means["negative"])
            baselines["mae_predict_predicted_class_mean"] = float(np.abs(by_prediction[rated] - actual[rated]).mean())
    auc = tf.keras.metrics.AUC(from_logits=True)
    auc.update_state(labels, logits)
    if calibrated:
        uncalibrated = (logits - calibrated["offset"]) / calibrated["scale"]
        calibrated["test_accuracy_uncalibrated"] = float(np.mean((uncalibrated > 0) == (labels > 0.5)))
    if stacking.get("weights"):
        network, _ = calibration.logits_and_labels(train_model, test_batches, model_lib.LOGIT)
        scale, _, offset = stacking["weights"]
        stacking["test_accuracy_network"] = float(np.mean(((network - offset) / scale > 0) == (labels > 0.5)))
    monitor = training.get("early_stopping_monitor") or "val_loss"
    watched = history.history[monitor]
    best = int(np.argmin(watched) if trainer.MONITORS[monitor] == "min" else np.argmax(watched))
    if "val_rating_mae" in history.history:
        ratings["best_val_rating_mae"] = float(history.history["val_rating_mae"][best])
    return {
        "test_accuracy": float(np.mean((logits > 0) == (labels > 0.5))),
        "test_auc": float(auc.result()),
        "test_examples": int(len(labels)),
        "epochs_run": len(watched),
        "best_epoch": best + 1,
        "best_val_accuracy": float(history.history["val_accuracy"][best]),
        "best_val_auc": float(history.history["val_auc"][best]),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": [round(s, 1) for s in timer.epoch_seconds],
        "train_examples_per_second": round(timer.steady_examples / max(timer.steady_seconds, 1e-9), 1),
        "inference_examples_per_second": round(len(labels) / infer_seconds, 1),
        **({"logit_calibration": calibrated} if calibrated else {}),
        **({"naive_bayes_stacking": stacking} if stacking else {}),
        **({"rating": ratings} if ratings else {}),
    }


def tutorial_throughput(texts: np.ndarray, labels: np.ndarray, steps: int, seed: int) -> dict:
    """The TF text-classification tutorial's BiLSTM, timed for a fixed number of steps."""
    tf.keras.utils.set_random_seed(seed)
    encoder = tf.keras.layers.TextVectorization(max_tokens=1000)
    encoder.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(256))
    model = tf.keras.Sequential([
        encoder,
        tf.keras.layers.Embedding(len(encoder.get_vocabulary()), 64, mask_zero=True),
        tf.keras.layers.Bidirectional(tf.keras.layers.LSTM(64)),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    model.compile(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                  optimizer=tf.keras.optimizers.Adam(1e-4), metrics=["accuracy"])
    dataset = tf.data.Dataset.from_tensor_slices((texts, labels.astype(np.float32))).shuffle(
        len(texts), seed=seed).batch(64).prefetch(2)
    timer = StepTimer(steps * 64, 64)
    model.fit(dataset.take(steps), epochs=1, callbacks=[timer], verbose=0)
    return {"steps": steps, "train_examples_per_second": round(timer.steady_examples / timer.steady_seconds, 1)}


def raw_texts(examples_uri: str, split: str, limit: int | None = None):
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz"))
    spec = {features.TEXT: tf.io.FixedLenFeature([], tf.string), features.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").map(lambda r: tf.io.parse_single_example(r, spec))
    if limit:
        dataset = dataset.take(limit)
    rows = list(dataset.as_numpy_iterator())
    return np.array([r[features.TEXT] for r in rows]), np.array([r[features.LABEL] for r in rows])


def pretrained_reader(root: Path, uri: str | None) -> dict:
    """The pretrained reader the Trainer starts from (`uri`, or the pipeline run's newest), what it learnt
    from, and how many of the run's own texts (every split) its corpus holds."""
    uri = uri or latest(str(root / "ReaderPretrainer" / "model" / "*"))
    with open(os.path.join(uri, pretraining.REPORT_FILE)) as f:
        report = json.load(f)
    digests = pretraining.corpus_digests(uri)
    examples_uri = latest(str(root / "ExampleGen" / "examples" / "*"))
    texts = [text for split in ("train", "eval", "test") for text in raw_texts(examples_uri, split)[0]]
    shared = sum(pretraining.dedup_key(text.decode()) in digests for text in texts)
    return {"uri": uri, "base_model": os.path.join(uri, "Format-Serving"), "objective": report.get("objective"),
            "corpus": report.get("corpus"), "epochs": report.get("settings", {}).get("epochs"),
            "dataset_texts": len(texts), "dataset_texts_in_its_corpus": shared}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default="imdb")
    parser.add_argument("--output-dir", default=str(configs.default_output_dir()),
                        help="the pipeline's --output-dir, whose artifacts are read")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, default=1, help="polarity: repeated random 90/10 splits")
    parser.add_argument("--first-seed", type=int, default=0, help="polarity: seed of the first split")
    parser.add_argument("--tutorial-steps", type=int, default=0, help="0 skips the tutorial model")
    parser.add_argument("--stacking-variants", action="store_true",
                        help="also stack the trained network with every kind of n-gram score (compare_stackings)")
    parser.add_argument("--stacking-orders", default="1,2,3", help="with --stacking-variants: n-gram orders")
    parser.add_argument("--stacking-c", default="1",
                        help="with --stacking-variants: the regression's inverse L2 strengths (scikit-learn's C)")
    parser.add_argument("--pretrained-reader", metavar="URI",
                        help="with pretraining on: the ReaderPretrainer model artifact to start from "
                             "(default: the pipeline run's newest)")
    parser.add_argument("--output")
    args = parser.parse_args()
    stacking_variants = None
    if args.stacking_variants:
        stacking_variants = {"orders": tuple(int(o) for o in args.stacking_orders.split(",")),
                             "inverse_l2s": tuple(float(c) for c in args.stacking_c.split(","))}
        if not set(stacking_variants["orders"]) <= set(range(1, naive_bayes.MAX_ORDER + 1)):
            parser.error(f"--stacking-orders: orders are 1 to {naive_bayes.MAX_ORDER}")
        if min(stacking_variants["inverse_l2s"]) <= 0:
            parser.error("--stacking-c: C must be > 0")

    dataset = configs.with_overrides(configs.DATASETS[args.dataset], dict(s.split("=", 1) for s in args.set))
    trainer.apply_thread_settings(dataclasses.asdict(dataset.training))  # before TensorFlow runs any op
    if dataset.model.pretrained_embeddings and not os.path.isabs(dataset.model.pretrained_embeddings):
        dataset = configs.with_overrides(dataset, {"model.pretrained_embeddings": str(
            data_sources.resolve_embeddings(dataset.model.pretrained_embeddings))})
    hyperparameters = configs.trainer_hyperparameters(dataset)
    root = Path(args.output_dir) / "pipelines" / f"sentiment-{dataset.name}"
    tf_transform_output = tft.TFTransformOutput(latest(str(root / "Transform" / "transform_graph" / "*")))
    splits = transformed_splits(root, tf_transform_output)
    rows = trainer.embedding_input_dim(tf_transform_output, hyperparameters)
    largest_id = max(int(split[features.TOKEN_IDS].max()) for split in splits.values())
    if largest_id >= rows:
        raise SystemExit(f"the Transform artifacts hold token id {largest_id} but this config's embedding has "
                         f"{rows} rows: run the pipeline with the same vocab_size and pretrained_vocabulary")
    max_len = splits["train"][features.TOKEN_IDS].shape[1]
    if max_len != dataset.max_len:
        print(f"note: the Transform artifacts use max_len={max_len}; overrides of max_len need a pipeline run")

    result = {"dataset": dataset.name, "config": dataclasses.asdict(dataset), "transform_max_len": int(max_len),
              "vocabulary": int(rows)}
    base_model = None
    if dataset.pretraining.enabled:
        result["pretrained_reader"] = reader = pretrained_reader(root, args.pretrained_reader)
        base_model = reader["base_model"]
        print(f"starting from the pretrained reader {reader['uri']} ({reader['objective']}); "
              f"{reader['dataset_texts_in_its_corpus']} of the dataset's {reader['dataset_texts']} texts are in "
              "its corpus", flush=True)
        if reader["dataset_texts_in_its_corpus"] and args.dataset == "polarity":
            raise SystemExit("the pretraining read some of polarity's texts, which random splits may test on: "
                             "pretrain without them, or --set pretraining.enabled=false")
    if args.dataset == "polarity":
        everything = {k: np.concatenate([splits[s][k] for s in splits]) for k in splits["train"]}
        n = len(everything[features.LENGTH])
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            order = np.random.default_rng(seed).permutation(n)
            test, valid, train = np.split(order, [n // 10, n // 10 + (n - n // 10) // 10])
            pick = lambda idx: {k: v[idx] for k, v in everything.items()}  # noqa: E731
            runs.append(train_and_test(pick(train), pick(valid), pick(test), tf_transform_output,
                                       hyperparameters, seed, stacking_variants, base_model))
            print(f"seed {seed}: test accuracy {runs[-1]['test_accuracy']:.4f}", flush=True)
        result["protocol"] = (f"{args.seeds} seeds (from {args.first_seed}) of a random 90/10 split "
                              "(10% of the 90% for early stopping)")
        result["runs"] = runs
        result["mean_test_accuracy"] = float(np.mean([r["test_accuracy"] for r in runs]))
        result["std_test_accuracy"] = float(np.std([r["test_accuracy"] for r in runs]))
        ours = runs[0]
    else:
        ours = train_and_test(splits["train"], splits["eval"], splits["test"], tf_transform_output,
                              hyperparameters, int(dataset.training.seed), stacking_variants, base_model)
        result["protocol"] = "official IMDB split: train (90% of train), early stopping on eval (10%), test 25k"
        result["run"] = ours
    if args.tutorial_steps:
        examples_uri = latest(str(root / "ExampleGen" / "examples" / "*"))
        texts, labels = raw_texts(examples_uri, "train")
        result["tutorial"] = tutorial_throughput(texts, labels, args.tutorial_steps, 0)
        result["throughput_ratio_vs_tutorial"] = round(
            ours["train_examples_per_second"] / result["tutorial"]["train_examples_per_second"], 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    output = Path(args.output or RESULTS_DIR / f"train_{dataset.name}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k not in ("config", "runs")}
    print(json.dumps(summary, indent=2))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
