"""Scores raw texts with a pushed model: label, probability, and why.

`python -m pipeline predict "text" ...` (or `--file reviews.txt`, or `-` for
stdin, one text a line) prints for each text the label and probability, every
token with its attention weight, and the trajectory: the positive-class
probability after reading the first 1, 2, ..., n tokens. The model computes the
whole trajectory in the same pass as the prediction (one call for all texts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable

from models import features

SERVING_SIGNATURE = features.SERVING_SIGNATURE
# The export's signature without per-token outputs: when a request asks for none,
# run_signature calls it, and the model skips computing them.
PER_TEXT_SIGNATURE = features.PER_TEXT_SIGNATURE


def list_versions(base_dir: Path) -> list[int]:
    from components.versioned_pusher import list_versions as _list

    return _list(str(base_dir))


def resolve_model_dir(path: Path) -> Path:
    """A SavedModel directory, or a serving directory of versions (the highest is used)."""
    if (path / "saved_model.pb").exists():
        return path
    versions = list_versions(path)
    if not versions:
        raise FileNotFoundError(f"no SavedModel and no pushed version under {path}")
    return path / str(versions[-1])


def load_signature(model_dir: Path):
    import tensorflow as tf

    model = tf.saved_model.load(str(model_dir))
    # Keep the loaded object alive as long as the signature is used.
    signature = model.signatures[SERVING_SIGNATURE]
    signature._loaded_model = model  # noqa: SLF001
    # Exports older than the per-text signature have none: their requests use serving_default.
    signature.per_text = model.signatures.get(PER_TEXT_SIGNATURE)
    return signature


def per_text_signature(signature):
    """The loaded version's per-text signature, or None (an older export, or a stand-in)."""
    return getattr(signature, "per_text", None)


def tokens_of(texts: list[str]) -> list[list[str]]:
    """The tokens the model sees, by the same tokenizer the Transform graph uses."""
    import tensorflow as tf

    from models import preprocessing

    ragged = preprocessing.tokenize(tf.constant(texts, dtype=tf.string))
    return [[t.decode("utf-8", "replace") for t in row] for row in ragged.to_list()]


# The answer's keys per text, in this order; the per-token ones are cut to the text's own length.
# "rating" (the predicted star rating, 1-10) only from a model trained with model.rating_head.
OUTPUTS = ("label", "probability", "rating", "length", "attention", "trajectory")
FLOAT_OUTPUTS = ("probability", "rating")
PER_TOKEN_OUTPUTS = ("attention", "trajectory")


def run_signature(signature, texts: list[str], per_token: bool = True) -> dict[str, Any]:
    """One call of the serving signature: its outputs as numpy arrays, one row per text.

    With per_token False the answer may leave out attention and trajectory: the version's
    per-text signature runs if it has one (the same other outputs, computed without them).
    """
    import tensorflow as tf

    function = signature if per_token else (per_text_signature(signature) or signature)
    return {k: v.numpy() for k, v in function(text=tf.constant(texts, dtype=tf.string)).items()}


def needs_per_token(fields: Iterable[str]) -> bool:
    """Whether an answer with these output names needs the per-token outputs computed."""
    return any(name in PER_TOKEN_OUTPUTS for name in fields)


def rows(outputs: dict[str, Any], fields: Iterable[str] = OUTPUTS) -> list[dict[str, Any]]:
    """Per text, the `fields` of `outputs` (numpy arrays, one row per text) as Python values.

    label and length become ints, probability and rating floats, attention and trajectory
    lists of floats cut to the text's length (per-token fields need "length" in
    `outputs`). The values are those of float()/int() on the arrays' elements.
    A field the model does not output (rating, without a rating head) is left out.
    """
    import numpy as np

    fields = [f for f in OUTPUTS if f in set(fields) and f in outputs]
    columns = []
    lengths = np.asarray(outputs["length"]).astype(np.int64).tolist() if "length" in outputs else None
    for name in fields:
        value = np.asarray(outputs[name])
        if name in PER_TOKEN_OUTPUTS:
            columns.append([value[i, :n].tolist() for i, n in enumerate(lengths)])
        elif name in FLOAT_OUTPUTS:
            columns.append(value.astype(np.float64).tolist())
        else:
            columns.append(value.astype(np.int64).tolist())
    count = len(next(iter(outputs.values()))) if outputs else 0
    return [dict(zip(fields, values)) for values in zip(*columns)] if fields else [{} for _ in range(count)]


