"""Pretrained word vectors (GloVe text format) for the embedding layer.

Rows follow the Transform ids: row 0 is padding (zeros), row i (1..V) the
i-th vocabulary token, row V+1 the out-of-vocabulary bucket. Tokens GloVe does
not know get small random vectors drawn with the run's seed.
"""

from __future__ import annotations

import functools
import gzip
from typing import Iterable

import numpy as np


def read_glove(path: str, wanted: Iterable[str], dim: int) -> dict[str, np.ndarray]:
    """Vectors of the wanted words from a GloVe file (plain or gzipped)."""
    wanted = set(wanted)
    opener = gzip.open if path.endswith(".gz") else open
    vectors = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in wanted:
                continue
            values = np.asarray(rest.split(" "), dtype=np.float32)
            if values.shape != (dim,):
                raise ValueError(f"{path}:{line_number}: {values.size} values for {word!r}, "
                                 f"expected {dim} (embedding_dim must match the vectors)")
            vectors[word] = values
    return vectors


def read_glove_words(path: str, count: int) -> list[str]:
    """The first `count` words of a GloVe file: its most frequent ones, as GloVe files are sorted."""
    opener = gzip.open if path.endswith(".gz") else open
    words = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if len(words) == count:
                break
            words.append(line.partition(" ")[0])
    return words


@functools.lru_cache(maxsize=4)
def pretrained_words(path: str, count: int) -> tuple[str, ...]:
    """The pretrained vocabulary: the `count` most frequent words at `path`, each once.

    Transform (ids) and Trainer (embedding rows) both read it here, so their ranks agree.
    """
    return tuple(dict.fromkeys(read_glove_words(path, count))) if count else ()


def resolve(path: str) -> str:
    """`path` if it exists (local or remote), else the same path under the data directory."""
    import tensorflow as tf

    if tf.io.gfile.exists(path):
        return path
    from pipeline import data_sources

    return str(data_sources.resolve_embeddings(path))


def embedding_matrix(vocabulary: list[str], path: str, dim: int, num_oov_buckets: int,
                     seed: int, pretrained_words: list[str] = (),
                     first_pretrained_id: int = 0) -> tuple[np.ndarray, int]:
    """(matrix [rows, dim], number of vocabulary tokens found in the file).

    Rows: padding, the vocabulary, the OOV bucket(s); with `pretrained_words`,
    also rows first_pretrained_id.. for them (see features.first_pretrained_id).
    """
    vectors = read_glove(path, list(vocabulary) + list(pretrained_words), dim)
    rng = np.random.default_rng(seed)
    scale = float(np.std(np.stack(list(vectors.values())))) if vectors else 0.1
    rows = 1 + len(vocabulary) + num_oov_buckets
    if pretrained_words:
        rows = first_pretrained_id + len(pretrained_words)
    matrix = rng.normal(0.0, scale, size=(rows, dim)).astype(np.float32)
    matrix[0] = 0.0
    for index, token in enumerate(vocabulary, start=1):
        if token in vectors:
            matrix[index] = vectors[token]
    for index, token in enumerate(pretrained_words, start=first_pretrained_id):
        if token in vectors:
            matrix[index] = vectors[token]
    return matrix, sum(token in vectors for token in vocabulary)
