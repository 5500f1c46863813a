"""`python -m pipeline predict`: label, probability, per-token attention and trajectory."""

import io
import json
import sys

import numpy as np
import pytest

from components import versioned_pusher
from pipeline import predict
from pipeline.__main__ import main
from tests import serving_models


@pytest.fixture(scope="module")
def served(tiny_transform, tmp_path_factory):
    _, tft_output = tiny_transform
    root = tmp_path_factory.mktemp("predict")
    model = serving_models.export_tiny_model(tft_output, str(root / "export"))
    base = root / "serving"
    versioned_pusher.push_atomically(model, str(base), version=5)
    return base


def test_predict_gives_tokens_attention_and_trajectory_in_one_pass(served):
    signature = predict.load_signature(predict.resolve_model_dir(served))
    texts = ["A good movie, a good cast!", "", "ünïcödé 🎬 text"]
    results = predict.predict(signature, texts)
    assert [r["tokens"] for r in results] == [["a", "good", "movie", ",", "a", "good", "cast", "!"], [],
                                              ["ünïcödé", "🎬", "text"]]
    for result in results:
        n = result["length"]
        assert len(result["attention"]) == len(result["trajectory"]) == len(result["tokens"]) == n
        assert 0.0 <= result["probability"] <= 1.0
        assert result["label"] == int(result["probability"] >= 0.5)
        if n:
            assert sum(result["attention"]) == pytest.approx(1.0, abs=1e-4)
            # The trajectory ends at the prediction for the whole text.
            assert result["trajectory"][-1] == pytest.approx(result["probability"], abs=1e-5)
    # The trajectory is the model's, not a recomputation: a prefix scored alone gives the same first steps
    # only for a unidirectional reader, so check just that it varies along the text and stays in [0, 1].
    assert np.all((np.array(results[0]["trajectory"]) >= 0) & (np.array(results[0]["trajectory"]) <= 1))


def test_resolve_model_dir_picks_the_highest_version(served, tiny_transform, tmp_path):
    versioned_pusher.push_atomically(str(served / "5"), str(tmp_path), version=3)
    versioned_pusher.push_atomically(str(served / "5"), str(tmp_path), version=12)
    assert predict.resolve_model_dir(tmp_path) == tmp_path / "12"
    with pytest.raises(FileNotFoundError):
        predict.resolve_model_dir(tmp_path / "nothing")


def test_command_line_texts_file_and_stdin(served, tmp_path, capsys, monkeypatch):
    assert main(["predict", "--model", str(served), "a good movie", "bad"]) == 0
    out = capsys.readouterr().out
    assert f"model: {served / '5'}" in out
    assert "'a good movie'" in out and "P(pos) after it" in out and "movie" in out

    reviews = tmp_path / "reviews.txt"
    reviews.write_text("first review\n\nsecond one\n", encoding="utf-8")
    assert main(["predict", "--model", str(served), "--json", "--file", str(reviews)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["first review", "second one"]
    assert lines[0]["tokens"] == ["first", "review"] and len(lines[0]["trajectory"]) == 2

    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\n"))
    assert main(["predict", "--model", str(served), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == ["from", "stdin"]


def test_command_line_without_a_model_says_so(tmp_path, capsys):
    assert main(["predict", "--output-dir", str(tmp_path), "text"]) == 1
    assert "no SavedModel and no pushed version" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path)]) == 2
