"""InfraValidator without a TF Serving binary: is the candidate servable at all?

TFX's InfraValidator starts a model server with the candidate and sends it
requests. Here the "server" is a separate Python process that loads the
candidate SavedModel the way `pipeline serve` does and sends canary requests of
raw text through `serving_default`: a short review, a long one, the empty
string, non-ASCII text, emoji, and 20,000 characters. For each it checks the
output keys, shapes and dtypes, that every value is finite and in [0, 1], that
the label agrees with the probability, that attention and trajectory are 0 past
the text's length, that a star rating (a model with the rating head) lies in
[1, 10], that the result for a text is the same alone and inside a
padded batch with every other canary, and that the slowest canary answers within
the latency budget. A crash of the child process (a signature that raises, a
segfault, a hang past the timeout) is a failed check, not a failed pipeline run.

The result is an `InfraBlessing` artifact (custom property `blessed`, and an
INFRA_BLESSED or INFRA_NOT_BLESSED file beside `infra_validation.json`, which
lists every check); the Pusher requires it alongside the Evaluator's blessing.

`python -m components.infra_validator MODEL_DIR RESULT_JSON [--latency-budget-ms N]`
is the child process; `validate_model()` runs it and reads the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from models import features

MODEL_KEY = "model"
BLESSING_KEY = "blessing"
LATENCY_BUDGET_KEY = "latency_budget_ms"
TIMEOUT_KEY = "timeout_s"
RESULT_FILE = "infra_validation.json"
BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"

SERVING_SIGNATURE = "serving_default"
# The server answers output_filters without per-token outputs from this one: it must agree.
PER_TEXT_SIGNATURE = features.PER_TEXT_SIGNATURE
OUTPUT_KEYS = ("probability", "label", "attention", "trajectory", "length")
# Checked where the model has it (the rating head): within the star scale.
RATING_KEY = features.PREDICTED_RATING
RATING_RANGE = (features.RATING_MIN, features.RATING_MAX)
TOLERANCE = 1e-4
LATENCY_REPEATS = 5

CANARIES: dict[str, str] = {
    "short": "a gorgeous, witty film",
    "long": (
        "I went in expecting very little and came out genuinely moved. The first hour is slow, "
        "almost too patient, but the performances carry it: the lead never overplays a scene, and "
        "the supporting cast give the small town a life of its own. <br /><br />The script has its "
        "problems. A subplot about the brother goes nowhere, and the ending is tied up a little too "
        "neatly. Still, the photography is beautiful, the music is used sparingly, and by the last "
        "scene I cared about every one of these people. Not perfect, but well worth your time. "
    ) * 3,
    "empty": "",
    "non_ascii": "Très bon film ! Naïve, drôle, émouvant — ça valait le coup. Отличный фильм. 素晴らしい映画",
    "emoji": "😀😀 loved it 👍🎬🍿 would watch again ❤️",
    "20k_chars": ("great acting, dull plot, lovely music. " * 600)[:20_000],
}


# --- the child process: load, send canaries, check -------------------------------------------------


def _check_one(name: str, text: str, out: dict[str, Any], failures: list[str]) -> None:
    import numpy as np

    missing = [k for k in OUTPUT_KEYS if k not in out]
    if missing:
        failures.append(f"{name}: outputs lack {missing}")
        return
    probability, label = out["probability"], out["label"]
    attention, trajectory, length = out["attention"], out["trajectory"], out["length"]
    if probability.shape != (1,) or label.shape != (1,) or length.shape != (1,):
        failures.append(f"{name}: probability/label/length shapes {probability.shape}/{label.shape}/{length.shape}, "
                        "expected (1,)")
        return
    if attention.ndim != 2 or attention.shape[0] != 1 or trajectory.shape != attention.shape:
        failures.append(f"{name}: attention {attention.shape} and trajectory {trajectory.shape} must be [1, time]")
        return
    steps = attention.shape[1]
    n = int(length[0])
    if not 0 <= n <= steps:
        failures.append(f"{name}: length {n} outside [0, {steps}]")
        return
    if text.strip() and n == 0:
        failures.append(f"{name}: a non-blank text got length 0")
    for key, value in (("probability", probability), ("attention", attention), ("trajectory", trajectory)):
        value = value.astype("float64")
        if not np.all(np.isfinite(value)):
            failures.append(f"{name}: {key} has non-finite values")
        elif value.min() < 0.0 or value.max() > 1.0:
            failures.append(f"{name}: {key} outside [0, 1] ({value.min():.4g} .. {value.max():.4g})")
    if int(label[0]) not in (0, 1) or int(label[0]) != int(probability[0] >= 0.5):
        failures.append(f"{name}: label {int(label[0])} disagrees with probability {float(probability[0]):.4f}")
    if np.any(attention[0, n:] != 0) or np.any(trajectory[0, n:] != 0):
        failures.append(f"{name}: attention or trajectory non-zero past the text's length {n}")
    if n > 0 and abs(float(trajectory[0, n - 1]) - float(probability[0])) > TOLERANCE:
        failures.append(f"{name}: trajectory after the last token {float(trajectory[0, n - 1]):.6f} is not the "
                        f"probability {float(probability[0]):.6f}")
    if n > 0 and abs(float(attention[0, :n].sum()) - 1.0) > 1e-3:
        failures.append(f"{name}: attention over the text sums to {float(attention[0, :n].sum()):.4f}, not 1")
    if RATING_KEY in out:  # the rating head's star rating (model.rating_head)
        rating = np.asarray(out[RATING_KEY], dtype="float64")
        if rating.shape != (1,) or not np.all(np.isfinite(rating)):
            failures.append(f"{name}: rating {rating!r} is not one finite value")
        elif not RATING_RANGE[0] <= float(rating[0]) <= RATING_RANGE[1]:
            failures.append(f"{name}: rating {float(rating[0]):.4g} outside [{RATING_RANGE[0]:g}, {RATING_RANGE[1]:g}]")


def _check_per_text(per_text, serving_default_answer: dict[str, Any], texts: list[str],
                    failures: list[str]) -> None:
    """The per-text signature answers the canaries as serving_default did, less the per-token outputs."""
    import numpy as np
    import tensorflow as tf

    name = PER_TEXT_SIGNATURE
    try:
        got = {k: v.numpy() for k, v in per_text(text=tf.constant(texts, dtype=tf.string)).items()}
    except Exception as error:
        failures.append(f"{name} raised {type(error).__name__}: {str(error)[:300]}")
        return
    for key in sorted(set(serving_default_answer) - {"attention", "trajectory"}):
        expected = serving_default_answer[key]
        if key not in got:
            failures.append(f"{name}: no {key!r} output")
        elif got[key].shape != expected.shape or not np.allclose(got[key], expected, atol=TOLERANCE):
            failures.append(f"{name}: {key} differs from serving_default's on the canaries")


def run_canaries(model_dir: str, latency_budget_ms: float) -> dict[str, Any]:
    """Loads the model in this process and checks it; returns the result (JSON-serializable)."""
    import numpy as np
    import tensorflow as tf

    result: dict[str, Any] = {"model_dir": model_dir, "latency_budget_ms": latency_budget_ms, "checks": {}}
    failures: list[str] = []
    started = time.perf_counter()
    model = tf.saved_model.load(model_dir)
    result["load_s"] = round(time.perf_counter() - started, 3)
    if SERVING_SIGNATURE not in model.signatures:
        return {**result, "blessed": False, "failures": [f"no {SERVING_SIGNATURE!r} signature"]}
    serve = model.signatures[SERVING_SIGNATURE]

    def call(texts: list[str]) -> dict[str, Any]:
        return {k: v.numpy() for k, v in serve(text=tf.constant(texts, dtype=tf.string)).items()}

    alone: dict[str, dict[str, Any]] = {}
    latencies: dict[str, float] = {}
    for name, text in CANARIES.items():
        try:
            alone[name] = call([text])  # also the warm-up for this shape
            times = []
            for _ in range(LATENCY_REPEATS):
                t0 = time.perf_counter()
                call([text])
                times.append((time.perf_counter() - t0) * 1000.0)
            latencies[name] = round(float(np.median(times)), 2)
        except Exception as error:  # a signature that raises is a failed check
            failures.append(f"{name}: serving_default raised {type(error).__name__}: {str(error)[:300]}")
            continue
        before = len(failures)
        _check_one(name, text, alone[name], failures)
        result["checks"][name] = {"ok": len(failures) == before, "latency_ms": latencies[name],
                                  "length": int(alone[name]["length"][0]) if "length" in alone[name] else None,
                                  "probability": float(alone[name]["probability"][0])
                                  if "probability" in alone[name] else None}

    # The same texts in one padded batch must give the same answers.
    if len(alone) == len(CANARIES):
        names = list(CANARIES)
        try:
            batch = call([CANARIES[n] for n in names])
            if batch["probability"].shape != (len(names),):
                failures.append(f"batch: probability shape {batch['probability'].shape}, expected ({len(names)},)")
            else:
                for i, name in enumerate(names):
                    single = alone[name]
                    n = int(single["length"][0])
                    if int(batch["length"][i]) != n:
                        failures.append(f"batch: {name} length {int(batch['length'][i])} in a batch, {n} alone")
                        continue
                    if abs(float(batch["probability"][i]) - float(single["probability"][0])) > TOLERANCE:
                        failures.append(f"batch: {name} probability {float(batch['probability'][i]):.6f} in a "
                                        f"batch, {float(single['probability'][0]):.6f} alone")
                    if RATING_KEY in single and abs(float(batch[RATING_KEY][i]) - float(single[RATING_KEY][0])) > (
                            TOLERANCE * RATING_RANGE[1]):
                        failures.append(f"batch: {name} rating {float(batch[RATING_KEY][i]):.6f} in a batch, "
                                        f"{float(single[RATING_KEY][0]):.6f} alone")
                    for key in ("attention", "trajectory"):
                        if not np.allclose(batch[key][i, :n], single[key][0, :n], atol=TOLERANCE):
                            failures.append(f"batch: {name} {key} differs in a batch from alone")
                        if np.any(batch[key][i, n:] != 0):
                            failures.append(f"batch: {name} {key} non-zero on padding")
        except Exception as error:
            failures.append(f"batch: serving_default raised {type(error).__name__}: {str(error)[:300]}")
        else:
            if PER_TEXT_SIGNATURE in model.signatures:
                _check_per_text(model.signatures[PER_TEXT_SIGNATURE], batch, [CANARIES[n] for n in names], failures)

    if latencies:
        slowest = max(latencies, key=latencies.get)
        result["slowest_canary"] = {"name": slowest, "latency_ms": latencies[slowest]}
        if latencies[slowest] > latency_budget_ms:
            failures.append(f"latency: {slowest} took {latencies[slowest]:.1f} ms (median of {LATENCY_REPEATS}), "
                            f"budget {latency_budget_ms:.1f} ms")
    result["failures"] = failures
    result["blessed"] = not failures
    return result


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.infra_validator")
    parser.add_argument("model_dir")
    parser.add_argument("result_json")
    parser.add_argument("--latency-budget-ms", type=float, default=2000.0)
    args = parser.parse_args(argv)
    result = run_canaries(args.model_dir, args.latency_budget_ms)
    with open(args.result_json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
    return 0 if result["blessed"] else 3


# --- the parent: run the child, read its verdict ---------------------------------------------------


def validate_model(model_dir: str, result_json: str, latency_budget_ms: float = 2000.0,
                   timeout_s: float = 600.0) -> dict[str, Any]:
    """Runs the canaries in a separate Python process; a crash or hang is a failure."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    cmd = [sys.executable, "-m", "components.infra_validator", model_dir, result_json,
           "--latency-budget-ms", str(latency_budget_ms)]
    if os.path.exists(result_json):
        os.remove(result_json)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        result = {"blessed": False, "failures": [f"the model process did not finish within {timeout_s:.0f} s"]}
    else:
        if os.path.exists(result_json):
            with open(result_json, encoding="utf-8") as f:
                result = json.load(f)
        else:
            result = {"blessed": False, "failures": [
                f"the model process exited with {proc.returncode} before checking: {proc.stderr[-2000:]}"]}
        result["returncode"] = proc.returncode
    with open(result_json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
    return result


class InfraValidatorSpec(ComponentSpec):
    PARAMETERS = {
        LATENCY_BUDGET_KEY: ExecutionParameter(type=float),
        TIMEOUT_KEY: ExecutionParameter(type=float, optional=True),
    }
    INPUTS = {MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing)}


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        from tfx.utils import path_utils

        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
        os.makedirs(blessing.uri, exist_ok=True)
        result = validate_model(
            model_dir, os.path.join(blessing.uri, RESULT_FILE),
            latency_budget_ms=float(exec_properties[LATENCY_BUDGET_KEY]),
            timeout_s=float(exec_properties.get(TIMEOUT_KEY) or 600.0),
        )
        blessed = bool(result.get("blessed"))
        open(os.path.join(blessing.uri, BLESSED_FILE if blessed else NOT_BLESSED_FILE), "w").close()
        blessing.set_int_custom_property("blessed", int(blessed))
        blessing.set_string_custom_property("failures", "; ".join(result.get("failures", []))[:4000])
        if blessed:
            logging.info("InfraValidator: %s passed every canary check", model_dir)
        else:
            logging.warning("InfraValidator: %s NOT blessed: %s", model_dir, result.get("failures"))


class InfraValidator(base_component.BaseComponent):
    """Loads the candidate in a separate process and sends it canary requests; writes an InfraBlessing."""

    SPEC_CLASS = InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, latency_budget_ms: float = 2000.0, timeout_s: float = 600.0):
        blessing = types.Channel(type=standard_artifacts.InfraBlessing)
        super().__init__(spec=InfraValidatorSpec(
            model=model, blessing=blessing, latency_budget_ms=float(latency_budget_ms), timeout_s=float(timeout_s)))


if __name__ == "__main__":
    sys.exit(_child_main())
