"""Warm start across a vocabulary change: a token keeps its trained vector, other layers are reused."""

from __future__ import annotations

import numpy as np
import pytest

from models import model as model_lib
from models import warm_start

OLD_VOCABULARY = ["good", "bad", "movie", "plot"]
NEW_VOCABULARY = ["movie", "great", "good", "acting", "dull"]  # reordered, two gone, three new


def build(vocabulary, **options):
    settings = dict(embedding_dim=8, rnn_units=4, attention_units=4, dense_units=4)
    settings.update(options)
    return model_lib.build_model(vocab_size=1 + len(vocabulary) + 1, **settings)


def embedding_of(model, member: int | None = None):
    paths = dict(warm_start.layer_paths(model))
    key = "embedding" if member is None else f"member_{member}/embedding"
    return paths[key].get_weights()[0]


def perturb(model, seed: int):
    """Distinct trained-looking weights, so a copied value cannot match by chance."""
    rng = np.random.default_rng(seed)
    for _, layer in warm_start.layer_paths(model):
        layer.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in layer.get_weights()])


def test_token_rows_follow_the_id_conventions():
    rows = warm_start.token_rows(["a", "b"], ["b", "c"], first_pretrained_id=10)
    assert rows == {warm_start.PADDING: 0, "a": 1, "b": 2, warm_start.OOV: 3, "c": 11}


def test_a_token_keeps_its_trained_vector_across_a_vocabulary_change(tmp_path):
    old = build(OLD_VOCABULARY)
    perturb(old, seed=1)
    old_rows = warm_start.token_rows(OLD_VOCABULARY)
    warm_start.save(old, old_rows, str(tmp_path))

    new = build(NEW_VOCABULARY)
    new_rows = warm_start.token_rows(NEW_VOCABULARY)
    before = embedding_of(new).copy()
    report = warm_start.restore(new, str(tmp_path), new_rows)

    old_matrix, new_matrix = embedding_of(old), embedding_of(new)
    for token in ("good", "movie", warm_start.PADDING, warm_start.OOV):
        np.testing.assert_array_equal(new_matrix[new_rows[token]], old_matrix[old_rows[token]], err_msg=token)
    for token in ("great", "acting", "dull"):  # new tokens keep the row they were built with
        np.testing.assert_array_equal(new_matrix[new_rows[token]], before[new_rows[token]], err_msg=token)
    assert report["tokens_carried"] == 4 and report["tokens_new"] == 3
    assert report["layers_fresh"] == []

    # Every other layer is the old one, weight for weight.
    old_layers = dict(warm_start.layer_paths(old))
    for path, layer in warm_start.layer_paths(new):
        if path == "embedding":
            continue
        for mine, theirs in zip(layer.get_weights(), old_layers[path].get_weights()):
            np.testing.assert_array_equal(mine, theirs, err_msg=path)
    assert report["layers_reused"] == len(old_layers)


def test_ensemble_members_are_carried_member_by_member(tmp_path):
    old = build(OLD_VOCABULARY, ensemble_size=2)
    perturb(old, seed=2)
    warm_start.save(old, warm_start.token_rows(OLD_VOCABULARY), str(tmp_path))
    new = build(NEW_VOCABULARY, ensemble_size=2)
    new_rows = warm_start.token_rows(NEW_VOCABULARY)
    warm_start.restore(new, str(tmp_path), new_rows)
    old_rows = warm_start.token_rows(OLD_VOCABULARY)
    for member in (0, 1):
        np.testing.assert_array_equal(embedding_of(new, member)[new_rows["good"]],
                                      embedding_of(old, member)[old_rows["good"]])
    assert not np.array_equal(embedding_of(new, 0)[new_rows["good"]], embedding_of(new, 1)[new_rows["good"]])


def test_a_layer_whose_shape_changed_starts_fresh_and_is_reported(tmp_path):
    old = build(OLD_VOCABULARY)
    perturb(old, seed=3)
    warm_start.save(old, warm_start.token_rows(OLD_VOCABULARY), str(tmp_path))
    new = build(NEW_VOCABULARY, dense_units=6)
    dense_before = [w.copy() for w in dict(warm_start.layer_paths(new))["dense"].get_weights()]
    report = warm_start.restore(new, str(tmp_path), warm_start.token_rows(NEW_VOCABULARY))
    assert any(entry.startswith("dense:") for entry in report["layers_fresh"])
    for kept, now in zip(dense_before, dict(warm_start.layer_paths(new))["dense"].get_weights()):
        np.testing.assert_array_equal(kept, now)
    assert report["tokens_carried"] == 4  # the embedding is still carried


def test_restore_without_saved_state_fails_loudly(tmp_path):
    with pytest.raises((OSError, FileNotFoundError)):
        warm_start.restore(build(NEW_VOCABULARY), str(tmp_path / "missing"), warm_start.token_rows(NEW_VOCABULARY))
