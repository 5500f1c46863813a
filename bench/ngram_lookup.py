"""The Naive Bayes n-gram score's lookup: hash table (the served layer) against a binary search
over the sorted keys (the layer before it), on a pipeline run's Transform output.

The n-grams are counted on the training split as the Trainer counts them
(naive_bayes.count_ngrams, the configured order); both layers then score the
test split, traced as served, in batches of --batch-size texts, in turns,
round after round, so a load that rises or falls on the machine reaches them
alike: compare them by the ratio within one run. Both must give the same
scores (the largest difference is recorded).

    python bench/ngram_lookup.py --output-dir outputs --dataset imdb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import train_benchmark as tb  # noqa: E402

from models import naive_bayes, trainer  # noqa: E402
from pipeline import configs  # noqa: E402


class BinarySearchScore(naive_bayes.NaiveBayesScore):
    """The layer before the hash table: each n-gram found by binary search over the sorted keys."""

    def call(self, token_ids):
        keys = naive_bayes.ngram_keys(token_ids, self.order, self.id_space)
        flat = tf.reshape(keys, [-1])
        position = tf.minimum(tf.searchsorted(self.keys, flat), tf.size(self.keys, out_type=tf.int32) - 1)
        known = tf.equal(tf.gather(self.keys, position), flat)
        values = tf.where(known, tf.gather(self.ratios, position), 0.0)
        values = tf.reshape(values, tf.shape(keys)) * tf.cast(naive_bayes.first_occurrences(keys), tf.float32)
        return tf.reduce_sum(values, axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="a pipeline run's --output-dir")
    parser.add_argument("--dataset", default="imdb")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    config = configs.DATASETS[args.dataset]
    trainer_config = configs.TrainerConfig.of(config)
    order = trainer_config.training.naive_bayes_ngrams or 2
    root = args.output_dir / "pipelines" / config.pipeline_name / "Transform"
    if not (root / "transform_graph").is_dir():
        raise SystemExit(f"no Transform output under {root}: run the {args.dataset} pipeline with "
                         f"--output-dir {args.output_dir} first")
    graph = max((root / "transform_graph").iterdir(), key=lambda p: int(p.name))
    transform_output = tft.TFTransformOutput(str(graph))
    id_space = trainer.embedding_input_dim(transform_output, trainer_config)

    def split(name: str, shuffle: bool) -> tf.data.Dataset:
        examples = root / "transformed_examples" / graph.name / f"Split-{name}" / "*"
        return trainer.input_fn([str(examples)], transform_output, batch_size=args.batch_size,
                                sort_window_batches=1, shuffle=shuffle, seed=0)

    started = time.perf_counter()
    counts = naive_bayes.count_ngrams(split("train", True), order, id_space)
    ratios = naive_bayes.ratios_of(counts)
    count_seconds = time.perf_counter() - started
    # The pipeline does not materialize the test split: ExampleGen's through the transform graph.
    test = tb.transformed_splits(args.output_dir / "pipelines" / config.pipeline_name, transform_output, ["test"])
    batches = [ids for ids, _ in trainer.length_batched_dataset(
        tf.data.Dataset.from_tensor_slices(test["test"]), args.batch_size, 1, False, 0)]
    layers = {"hash_table": naive_bayes.NaiveBayesScore(counts.keys, ratios, order, id_space),
              "binary_search": BinarySearchScore(counts.keys, ratios, order, id_space)}
    traced = {name: tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.int64)])
              for name, layer in layers.items()}
    scores = {name: np.concatenate([fn(ids).numpy().sum(axis=1) for ids in batches]) for name, fn in traced.items()}
    seconds: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(args.rounds):
        for name, fn in traced.items():
            started = time.perf_counter()
            for ids in batches:
                fn(ids)
            seconds[name].append(round(time.perf_counter() - started, 3))
        print({name: s[-1] for name, s in seconds.items()}, flush=True)
    best = {name: min(s) for name, s in seconds.items()}
    result = {
        "what": f"seconds per pass of the n-gram score over the {args.dataset} test split "
                f"({sum(len(b) for b in batches)} texts, batches of {args.batch_size}), Transform output of "
                f"{args.output_dir}",
        "protocol": f"{args.rounds} rounds, the two layers in turn in one process, each traced as served; "
                    "best of the rounds compared",
        "ngram_order": order, "distinct_ngrams": int(counts.keys.size), "counting_seconds": round(count_seconds, 1),
        "pass_seconds": seconds, "best_pass_seconds": best,
        "binary_search_over_hash_table": round(best["binary_search"] / best["hash_table"], 2),
        "largest_score_difference": float(np.abs(scores["hash_table"] - scores["binary_search"]).max()),
    }
    output = args.output or RESULTS / f"ngram_lookup_{args.dataset}.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("best_pass_seconds", "binary_search_over_hash_table",
                                             "largest_score_difference")}), "->", output)


if __name__ == "__main__":
    main()
