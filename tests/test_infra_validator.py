"""InfraValidator: canaries through serving_default in a separate process, and its verdict gating the push."""

import json
import os

import pytest
from tfx.types import standard_artifacts

from components import infra_validator, versioned_pusher
from tests import serving_models
from tests.helpers import make_artifact


@pytest.fixture(scope="module")
def good_model(tiny_transform, tmp_path_factory):
    _, tft_output = tiny_transform
    return serving_models.export_tiny_model(tft_output, str(tmp_path_factory.mktemp("good") / "model"))


@pytest.fixture(scope="module")
def good_result(good_model, tmp_path_factory):
    return infra_validator.validate_model(good_model, str(tmp_path_factory.mktemp("good-result") / "r.json"))


def test_a_servable_model_passes_every_canary_in_a_separate_process(good_result):
    assert good_result["blessed"] is True, good_result["failures"]
    assert good_result["returncode"] == 0
    assert set(good_result["checks"]) == set(infra_validator.CANARIES)
    assert all(check["ok"] for check in good_result["checks"].values())
    assert good_result["checks"]["empty"]["length"] == 0
    # 20k characters are truncated to max_len (12 in the tiny transform), not rejected.
    assert good_result["checks"]["20k_chars"]["length"] == 12
    assert good_result["checks"]["emoji"]["length"] > 0


def test_a_model_with_the_rating_head_passes_with_its_rating_checked(tiny_transform, tmp_path):
    _, tft_output = tiny_transform
    model_dir = serving_models.export_tiny_model(tft_output, str(tmp_path / "rated"), rating_head=True)
    result = infra_validator.run_canaries(model_dir, 10_000.0)
    assert result["blessed"] is True, result["failures"]
    import tensorflow as tf

    served = tf.saved_model.load(model_dir).signatures["serving_default"](text=tf.constant(["great", ""]))
    assert infra_validator.RATING_KEY in served  # so the canaries above did check a rating


def test_the_canaries_cover_what_the_issue_lists():
    canaries = infra_validator.CANARIES
    assert canaries["empty"] == ""
    assert len(canaries["20k_chars"]) == 20_000
    assert any(ord(c) > 0xFFFF for c in canaries["emoji"])
    assert any(127 < ord(c) <= 0xFFFF for c in canaries["non_ascii"])
    assert len(canaries["long"]) > 1000 and len(canaries["short"]) < 40


def test_a_signature_that_crashes_on_empty_text_is_not_blessed(tmp_path):
    model_dir = serving_models.export_crashing_on_empty(str(tmp_path / "crashing"))
    result = infra_validator.validate_model(model_dir, str(tmp_path / "r.json"))
    assert result["blessed"] is False
    assert any(f.startswith("empty: serving_default raised") and "empty text" in f for f in result["failures"])
    # The other canaries were answered and checked.
    assert result["checks"]["short"]["ok"] is True
    assert json.loads((tmp_path / "r.json").read_text())["blessed"] is False


def test_out_of_range_outputs_and_a_blown_latency_budget_fail(tmp_path, good_model):
    bad = infra_validator.run_canaries(serving_models.export_out_of_range(str(tmp_path / "bad")), 10_000.0)
    assert bad["blessed"] is False
    assert any("probability outside [0, 1]" in f for f in bad["failures"])
    assert any(f.endswith("rating 11 outside [1, 10]") for f in bad["failures"])
    slow = infra_validator.run_canaries(good_model, latency_budget_ms=1e-6)
    assert slow["blessed"] is False
    assert [f for f in slow["failures"] if f.startswith("latency:")]
    assert not [f for f in slow["failures"] if not f.startswith("latency:")]


def test_a_per_text_signature_that_disagrees_with_serving_default_is_not_blessed(tmp_path, good_result):
    result = infra_validator.run_canaries(serving_models.export_per_text_disagreeing(str(tmp_path / "m")), 10_000.0)
    assert result["blessed"] is False
    assert sorted(result["failures"]) == [
        "serving_per_text: label differs from serving_default's on the canaries",
        "serving_per_text: probability differs from serving_default's on the canaries"]
    assert not [f for f in good_result["failures"] if "serving_per_text" in f]  # the real export's agrees


def test_a_model_that_cannot_load_is_not_blessed(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"not a saved model")
    result = infra_validator.validate_model(str(tmp_path / "broken"), str(tmp_path / "r.json"))
    assert result["blessed"] is False
    assert result["returncode"] != 0
    assert "exited with" in result["failures"][0]


def test_gate_candidate_crashing_on_empty_text_is_not_pushed_and_previous_version_stays(
        tmp_path, good_model):
    serving = tmp_path / "serving"
    previous, _ = versioned_pusher.push_atomically(good_model, str(serving))

    # The candidate: its serving signature raises on "". The Evaluator blessed it.
    model = make_artifact(standard_artifacts.Model, tmp_path / "model")
    serving_models.export_crashing_on_empty(str(tmp_path / "model" / "Format-Serving"))
    model_blessing = make_artifact(standard_artifacts.ModelBlessing, tmp_path / "model_blessing", blessed=1)
    infra_blessing = make_artifact(standard_artifacts.InfraBlessing, tmp_path / "infra_blessing")
    infra_validator.Executor().Do({"model": [model]}, {"blessing": [infra_blessing]},
                                  {"latency_budget_ms": 10_000.0, "timeout_s": 300.0})
    assert infra_blessing.get_int_custom_property("blessed") == 0
    assert (tmp_path / "infra_blessing" / infra_validator.NOT_BLESSED_FILE).exists()
    assert "empty" in infra_blessing.get_string_custom_property("failures")

    pushed = make_artifact(standard_artifacts.PushedModel, tmp_path / "pushed")
    versioned_pusher.Executor().Do(
        {"model": [model], "model_blessing": [model_blessing], "infra_blessing": [infra_blessing]},
        {"pushed_model": [pushed]},
        {"push_destination": json.dumps({"filesystem": {"base_directory": str(serving)}}),
         "custom_config": json.dumps({"versions_to_keep": 3})},
    )
    assert pushed.get_int_custom_property("pushed") == 0
    assert sorted(set(os.listdir(serving)) - {versioned_pusher.LOCK_FILE}) == [str(previous)]
