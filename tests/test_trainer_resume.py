"""A Trainer killed midway resumes from its last finished epoch instead of starting over.

The kill is simulated by an exception at the end of an epoch (after the
per-epoch checkpoint was written); the second call with the same backup
directory must start at the next epoch with exactly the weights the first
call had when it stopped.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from models import features, optimization, trainer
from pipeline import configs

EPOCHS = 4
KILLED_AFTER_EPOCH = 1  # 0-based: two epochs finished


def _write_transformed(rows, path):
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for row in rows:
            feature = {
                features.TOKEN_IDS: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=list(row[features.TOKEN_IDS]))),
                features.LENGTH: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row[features.LENGTH])])),
                features.TRANSFORMED_LABEL: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(row[features.TRANSFORMED_LABEL])])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


def _hyperparameters(weight_averaging: float = 0.0):
    dataset = configs.with_overrides(configs.POLARITY, {
        "pretrained_vocabulary": "0", "model.pretrained_embeddings": "", "model.ensemble_size": "1",
        "model.embedding_dim": "8", "model.rnn_units": "8", "model.attention_units": "8", "model.dense_units": "8",
        "training.epochs": str(EPOCHS), "training.batch_size": "2", "training.weight_averaging": str(weight_averaging),
        "training.naive_bayes_ngrams": "0", "training.early_stopping_patience": "100", "max_len": "12"})
    return configs.trainer_hyperparameters(dataclasses.replace(dataset))


class _Killed(Exception):
    pass


def _optimizer_state(model):
    """The optimizer's variables (step, learning rate, Adam's moments, the weights' moving averages)."""
    return [v.numpy().copy() for v in model.optimizer.variables]


class _KillAfter(tf.keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.weights = epoch, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.weights = [w.numpy().copy() for w in self.model.weights]
            self.optimizer = _optimizer_state(self.model)
            raise _Killed()


class _WeightsAtStart(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "weights"):
            self.epoch, self.weights = epoch, [w.numpy().copy() for w in self.model.weights]
            self.optimizer = _optimizer_state(self.model)
            variables = self.model.trainable_variables
            averages = optimization.moving_averages(self.model.optimizer, variables) or []
            self.raw_minus_average = [float(np.abs(v.numpy() - a.numpy()).max()) for v, a in zip(variables, averages)]


# With weight averaging the average lives in the optimizer: the checkpoint must hold it
# beside the raw weights (which training carries on from), not the averaged weights
# that validation saw.
@pytest.mark.parametrize("weight_averaging", [0.0, 0.9])
def test_a_killed_training_resumes_at_the_next_epoch_with_the_saved_weights(tiny_transform, tmp_path, monkeypatch,
                                                                            weight_averaging):
    rows, tft_output = tiny_transform
    files = [_write_transformed(rows, tmp_path / "train.gz")]
    backup = str(tmp_path / "backup")
    hyperparameters = _hyperparameters(weight_averaging)
    callbacks = trainer.training_callbacks

    kill = _KillAfter(KILLED_AFTER_EPOCH)
    monkeypatch.setattr(trainer, "training_callbacks", lambda training: callbacks(training) + [kill])
    with pytest.raises(_Killed):
        trainer.train(files, files, tft_output, hyperparameters, backup_dir=backup)
    assert os.listdir(backup), "no checkpoint was written"

    start = _WeightsAtStart()
    monkeypatch.setattr(trainer, "training_callbacks", lambda training: callbacks(training) + [start])
    _, history = trainer.train(files, files, tft_output, hyperparameters, backup_dir=backup)
    assert history["epochs_run"] == list(range(KILLED_AFTER_EPOCH + 1, EPOCHS))
    assert len(history["loss"]) == EPOCHS - KILLED_AFTER_EPOCH - 1
    assert start.epoch == KILLED_AFTER_EPOCH + 1
    for resumed, saved in zip(start.weights, kill.weights):
        np.testing.assert_array_equal(resumed, saved)
    assert len(start.optimizer) == len(kill.optimizer) > 1
    for resumed, saved in zip(start.optimizer, kill.optimizer):
        np.testing.assert_array_equal(resumed, saved)
    if weight_averaging:
        # Training resumes from the raw weights, not from the average it also restored.
        assert max(start.raw_minus_average) > 1e-4
    # A finished training leaves no checkpoint behind for the next one to resume from.
    assert not os.path.exists(backup) or not os.listdir(backup)


def test_without_a_checkpoint_training_starts_at_epoch_zero(tiny_transform, tmp_path):
    rows, tft_output = tiny_transform
    files = [_write_transformed(rows, tmp_path / "train.gz")]
    _, history = trainer.train(files, files, tft_output, _hyperparameters(), backup_dir=str(tmp_path / "b"))
    assert history["epochs_run"] == list(range(EPOCHS))
