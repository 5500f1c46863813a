"""A model card for each pushed model, written by the report code.

Model Card Toolkit does not install beside the locked TFX stack, so this module
writes the same sections from what the run report already gathers
(`report.ReportData`: the run summary, TFMA slices, TFDV statistics, the
Trainer's hyperparameters, the Evaluator's gate and baseline, the export's
signatures). The card is a dict whose keys follow Model Card Toolkit's schema
(`model_details`, `model_parameters`, `quantitative_analysis`,
`considerations`), plus two sections of this project's own: `evaluation_gate`
(thresholds, baseline, outcome) and `deployment` (pushed or not, and why).
It is written as JSON and as Markdown rendered from the same dict.

Where: beside the pushed version, `<serving dir>/model_cards/<version>.{md,json}`.
Not inside the numbered version directory: the Pusher hashes version
directories to recognise a model it already serves, and the server loads
every ASCII-numbered directory as a version. A run that pushed nothing
writes `<report dir>/model_card.{md,json}`, saying why.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from models import features

SCHEMA_VERSION = "0.0.2"  # Model Card Toolkit's JSON schema the keys follow
CARDS_DIR = "model_cards"
UNPUSHED_STEM = "model_card"
# Metrics listed per slice, in this order (TFMA's names).
SLICE_METRICS = ("example_count", "binary_accuracy", "auc", "precision", "recall")
CONFUSION = ("true_positives", "false_positives", "true_negatives", "false_negatives")
METRIC_LABELS = {"binary_accuracy": "accuracy", "auc": "AUC", "example_count": "examples"}
# The rating head's metrics, listed where the run has them.
RATING_METRICS = (features.RATING_MAE_METRIC, features.RATING_PEARSON_METRIC)

# What each dataset's model is for; other datasets get the generic text.
DATASET_USE = {
    "polarity": {
        "level": "sentence",
        "data": "sentence polarity dataset v1.0 (Pang and Lee, 2005): 10,662 snippets of English film "
                "reviews from Rotten Tomatoes, half positive, half negative, about 20 words each",
        "use": "the sentiment (positive or negative) of a single English sentence or short snippet about a "
               "film, like the review snippets it was trained on",
        "mismatch": "It was trained on single sentences of about 20 words and reads at most {max_len} tokens: "
                    "on a whole review of several paragraphs it reads the start and end only and its "
                    "accuracy there is unmeasured; use a review-level model (dataset imdb) for whole reviews.",
    },
    "imdb": {
        "level": "review",
        "data": "Large Movie Review Dataset v1.0 (Maas et al., 2011): English IMDB film reviews of a paragraph "
                "or more, labelled positive or negative (the full dataset: 25,000 train and 25,000 test reviews, "
                "half of each class)",
        "use": "the overall sentiment (positive or negative) of a whole English film review of a paragraph or "
               "more, like the IMDB reviews it was trained on",
        "mismatch": "It was trained on whole reviews (texts past {max_len} tokens keep their first and last "
                    "tokens): on a single sentence or a headline it is outside its training data and its "
                    "accuracy there is unmeasured; use a sentence-level model (dataset polarity) for those.",
    },
}
GENERIC_USE = {
    "level": "text",
    "data": "the labelled English texts the pipeline read",
    "use": "the sentiment (positive or negative) of English texts like those it was trained on",
    "mismatch": "It reads at most {max_len} tokens; on texts much shorter or longer than its training texts "
                "its accuracy is unmeasured.",
}


@dataclasses.dataclass
class WrittenCard:
    markdown: Path
    json: Path
    pushed: bool
    version: str | None
    card: dict[str, Any]


# --- where ----------------------------------------------------------------------------------------


def pushed_version_dir(data) -> Path | None:
    path = (data.summary or {}).get("pushed_path")
    return Path(path) if path else None


def card_paths(data, report_dir: Path) -> tuple[Path, Path]:
    """(markdown, json): beside the pushed version in the serving directory, else under the report dir."""
    version_dir = pushed_version_dir(data)
    if version_dir is None:
        return report_dir / f"{UNPUSHED_STEM}.md", report_dir / f"{UNPUSHED_STEM}.json"
    serving_dir = Path(data.serving_dir) if getattr(data, "serving_dir", None) else version_dir.parent
    directory = serving_dir / CARDS_DIR
    return directory / f"{version_dir.name}.md", directory / f"{version_dir.name}.json"


def not_pushed_reason(data) -> str | None:
    """Why the run pushed nothing (None when it pushed), without a final full stop."""
    reason = _not_pushed_reason(data)
    return reason.rstrip(". ") if reason else None


def _not_pushed_reason(data) -> str | None:
    summary = data.summary or {}
    if summary.get("pushed_path"):
        return None
    if summary.get("already_served_version") is not None:
        return (f"the same model is already served as version {summary['already_served_version']}; "
                "its card is beside that version")
    if not summary.get("model_uri") and not data.history and not data.slices:
        return "no model was trained in this run"
    if summary.get("blessed") is False:
        failures = (data.gate or {}).get("failures") or []
        detail = ": " + "; ".join(failures) if failures else ""
        return "the Evaluator did not bless it (not every threshold of the gate was met)" + detail
    if data.infra and data.infra.get("blessed") is False:
        failures = data.infra.get("failures") or []
        return "infra validation failed" + (": " + "; ".join(failures) if failures else "")
    if summary.get("blessed") is None:
        return "the run has no evaluation, so nothing could be blessed"
    return "the Pusher did not push it"


# --- what -----------------------------------------------------------------------------------------


def dataset_name(data) -> str:
    return str((data.training or {}).get("dataset") or data.pipeline_name.removeprefix("sentiment-"))


def architecture(training: dict[str, Any]) -> str:
    """The model in one paragraph, from the Trainer's custom_config (configs.trainer_hyperparameters)."""
    model = training.get("model") or {}
    train = training.get("training") or {}
    if not model:
        return "Not recorded for this run."
    cell = {"lstm": "LSTM", "gru": "GRU", "simple": "simple RNN"}.get(model.get("cell"), str(model.get("cell")))
    layers = model.get("rnn_layers", 1)
    direction = "bidirectional " if model.get("bidirectional") else ""
    pooling = {"attention": "attention pooling", "max": "max pooling", "last": "the last state",
               "attention_max": "attention and max pooling"}.get(model.get("pooling"), str(model.get("pooling")))
    embeddings = ("pretrained vectors ({}), {}".format(
        os.path.basename(str(model["pretrained_embeddings"])),
        "fine-tuned" if model.get("trainable_embeddings", True) else "frozen")
        if model.get("pretrained_embeddings") else "learnt from scratch")
    parts = [
        f"Many-to-one recurrent classifier: word embeddings of {model.get('embedding_dim')} dimensions "
        f"({embeddings}), {layers} {direction}{cell} layer(s) of {model.get('rnn_units')} units, {pooling}, "
        f"a dense layer of {model.get('dense_units')} units and one sigmoid output (P(positive)).",
        f"Vocabulary {training.get('vocab_size')} words learnt from the training split"
        + (f" plus the {training['pretrained_vocabulary']} most frequent pretrained words"
           if training.get("pretrained_vocabulary") else "")
        + f"; at most {training.get('max_len')} tokens per text.",
    ]
    if (model.get("ensemble_size") or 1) > 1:
        parts.append(f"An ensemble of {model['ensemble_size']} such classifiers, logits averaged.")
    if train.get("naive_bayes_ngrams"):
        parts.append(f"Naive Bayes log-count ratios of 1..{train['naive_bayes_ngrams']}-grams stacked with the "
                     "network's logit (fitted on the validation split).")
    elif train.get("calibrate_logit"):
        parts.append("The logit is Platt-scaled on the validation split.")
    if train:
        parts.append(f"Trained with batch {train.get('batch_size')}, learning rate {train.get('learning_rate')}, "
                     f"up to {train.get('epochs')} epochs, early stopping on {train.get('early_stopping_monitor')}, "
                     f"seed {train.get('seed')}.")
    return " ".join(parts)


