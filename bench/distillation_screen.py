"""Distillation screen: the network trained on unlabeled reviews labelled by the served model (issue 22).

On an IMDB pipeline run's output, with the Trainer's own code and seed:

* `labelled_only`: the network on the labelled training split, then stacked
  with the n-gram score as the Trainer does (this reproduces the pipeline's
  model; with the same code its epochs match the run's log);
* `plus_teacher_labels`: the same network trained on the labelled split plus
  the unlabeled reviews, whose targets are the served model's probabilities
  (soft labels; the teacher is the pushed model, network and n-grams, fitted
  on train and stacked on eval). The unlabeled reviews exclude every eval or
  test text and every repeat (pretraining.build_corpus); they carry no rating,
  so the rating head ignores them. The n-grams are still counted on the
  labelled split only;
* with `--rounds 2`, `plus_teacher_labels_round_2`: the same again, the
  unlabeled reviews relabelled by round 1's stacked model (a student that
  becomes the teacher, as in noisy-student training).

All are stacked and scored the same way; the rule written before the first
run is in the results file. Test accuracy is only reported.

    python bench/distillation_screen.py --output-dir outputs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import train_benchmark as tb  # noqa: E402

from components.reader_pretrainer import read_split_texts  # noqa: E402
from models import features, pretraining, trainer  # noqa: E402
from models import model as model_lib  # noqa: E402
from pipeline import configs, data_sources  # noqa: E402

RULE = ("Written 05:58 UTC 2026-11-30, before any run: plus_teacher_labels goes on to pipeline work only if "
        "its stacked cross-fitted validation accuracy beats labelled_only's by >= 0.3 points. The network-alone "
        "figures and test accuracy are reported, not chosen on. Round 2 (written 06:40 UTC, before its run, "
        "after round 1's figures were known): it goes on only if its stacked cross-fitted validation accuracy "
        "beats labelled_only's by >= 0.3 points, or, toward the network-alone target, if its network-alone "
        "validation accuracy beats round 1's by >= 0.3 points.")
TEACHER_BATCH = 1000


def teacher_labels(served_dir: Path, transform_output, texts: list[str]) -> dict[str, np.ndarray]:
    """The served model's probability for each text, and the text's token ids by the Transform graph."""
    version = max((p for p in served_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    signatures = tf.saved_model.load(str(version)).signatures
    teacher = signatures.get(features.PER_TEXT_SIGNATURE) or signatures["serving_default"]
    layer = transform_output.transform_features_layer()
    probabilities, ids, lengths = [], [], []
    for start in range(0, len(texts), TEACHER_BATCH):
        chunk = tf.constant(texts[start:start + TEACHER_BATCH])
        probabilities.append(teacher(text=chunk)[features.PROBABILITY].numpy().reshape(-1))
        count = int(chunk.shape[0])
        raw = {features.TEXT: tf.reshape(chunk, [-1, 1]), features.LABEL: tf.zeros([count, 1], tf.int64),
               features.RATING: tf.sparse.from_dense(tf.zeros([count, 1], tf.int64))}
        transformed = layer(raw)
        ids.append(transformed[features.TOKEN_IDS].numpy())
        lengths.append(transformed[features.LENGTH].numpy().reshape(-1))
    return {features.TOKEN_IDS: np.concatenate(ids), features.LENGTH: np.concatenate(lengths),
            features.TRANSFORMED_LABEL: np.concatenate(probabilities).astype(np.float32)}


def student_labels(stacked: tf.keras.Model, arrays: dict[str, np.ndarray], length_multiple: int) -> np.ndarray:
    """The stacked model's probability for each text, in the arrays' order (batches of similar length)."""
    order = np.argsort(arrays[features.LENGTH], kind="stable")
    probabilities = np.empty(len(order), np.float32)
    for start in range(0, len(order), TEACHER_BATCH):
        rows = order[start:start + TEACHER_BATCH]
        ids = trainer.trim_to_longest(tf.constant(arrays[features.TOKEN_IDS][rows]),
                                      tf.constant(arrays[features.LENGTH][rows]), length_multiple)
        probabilities[rows] = tf.sigmoid(stacked(ids, training=False)[model_lib.LOGIT]).numpy()
    return probabilities


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=configs.default_output_dir(),
                        help="an IMDB pipeline run's --output-dir (its Transform output and pushed model)")
    parser.add_argument("--data-dir", help="data directory (default: as `python -m pipeline run`)")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=1)
    parser.add_argument("--skip-labelled-only", action="store_true",
                        help="do not train the labelled-only network again (its figures are the pipeline's)")
    parser.add_argument("--output")
    args = parser.parse_args()
    dataset = configs.IMDB
    dataset = configs.with_overrides(dataset, {"model.pretrained_embeddings": str(
        data_sources.resolve_embeddings(dataset.model.pretrained_embeddings, args.data_dir))})
    hyperparameters = configs.trainer_hyperparameters(dataset)
    trainer.apply_thread_settings(hyperparameters["training"])
    root = args.output_dir / "pipelines" / dataset.pipeline_name
    transform_output = tft.TFTransformOutput(tb.latest(str(root / "Transform" / "transform_graph" / "*")))
    splits = tb.transformed_splits(root, transform_output)
    examples = tb.latest(str(root / "ExampleGen" / "examples" / "*"))
    held_out = [text for split in ("eval", "test") for text in read_split_texts(examples, split, features.TEXT)]
    unlabeled_path = data_sources.resolve_data_file(dataset.pretraining.unlabeled_sources[0], args.data_dir)
    corpus = pretraining.build_corpus([], {"unlabeled": pretraining.read_unlabeled(str(unlabeled_path))}, held_out)

    started = time.perf_counter()
    unlabeled = teacher_labels(dataset.serving_dir(args.output_dir), transform_output, corpus.texts)
    labelling_seconds = time.perf_counter() - started
    # No rating: the rating head leaves these examples out.
    unlabeled[features.TRANSFORMED_RATING] = np.zeros_like(unlabeled[features.LENGTH])
    labelled = dict(splits["train"])
    labelled[features.TRANSFORMED_LABEL] = labelled[features.TRANSFORMED_LABEL].astype(np.float32)
    augmented = {key: np.concatenate([labelled[key], unlabeled[key].astype(labelled[key].dtype)]) for key in unlabeled}

    seed = int(dataset.training.seed)
    result = {"rule": RULE, "seed": seed, "unlabeled_corpus": corpus.counts,
              "teacher_labelling_seconds": round(labelling_seconds, 1),
              "teacher_positive_share": float(np.mean(unlabeled[features.TRANSFORMED_LABEL] > 0.5)), "runs": {}}
    output = Path(args.output or tb.RESULTS_DIR / "distillation_screen_imdb.json")

    def run(name, train):
        result["runs"][name], stacked = tb.train_and_stack(train, splits["eval"], splits["test"], splits["train"],
                                                           transform_output, hyperparameters, seed,
                                                           with_rating=True)
        print(name, json.dumps(result["runs"][name]), flush=True)
        output.write_text(json.dumps(result, indent=2))
        return stacked

    if not args.skip_labelled_only:
        run("labelled_only", splits["train"])
    stacked = run("plus_teacher_labels", augmented)
    if args.rounds == 2:
        relabelled = student_labels(stacked, unlabeled, int(hyperparameters["training"]["length_multiple"] or 1))
        result["round_2_positive_share"] = float(np.mean(relabelled > 0.5))
        result["round_2_label_change_share"] = float(np.mean(
            (relabelled > 0.5) != (unlabeled[features.TRANSFORMED_LABEL] > 0.5)))
        augmented[features.TRANSFORMED_LABEL][len(labelled[features.LENGTH]):] = relabelled
        run("plus_teacher_labels_round_2", augmented)
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
