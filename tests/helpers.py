"""Helpers the tests share (plain functions and constants; the fixtures are in conftest.py)."""

from __future__ import annotations

import os

import pytest

TINY_TEXTS = [
    "A good movie, a good cast!",
    "Bad movie.<br /><br />Really bad acting.",
    "good",
    "I didn't like it; the plot was bad and the ending was worse.",
    "Wonderful, moving and good.",
    "Dull, slow, bad.",
]
TINY_LABELS = [1, 0, 1, 0, 1, 0]


def required_upstream(resolver: str) -> dict[str, set[str]]:
    """The README's pipeline graph: each component and the upstream ones it needs
    at least. Orchestrators name the resolver task differently, hence the argument."""
    return {
        "ExampleGen": set(),
        "ImportSchemaGen": set(),
        "StatisticsGen": {"ExampleGen"},
        "ExampleValidator": {"StatisticsGen", "ImportSchemaGen"},
        # The gate publishes the examples that passed; everything downstream reads those.
        "DataValidationGate": {"ExampleGen", "StatisticsGen", "ExampleValidator", "ImportSchemaGen"},
        "Transform": {"DataValidationGate", "ImportSchemaGen"},
        "Trainer": {"Transform", "ImportSchemaGen"},
        resolver: set(),
        "Evaluator": {"DataValidationGate", "Trainer", resolver},
        "InfraValidator": {"Trainer"},
        "Pusher": {"Trainer", "Evaluator", "InfraValidator"},
    }


def make_artifact(kind, uri, **int_properties):
    """A TFX artifact of `kind` at `uri` (created), with integer custom properties."""
    artifact = kind()
    artifact.uri = str(uri)
    os.makedirs(artifact.uri, exist_ok=True)
    for key, value in int_properties.items():
        artifact.set_int_custom_property(key, value)
    return artifact


def write_tar(path, members: dict) -> str:
    """Writes {member name: bytes} as a .tar.gz (no directory entries, like many real archives)."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def run_transform(texts, labels, vocab_size, max_len, output_dir, token_level="word", pretrained_words=()):
    """Analyzes and transforms `texts` with the pipeline's preprocessing_fn."""
    import tempfile

    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from models import features, preprocessing

    raw_spec = {
        features.TEXT: tf.io.FixedLenFeature([1], tf.string),
        features.LABEL: tf.io.FixedLenFeature([1], tf.int64),
    }
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_spec))
    rows = [{features.TEXT: [text.encode()], features.LABEL: [label]} for text, label in zip(texts, labels)]
    fn = preprocessing.build_preprocessing_fn(vocab_size=vocab_size, max_len=max_len, token_level=token_level,
                                              pretrained_words=pretrained_words)
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=output_dir), force_tf_compat_v1=False):
        (transformed, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            fn, output_record_batches=False
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(output_dir))
    # The raw schema, as TFX's Transform writes it; serving parses with it.
    metadata_io.write_metadata(metadata, os.path.join(str(output_dir), tft.TFTransformOutput.RAW_METADATA_DIR))
    return transformed, tft.TFTransformOutput(str(output_dir))


# A pipeline run that tests the pipeline, not the model: random 16-d embeddings,
# two epochs, and no gate but the data's (as `--set KEY=VALUE` overrides).
SMALL_MODEL = {
    # Pretraining on IMDB's 300k sentences (polarity's default) is measured in bench/, not here.
    "pretraining.enabled": "false",
    "pretrained_vocabulary": "0",
    "model.pretrained_embeddings": "",
    "training.epochs": "2",
    "training.batch_size": "32",
    "training.weight_averaging": "0",
    "model.embedding_dim": "16",
    "model.rnn_units": "16",
    "training.naive_bayes_ngrams": "2",
    "evaluation.min_auc": "0",
}


def real_polarity_lines(rows: int) -> list[str]:
    """The header and first rows of the real polarity CSV (pre-shuffled: both classes),
    found like the CLI finds it; skipped outside CI when the data is absent."""
    import gzip
    from pathlib import Path

    from pipeline import data_sources

    try:
        data_dir = Path(os.environ.get(data_sources.DATA_DIR_ENV) or data_sources.SHARED_DATA_DIR)
        with gzip.open(data_dir / "polarity" / "rt-polarity.csv.gz", "rt", encoding="utf-8") as f:
            return [next(f) for _ in range(rows + 1)]
    except OSError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real data not available: {error}")


def write_gz_lines(path, lines: list[str]):
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return path