def _format_map(signature: dict[str, Any], side: str) -> list[dict[str, str]]:
    """Model Card Toolkit's input/output_format_map: tensor name -> "dtype [shape]"."""
    return [{"key": name, "value": str(spec)} for name, spec in sorted((signature.get(side) or {}).items())]


def _splits(data) -> list[dict[str, Any]]:
    source = (data.data_source or {})
    link = source.get("input_base") or ""
    rows = []
    for split, entry in (data.statistics or {}).items():
        count = int(entry.get("num_examples", 0))
        rows.append({"name": split, "link": link, "num_examples": count,
                     "description": f"{split} split: {count} examples (TFDV statistics of this run)"})
    return rows


def _performance_metrics(data) -> list[dict[str, Any]]:
    metrics = []
    for slice_name, values in (data.slices or {}).items():
        names = list(SLICE_METRICS) + list(RATING_METRICS) + (list(CONFUSION) if slice_name == "Overall" else [])
        for name in names:
            if name in values:
                metrics.append({"type": name, "value": float(values[name]), "slice": slice_name})
    return metrics


def _gate(data) -> dict[str, Any]:
    gate = dict(data.gate or {})
    baseline = dict(data.baseline or {})
    return {
        "thresholds": gate.get("thresholds") or {},
        "slice": "Overall (test split)",
        "blessed": (data.summary or {}).get("blessed"),
        "failures": gate.get("failures") or [],
        "baseline": baseline or None,
        "infra_blessed": (data.infra or {}).get("blessed"),
    }


