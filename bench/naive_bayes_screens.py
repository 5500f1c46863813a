"""Cheap screens for more accurate n-gram scores, before any pipeline change (issue 22).

Each screen fits the n-gram scorer alone, outside the pipeline, on the
pipeline's own splits (the dataset's source read by ExampleGen's reader,
components/review_example_gen.assign_split) and tokens (the Transform's
tokenizer), and compares validation accuracy under a rule written before it
ran (stored in the results file). Test accuracy is only reported.

* IMDB (NBSVM: L2 logistic regression, C = 1, on ratio-scaled binarized
  1-3-grams, as `training.naive_bayes_logistic`):
  - `cut_320`: the text cut to max_len tokens, head and tail, as the Trainer counts it;
  - `vocabulary_20k`: the whole text, the 20k most frequent training words, others as one OOV word;
  - `every_word`: the whole text, every word;
  - `self_training`: `vocabulary_20k` plus the unlabeled reviews (minus every eval or
    test text and repeat, pretraining.build_corpus), labelled by `vocabulary_20k`'s own
    predictions, the most confident half.
* polarity (binarized 1-2-grams, the Naive Bayes ratios alone and NBSVM):
  - `polarity_only`: the training split;
  - `plus_imdb_reviews`: plus IMDB's 25k labelled training reviews as extra documents;
  - `plus_imdb_sentences`: plus the same reviews cut into sentences, each with its review's label.

    python bench/naive_bayes_screens.py --dataset imdb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402
from sklearn.feature_extraction.text import CountVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from components import review_example_gen, review_sources  # noqa: E402
from models import preprocessing, pretraining  # noqa: E402
from models.transfer import sentences  # noqa: E402
from pipeline import configs, data_sources  # noqa: E402

RULES = {
    "imdb": "Written 05:40 and 06:12 UTC 2026-11-30, before the runs: a variant goes to the pipeline only if "
            "its validation accuracy beats vocabulary_20k's by >= 0.5 points (every_word, self_training; "
            "the stacked model gains about half of what the n-grams gain), or, for the whole text against "
            "cut_320, by >= 0.3 points.",
    "polarity": "Written 05:58 UTC 2026-11-30, before the runs: a variant goes to the pipeline only if its "
                "validation accuracy beats polarity_only's (the same scorer) by >= 1.0 point, about one "
                "standard error on ~1,050 sentences.",
}
OOV = b"<oov>"


def splits(dataset: configs.DatasetConfig, data_dir: str | None) -> dict[str, list]:
    """The dataset's reviews by pipeline split, as ExampleGen assigns them."""
    path = data_sources.resolve_input(dataset, data_dir=data_dir, download=False)
    by_split: dict[str, list] = {name: [] for name in review_example_gen.SPLITS}
    for row in review_sources.read(str(path)):
        if isinstance(row, review_sources.Review):
            by_split[review_example_gen.assign_split(row, dataset.eval_percent, dataset.test_percent)].append(row)
    return by_split


def tokens(texts: list[str]) -> list[list[bytes]]:
    return [list(t) for t in pretraining.tokenize_corpus(texts, "word")]


def head_and_tail(docs: list[list[bytes]], max_len: int) -> list[list[bytes]]:
    return [preprocessing.truncate_list(d, max_len) for d in docs]


def fit_score(train_docs, labels, evaluated, order: int, logistic: bool) -> tuple[int, list[np.ndarray]]:
    """Binarized n-grams' log-count ratios (alpha 1); with `logistic`, NBSVM's regression on them."""
    vectorizer = CountVectorizer(analyzer=lambda d: [b" ".join(d[i:i + n]) for n in range(1, order + 1)
                                                     for i in range(len(d) - n + 1)], binary=True)
    features = vectorizer.fit_transform(train_docs)
    positive = 1 + np.asarray(features[labels == 1].sum(0)).ravel()
    negative = 1 + np.asarray(features[labels == 0].sum(0)).ravel()
    scale = sparse.diags(np.log(positive / positive.sum()) - np.log(negative / negative.sum()))
    if not logistic:
        return features.shape[1], [vectorizer.transform(d) @ scale.diagonal() for d in evaluated]
    regression = LogisticRegression(C=1.0, solver="liblinear").fit(features @ scale, labels)
    return features.shape[1], [regression.decision_function(vectorizer.transform(d) @ scale) for d in evaluated]