def predict(signature, texts: list[str], with_tokens: bool = True) -> list[dict[str, Any]]:
    """One call for all texts; per text: label, probability, length, and per-token details."""
    from models import preprocessing

    results = rows(run_signature(signature, texts))
    if with_tokens:
        for row, tokens in zip(results, tokens_of(texts)):
            # Long texts keep their start and end (models/preprocessing.truncate).
            row["tokens"] = preprocessing.truncate_list(tokens, row["length"])
    return results


def format_prediction(text: str, result: dict[str, Any], width: int = 30) -> str:
    label = "positive" if result["label"] == 1 else "negative"
    shown = text if len(text) <= 100 else text[:97] + "..."
    rating = f", rating {result['rating']:.1f}/10" if "rating" in result else ""
    lines = [f"{shown!r}", f"  {label}  (probability of positive {result['probability']:.4f}{rating}, "
             f"{result['length']} tokens)"]
    if result["length"]:
        lines.append(f"  {'token':<18} {'attention':>9}  {'P(pos) after it':>15}")
        top = max(result["attention"]) or 1.0
        for token, weight, prob in zip(result.get("tokens") or ["?"] * result["length"],
                                       result["attention"], result["trajectory"]):
            bar = "#" * int(round(width * weight / top))
            lines.append(f"  {token[:18]:<18} {weight:9.4f}  {prob:15.4f}  {bar}")
    return "\n".join(lines)


def read_texts(args_texts: list[str], file: str | None) -> list[str]:
    texts = list(args_texts)
    if file:
        stream: Iterable[str] = sys.stdin if file == "-" else open(file, encoding="utf-8")
        texts += [line.rstrip("\n") for line in stream if line.strip()]
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return texts


def predict_command(args) -> int:
    from pipeline import configs

    texts = read_texts(args.texts or [], args.file)
    if not texts:
        print("error: no text given (pass texts, --file FILE, or - for stdin)", file=sys.stderr)
        return 2
    try:
        path = Path(args.model) if args.model else configs.serving_dir_of(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        model_dir = resolve_model_dir(path)
    except FileNotFoundError as error:
        print(f"error: {error}. Run the pipeline first, or pass --model.", file=sys.stderr)
        return 1
    signature = load_signature(model_dir)
    results = predict(signature, texts)
    if args.json:
        for text, result in zip(texts, results):
            print(json.dumps({"text": text, **result}, ensure_ascii=False))
    else:
        print(f"model: {model_dir}")
        for text, result in zip(texts, results):
            print(format_prediction(text, result))
    return 0


def add_parser(commands) -> None:
    from pipeline import configs

    parser = commands.add_parser("predict", help="score texts with the pushed model (label, attention, trajectory)")
    parser.add_argument("texts", nargs="*", help="texts to score; '-' reads one text per line from stdin")
    parser.add_argument("--file", help="read one text per line from FILE ('-' for stdin)")
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    parser.add_argument("--output-dir", help="the run's output directory (default: $SENTIMENT_OUTPUT_DIR or ./outputs)")
    configs.add_overrides_option(parser)
    parser.add_argument("--model", "--model-base-dir", dest="model",
                        help="a SavedModel directory or a serving directory of versions (default: the latest "
                        "version the pipeline pushed for --dataset, --output-dir and --set)")
    parser.add_argument("--json", action="store_true", help="one JSON object per text instead of a table")