def build_card(data) -> dict[str, Any]:
    """The card as a dict (Model Card Toolkit's section names) from a report.ReportData."""
    summary = data.summary or {}
    dataset = dataset_name(data)
    use = DATASET_USE.get(dataset, GENERIC_USE)
    max_len = (data.training or {}).get("max_len", "?")
    version_dir = pushed_version_dir(data)
    version = version_dir.name if version_dir else None
    reason = not_pushed_reason(data)
    baseline = data.baseline or {}
    overall = (data.slices or {}).get("Overall", {})
    if baseline.get("model_uri"):
        against = f"version {baseline['version']}" if baseline.get("version") else baseline["model_uri"]
        diff = f"Compared with the latest blessed model ({against})"
        if "binary_accuracy" in overall and "binary_accuracy" in (baseline.get("metrics") or {}):
            change = overall["binary_accuracy"] - baseline["metrics"]["binary_accuracy"]
            diff += f": test accuracy {change:+.4f}"
        diff += "."
    else:
        diff = "No earlier blessed model: the first model of this pipeline, gated on absolute thresholds only."
    export = data.export or {}
    serving = export.get("serving_default") or {}
    ingestion = summary.get("ingestion") or {}
    data_description = f"{use['data']}."
    source = data.data_source or {}
    if "eval_percent" in source:
        data_description += (f" Split: a source with an official train/test split keeps it and holds "
                             f"{_cell(source['eval_percent'])}% of train out for early stopping (eval); any other "
                             f"source is split by a stable hash of the text, {_cell(source['eval_percent'])}% eval "
                             f"and {_cell(source.get('test_percent', '?'))}% test. The vocabulary is learnt from "
                             "the train split only.")
    if summary.get("span") is not None:
        spans = ", ".join(str(s) for s in summary.get("training_spans") or []) or str(summary["span"])
        data_description += (f" This run read span {summary['span']} and trained on span(s) {spans}; the split "
                             "counts are of this run's span.")
    if ingestion:
        data_description += " Ingestion: " + ", ".join(f"{k} {v}" for k, v in sorted(ingestion.items())) + "."
    limitations = [
        use["mismatch"].format(max_len=max_len),
        "English only: every other language is out of its training data; its tokens mostly fall out of the "
        "vocabulary and the answer is close to meaningless.",
        f"The vocabulary is fixed at training time ({(data.training or {}).get('vocab_size', '?')} words from "
        "the training split"
        + (f" plus {data.training['pretrained_vocabulary']} pretrained words" if (data.training or {}).get(
            "pretrained_vocabulary") else "")
        + "): new words, names, slang and misspellings map to one out-of-vocabulary token.",
        "Sarcasm, irony, negation spread over a long sentence and mixed or neutral opinions are often "
        "misread: the model always answers positive or negative (P(positive) near 0.5 is not 'neutral').",
        "Measured in distribution only: the test split comes from the same source as the training data; "
        "reviews of other products, other sites or later years may score lower. The slices cover text "
        "length (and the source file), not any group of people.",
    ]
    if ingestion.get("test_texts_in_training"):
        limitations.append(f"Test texts also in the training data: {ingestion['test_texts_in_training']}, which "
                           "flatters the test metrics slightly.")
    card: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model_details": {
            "name": data.pipeline_name,
            "overview": f"Binary sentiment classifier of {use['level']}-level English film reviews, trained by "
                        f"the TFX pipeline {data.pipeline_name} (run {data.run_id})"
                        + (f" and pushed as version {version}." if version else "; not pushed."),
            "version": {"name": version or "not pushed", "date": str(data.run_id)[:10], "diff": diff},
            "path": str(version_dir) if version_dir else None,
            "owners": [{"name": "the operators of this pipeline", "contact": ""}],
            "licenses": [],
            "references": [{"reference": "https://arxiv.org/abs/1810.03993"}],
        },
        "model_parameters": {
            "model_architecture": architecture(data.training or {}),
            "data": _splits(data),
            "data_description": data_description,
            "input_format": "serving_default: a batch of raw UTF-8 texts (tensor 'text'); "
                            "serving_tf_example: serialized tf.Examples with a 'text' feature.",
            "input_format_map": _format_map(serving, "inputs"),
            "output_format": "label (1 positive, 0 negative, at P(positive) >= 0.5), probability (P(positive)), "
                             "length (tokens read), attention and trajectory (per token).",
            "output_format_map": _format_map(serving, "outputs"),
            "signatures": export,
        },
        "quantitative_analysis": {
            "performance_metrics": _performance_metrics(data),
            "evaluation_data": "the test split (see model_parameters.data), sliced overall, by text length in "
                               "characters" + (" and by source file" if any(
                                   name.startswith("source=") for name in (data.slices or {})) else ""),
            **({"rating_baseline": dict(data.rating_baseline)} if getattr(data, "rating_baseline", None) else {}),
        },
        "considerations": {
            "users": [
                {"description": "Developers and analysts who measure the sentiment of film reviews in aggregate "
                                "(dashboards, trends, sorting feedback)."},
                {"description": "The engineers who operate this pipeline and its server."},
            ],
            "use_cases": [{"description": f"Intended: {use['use']}."}],
            "out_of_scope_uses": [
                {"description": "Text in any language other than English."},
                {"description": "Decisions about people: hiring, grading, credit, insurance, moderation or "
                                "sanctions of an individual, or profiling a reviewer."},
                {"description": "Domains far from film reviews (medical, legal, financial, political text, "
                                "social media) without evaluating it there first."},
                {"description": "Emotions, stance, toxicity or neutral/mixed sentiment: it has two classes only."},
                {"description": ("Whole multi-paragraph reviews (it is a sentence-level model)."
                                 if use["level"] == "sentence" else
                                 "Single sentences or headlines (it is a review-level model)."
                                 if use["level"] == "review" else
                                 "Texts much shorter or longer than its training texts.")},
            ],
            "limitations": [{"description": text} for text in limitations],
            "tradeoffs": [{"description": "The gate checks accuracy and AUC on the overall test slice only, so "
                                          "a push cannot be blocked by a small slice by chance; a slice can "
                                          "therefore be worse than the overall figure (see the per-slice "
                                          "metrics)."}],
            "ethical_considerations": [
                {"name": "Bias learnt from review text: words about nationalities, religions, genders or other "
                         "groups can carry the sentiment of the reviews they appeared in, and no slice here "
                         "measures accuracy per group of people.",
                 "mitigation_strategy": "Not for decisions about people (out of scope above); before another "
                                        "use, evaluate on that use's own data, sliced by the groups it affects."},
                {"name": "Misuse to profile or moderate individuals from what they wrote.",
                 "mitigation_strategy": "Use in aggregate; a person reviews any action taken on one text."},
                {"name": "Personal data: the training reviews are public but name people (actors, directors, "
                         "reviewers), and the server's optional request log stores the texts sent to it.",
                 "mitigation_strategy": "The model outputs no text; request logging is off unless asked for, "
                                        "sampled, rotated and deleted after a set number of files."},
                {"name": "Over-trust in the probability outside the training data (other domains, languages, "
                         "text lengths).",
                 "mitigation_strategy": "Choose a decision threshold on your own labelled data, and watch served "
                                        "traffic for skew and drift (python -m pipeline monitor)."},
            ],
        },
        "evaluation_gate": _gate(data),
        "deployment": {
            "pushed": version_dir is not None,
            "version": version,
            "version_dir": str(version_dir) if version_dir else None,
            "serving_dir": str(data.serving_dir) if data.serving_dir else (
                str(version_dir.parent) if version_dir else None),
            "not_pushed_reason": reason,
            "run_id": data.run_id,
            "model_uri": summary.get("model_uri"),
        },
    }
    return card