class Screen:
    def __init__(self, eval_labels, test_labels):
        self.eval_labels, self.test_labels, self.results = eval_labels, test_labels, {}

    def run(self, name, train_docs, labels, eval_docs, test_docs, order, logistic=True, extra=None):
        started = time.perf_counter()
        count, (eval_scores, test_scores, *rest) = fit_score(
            train_docs, np.asarray(labels), [eval_docs, test_docs] + ([extra] if extra is not None else []),
            order, logistic)
        self.results[name] = {"train_documents": len(train_docs), "ngrams": count,
                              "val_accuracy": float(np.mean((eval_scores > 0) == self.eval_labels)),
                              "test_accuracy": float(np.mean((test_scores > 0) == self.test_labels)),
                              "seconds": round(time.perf_counter() - started, 1)}
        print(name, self.results[name], flush=True)
        return rest[0] if rest else None


def imdb_screens(dataset, data, data_dir) -> dict:
    train, valid, test = (tokens([r.text for r in data[s]]) for s in review_example_gen.SPLITS)
    labels = np.array([r.label for r in data["train"]])
    screen = Screen(np.array([r.label for r in data["eval"]]), np.array([r.label for r in data["test"]]))
    kept = {w for w, _ in Counter(w for d in train for w in d).most_common(dataset.vocab_size)}

    def known(docs):
        return [[w if w in kept else OOV for w in d] for d in docs]

    unlabeled_path = data_sources.resolve_data_file(dataset.pretraining.unlabeled_sources[0], data_dir)
    corpus = pretraining.build_corpus([], {"unlabeled": pretraining.read_unlabeled(str(unlabeled_path))},
                                      [r.text for s in ("eval", "test") for r in data[s]])
    unlabeled = known(tokens(corpus.texts))
    cut = dataset.max_len
    screen.run(f"cut_{cut}", head_and_tail(known(train), cut), labels, head_and_tail(known(valid), cut),
               head_and_tail(known(test), cut), 3)
    scores = screen.run("vocabulary_20k", known(train), labels, known(valid), known(test), 3, extra=unlabeled)
    screen.run("every_word", train, labels, valid, test, 3)
    confident = np.argsort(-np.abs(scores))[: len(scores) // 2]
    screen.run("self_training", known(train) + [unlabeled[i] for i in confident],
               np.concatenate([labels, (scores[confident] > 0).astype(int)]), known(valid), known(test), 3)
    return {"unlabeled_corpus": corpus.counts, "variants": screen.results}


def polarity_screens(dataset, data, data_dir) -> dict:
    train, valid, test = (tokens([r.text for r in data[s]]) for s in review_example_gen.SPLITS)
    labels = [r.label for r in data["train"]]
    imdb_splits = splits(configs.DATASETS["imdb"], data_dir)
    imdb = imdb_splits["train"] + imdb_splits["eval"]  # never IMDB's test reviews
    imdb_reviews, imdb_labels = tokens([r.text for r in imdb]), [r.label for r in imdb]
    cut = [(s, r.label) for r in imdb for s in sentences(r.text)]
    imdb_sentences, sentence_labels = tokens([s for s, _ in cut]), [y for _, y in cut]
    screen = Screen(np.array([r.label for r in data["eval"]]), np.array([r.label for r in data["test"]]))
    for scorer, logistic in (("ratios", False), ("nbsvm", True)):
        screen.run(f"polarity_only_{scorer}", train, labels, valid, test, 2, logistic)
        screen.run(f"plus_imdb_reviews_{scorer}", train + imdb_reviews, labels + imdb_labels, valid, test, 2,
                   logistic)
        screen.run(f"plus_imdb_sentences_{scorer}", train + imdb_sentences, labels + sentence_labels, valid, test,
                   2, logistic)
    return {"imdb_sentences": len(cut), "variants": screen.results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(RULES), default="imdb")
    parser.add_argument("--data-dir", help="data directory (default: as `python -m pipeline run`)")
    parser.add_argument("--output")
    args = parser.parse_args()
    dataset = configs.DATASETS[args.dataset]
    started = time.time()
    data = splits(dataset, args.data_dir)
    result = {"dataset": dataset.name, "rule": RULES[dataset.name],
              "split_sizes": {name: len(rows) for name, rows in data.items()}}
    result.update((imdb_screens if dataset.name == "imdb" else polarity_screens)(dataset, data, args.data_dir))
    result["wall_seconds"] = round(time.time() - started, 1)
    output = Path(args.output or RESULTS / f"naive_bayes_screens_{dataset.name}.json")
    output.write_text(json.dumps(result, indent=2))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
