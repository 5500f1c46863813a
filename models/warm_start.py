"""Warm start: a new model begins from a previous model's weights, across a vocabulary change.

A new span brings a new vocabulary, so the embedding's row i means another
token than before. Rows are therefore carried over by token (padding and the
OOV bucket by their role); tokens the old model never had keep the rows they
were built with (pretrained vectors or a random start). Every other layer is
matched by its path in the model (e.g. "member_1/bigru_0") and reused where
the shapes agree; a layer whose shape changed (another configuration) starts
fresh and is reported.

The Trainer saves the state next to its exported model (`STATE_DIR`, beside
Format-Serving, so the Pusher does not serve it): the network's weights by
layer path and the token of every embedding row.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

STATE_DIR = "warm_start"
WEIGHTS_FILE = "weights.npz"
TOKENS_FILE = "tokens.json"
# Rows that are not a token of the vocabulary: found by their role.
PADDING = "<padding>"
OOV = "<oov>"


def token_rows(vocabulary: list[str], pretrained_words: list[str] = (), first_pretrained_id: int = 0) -> dict[str, int]:
    """{token: embedding row} under the id conventions of models/features.py: 0 padding,
    1..V the vocabulary, V+1 the OOV bucket, then the pretrained-only words from first_pretrained_id."""
    rows = {PADDING: 0, OOV: 1 + len(vocabulary)}
    for index, token in enumerate(vocabulary, start=1):
        rows.setdefault(token, index)
    for index, word in enumerate(pretrained_words, start=first_pretrained_id):
        rows.setdefault(word, index)
    return rows


def layer_paths(model: tf.keras.Model, prefix: str = "") -> Iterator[tuple[str, tf.keras.layers.Layer]]:
    """Every layer with weights, by its path through nested models (ensemble members)."""
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, tf.keras.Model):
            yield from layer_paths(layer, path + "/")
        elif layer.weights:
            yield path, layer


def save(model: tf.keras.Model, rows: dict[str, int], directory: str) -> None:
    """Writes the network's weights by layer path, and the token of every embedding row."""
    tf.io.gfile.makedirs(directory)
    arrays = {}
    for path, layer in layer_paths(model):
        for index, value in enumerate(layer.get_weights()):
            arrays[f"{path}:{index}"] = value
    buffer = io.BytesIO()  # numpy's zip writer needs a seekable file; GFile (any filesystem) is not
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(os.path.join(directory, WEIGHTS_FILE), "wb") as f:
        f.write(buffer.getvalue())
    with tf.io.gfile.GFile(os.path.join(directory, TOKENS_FILE), "w") as f:
        json.dump(rows, f)


def load(directory: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    path = os.path.join(directory, WEIGHTS_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no warm-start state at {directory} ({WEIGHTS_FILE} missing)")
    with tf.io.gfile.GFile(path, "rb") as f:
        archive = np.load(io.BytesIO(f.read()))
        arrays = {key: archive[key] for key in archive.files}
    with tf.io.gfile.GFile(os.path.join(directory, TOKENS_FILE)) as f:
        rows = json.load(f)
    return arrays, rows


def carry_rows(old: np.ndarray, old_rows: dict[str, int], new: np.ndarray, new_rows: dict[str, int]) -> int:
    """Copies into `new` the row of every token both vocabularies hold; returns how many."""
    pairs = [(new_rows[token], row) for token, row in old_rows.items()
             if token in new_rows and row < len(old) and new_rows[token] < len(new)]
    if pairs:
        targets, sources = map(np.array, zip(*pairs))
        new[targets] = old[sources]
    return len(pairs)


def restore(model: tf.keras.Model, directory: str, rows: dict[str, int]) -> dict[str, Any]:
    """Starts `model` (built for the vocabulary `rows`) from the state saved in `directory`.

    Returns what was carried over: layers reused, layers left as built (with
    why), embedding rows carried by token and rows left as built.
    """
    arrays, old_rows = load(directory)
    report = {"layers_reused": 0, "layers_fresh": [], "tokens_carried": 0, "tokens_new": 0}
    for path, layer in layer_paths(model):
        current = layer.get_weights()
        saved = [arrays.get(f"{path}:{index}") for index in range(len(current))]
        if any(value is None for value in saved):
            # An ensemble member's layer ("member_1/bigru_0") from a single reader ("bigru_0").
            saved = [arrays.get(f"{path.rsplit('/', 1)[-1]}:{index}") for index in range(len(current))]
        if any(value is None for value in saved):
            report["layers_fresh"].append(f"{path}: not in the base model")
            continue
        if isinstance(layer, tf.keras.layers.Embedding):
            matrix = current[0].copy()
            if matrix.shape[1] != saved[0].shape[1]:
                report["layers_fresh"].append(f"{path}: embedding width {saved[0].shape[1]} -> {matrix.shape[1]}")
                continue
            carried = carry_rows(saved[0], old_rows, matrix, rows)
            layer.set_weights([matrix])
            # Counted once per model, not per ensemble member.
            report["tokens_carried"] = carried
            report["tokens_new"] = len(rows) - carried
            report["layers_reused"] += 1
            continue
        shapes = [value.shape for value in current]
        if shapes != [value.shape for value in saved]:
            report["layers_fresh"].append(f"{path}: shapes {[v.shape for v in saved]} -> {shapes}")
            continue
        layer.set_weights(saved)
        report["layers_reused"] += 1
    return report


def state_dir_of(serving_model_dir: str) -> str:
    """Where the state of the model exported to `serving_model_dir` (<model uri>/Format-Serving) lives."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), STATE_DIR)