# --- Markdown -------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2:  # counts, percentages
        text = str(int(value))
    elif isinstance(value, float):
        text = f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _threshold_lines(gate: dict[str, Any]) -> list[str]:
    lines = []
    for metric, bounds in sorted((gate.get("thresholds") or {}).items()):
        label = METRIC_LABELS.get(metric, metric)
        if bounds.get("lower_bound") is not None:
            lines.append(f"- {label} >= {_cell(float(bounds['lower_bound']))}")
        if bounds.get("upper_bound") is not None:
            lines.append(f"- {label} <= {_cell(float(bounds['upper_bound']))}")
        if bounds.get("max_drop") is not None:
            lines.append(f"- {label} at most {_cell(float(bounds['max_drop']))} below the baseline's")
    return lines or ["- (no thresholds recorded)"]


def to_markdown(card: dict[str, Any]) -> str:
    details, params = card["model_details"], card["model_parameters"]
    quant, considerations = card["quantitative_analysis"], card["considerations"]
    gate, deployment = card["evaluation_gate"], card["deployment"]
    version = details["version"]
    lines = [f"# Model card: {details['name']}, version {version['name']}", ""]
    if not deployment["pushed"]:
        lines += [f"**Not pushed**: {deployment['not_pushed_reason']}.", ""]
    lines += ["## Model details", "", details["overview"], "",
              f"- Version: {version['name']} ({version['date']})", f"- {version['diff']}",
              f"- Run: {deployment['run_id']}"]
    if deployment["pushed"]:
        lines.append(f"- Served from: {deployment['version_dir']}")
    if deployment.get("model_uri"):
        lines.append(f"- Trained model artifact: {deployment['model_uri']}")
    lines += ["", "### Architecture", "", params["model_architecture"], "", "### Export", "",
              f"Input: {params['input_format']}", "", f"Output: {params['output_format']}", ""]
    signatures = params.get("signatures") or {}
    if signatures:
        rows = [[name, ", ".join(f"{k}: {v}" for k, v in sorted(sig.get("inputs", {}).items())),
                 ", ".join(f"{k}: {v}" for k, v in sorted(sig.get("outputs", {}).items()))]
                for name, sig in sorted(signatures.items())]
        lines += _md_table(["signature", "inputs", "outputs"], rows)
    lines += ["## Intended use", ""]
    lines += [f"- {u['description']}" for u in considerations["use_cases"]]
    lines += ["", "Users:", ""] + [f"- {u['description']}" for u in considerations["users"]]
    lines += ["", "## Out-of-scope uses", ""] + [f"- {u['description']}" for u in considerations["out_of_scope_uses"]]
    lines += ["", "## Training data", "", params["data_description"], ""]
    if params["data"]:
        lines += _md_table(["split", "examples", "source"],
                           [[d["name"], d["num_examples"], d["link"] or "-"] for d in params["data"]])
    else:
        lines += ["No statistics in this run.", ""]
    lines += ["## Evaluation (TFMA, test split)", ""]
    by_slice: dict[str, dict[str, float]] = {}
    for metric in quant["performance_metrics"]:
        by_slice.setdefault(metric["slice"], {})[metric["type"]] = metric["value"]
    if by_slice:
        lines += _md_table(["slice"] + [METRIC_LABELS.get(m, m) for m in SLICE_METRICS],
                           [[name] + [values.get(m) for m in SLICE_METRICS] for name, values in by_slice.items()])
        overall = by_slice.get("Overall", {})
        if all(k in overall for k in CONFUSION):
            lines += ["Confusion matrix at 0.5 (overall): " + ", ".join(
                f"{k.replace('_', ' ')} {int(overall[k])}" for k in CONFUSION), ""]
        if RATING_METRICS[0] in overall:
            mae, r = overall[RATING_METRICS[0]], overall.get(RATING_METRICS[1])
            line = (f"Star rating (the rating head's `rating` output, 1-10; rated test reviews, overall): MAE "
                    f"{_cell(float(mae))} stars, Pearson's r {_cell(float(r)) if r is not None else '-'}")
            baseline = quant.get("rating_baseline") or {}
            if "class_mean_mae" in baseline:
                line += (f"; predicting the mean rating of the review's true class: MAE "
                         f"{_cell(float(baseline['class_mean_mae']))}")
            lines += [line + ". Not gated.", ""]
    else:
        lines += ["No evaluation in this run.", ""]
    lines += ["## The gate", "", f"Thresholds on the {gate['slice']} slice:", ""] + _threshold_lines(gate) + [""]
    baseline = gate.get("baseline")
    if baseline:
        if baseline.get("version"):
            lines.append(f"Baseline: the latest blessed model, version {baseline['version']} "
                         f"({baseline['model_uri']}).")
        else:
            lines.append(f"Baseline: the latest blessed model, {baseline.get('model_uri')} (never pushed).")
        if baseline.get("metrics"):
            lines.append("Baseline on this test split: " + ", ".join(
                f"{METRIC_LABELS.get(k, k)} {_cell(float(v))}" for k, v in sorted(baseline["metrics"].items())
                if k in SLICE_METRICS) + ".")
    else:
        lines.append("Baseline: none (no earlier blessed model); only the absolute thresholds applied.")
    lines += ["", f"Blessed by the Evaluator: {gate['blessed']}; infra validation: {gate['infra_blessed']}."]
    if gate["failures"]:
        lines += ["", "Failed:"] + [f"- {f}" for f in gate["failures"]]
    lines += ["", "## Known limitations", ""] + [f"- {item['description']}" for item in considerations["limitations"]]
    lines += ["", "## Trade-offs", ""] + [f"- {item['description']}" for item in considerations["tradeoffs"]]
    lines += ["", "## Ethical considerations", ""]
    for item in considerations["ethical_considerations"]:
        lines += [f"- Risk: {item['name']}", f"  Mitigation: {item['mitigation_strategy']}"]
    lines += ["", f"_Fields follow Model Card Toolkit's schema {card['schema_version']}; the JSON beside this file "
                  "holds the same card._", ""]
    return "\n".join(lines)


# --- writing --------------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def write_card(data, report_dir: Path) -> WrittenCard:
    """Writes the card as Markdown and JSON (see the module docstring for where) and returns its paths.

    After a push, a card an earlier unpushed run left under the report directory is removed, so the
    report directory never holds a stale "not pushed" card.
    """
    card = build_card(data)
    md_path, json_path = card_paths(data, report_dir)
    _write_atomically(json_path, json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    _write_atomically(md_path, to_markdown(card))
    pushed = card["deployment"]["pushed"]
    if pushed:
        for stale in (report_dir / f"{UNPUSHED_STEM}.md", report_dir / f"{UNPUSHED_STEM}.json"):
            stale.unlink(missing_ok=True)
    return WrittenCard(md_path, json_path, pushed, card["deployment"]["version"], card)
