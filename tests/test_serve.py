"""The REST server: TF Serving's predict/status API, hot-loading of new versions, and clear 4xx errors."""

import json
import shutil
import time

import numpy as np
import pytest

from components import versioned_pusher
from pipeline import predict, serve
from tests import serving_models

NAME = "sentiment-polarity"


@pytest.fixture(scope="module")
def exported(tiny_transform, tmp_path_factory):
    _, tft_output = tiny_transform
    root = tmp_path_factory.mktemp("exports")
    return [serving_models.export_tiny_model(tft_output, str(root / f"m{seed}"), seed=seed) for seed in (0, 1)]


@pytest.fixture
def server(exported, tmp_path):
    base = tmp_path / NAME
    versioned_pusher.push_atomically(exported[0], str(base), version=100)
    repository = serve.ModelRepository(base, poll_seconds=0.05)
    repository.refresh()
    app = serve.create_app(repository, NAME, max_instances=8, max_body_bytes=4096)
    repository.start()
    yield app.test_client(), repository, base
    repository.stop()


def _predict(client, body, path=f"/v1/models/{NAME}:predict"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json")


def test_status_lists_the_loaded_version(server):
    client, _, _ = server
    response = client.get(f"/v1/models/{NAME}")
    assert response.status_code == 200
    assert response.get_json() == {"model_version_status": [
        {"version": "100", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.get(f"/v1/models/{NAME}/versions/100").status_code == 200


def test_instances_and_inputs_give_the_models_predictions(server, exported):
    client, _, _ = server
    texts = ["a gorgeous, witty film", "dull", ""]
    expected = predict.predict(predict.load_signature(exported[0]), texts, with_tokens=False)
    for body in ({"instances": texts}, {"instances": [{"text": t} for t in texts]},
                 {"inputs": texts}, {"inputs": {"text": texts}}):
        response = _predict(client, body)
        assert response.status_code == 200, response.get_json()
        predictions = response.get_json()["predictions"]
        assert len(predictions) == 3
        for got, want in zip(predictions, expected):
            assert got["label"] == want["label"] and got["length"] == want["length"]
            assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
            assert len(got["attention"]) == len(got["trajectory"]) == got["length"]
            np.testing.assert_allclose(got["trajectory"], want["trajectory"], atol=1e-6)
    assert _predict(client, {"instances": texts}, f"/v1/models/{NAME}/versions/100:predict").status_code == 200


@pytest.mark.parametrize("body,status,message", [
    ("{not json", 400, "not valid JSON"),
    ("", 400, "empty request body"),
    ('["a list"]', 400, "must be a JSON object"),
    ('{"instances": [1, 2]}', 400, "instance 0: expected a string, got int"),
    ('{"instances": "x", "inputs": "y"}', 400, 'exactly one of "instances" or "inputs"'),
    ('{"instances": {"text": "x"}}', 400, "must be a list of strings"),
    ('{"instances": [{"txt": "x"}]}', 400, 'exactly the key "text"'),
    ('{"instances": []}', 400, "is empty"),
    (json.dumps({"instances": ["a"] * 9}), 413, "too many instances: 9 > 8"),
    (json.dumps({"instances": ["a" * 5000]}), 413, "over the limit of 4096 bytes"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, body, status, message):
    client, _, _ = server
    response = _predict(client, body)
    assert response.status_code == status
    assert message in response.get_json()["error"]
    assert _predict(client, {"instances": ["still fine"]}).status_code == 200


def test_unknown_model_version_and_endpoint_are_404(server):
    client, _, _ = server
    assert "unknown model 'other'" in _predict(client, {"instances": ["x"]}, "/v1/models/other:predict").get_json()["error"]
    response = _predict(client, {"instances": ["x"]}, f"/v1/models/{NAME}/versions/7:predict")
    assert response.status_code == 404 and "no version 7" in response.get_json()["error"]
    assert _predict(client, {"instances": ["x"]}, f"/v1/models/{NAME}/versions/x:predict").status_code == 400
    assert client.get(f"/v1/models/{NAME}/versions/7").status_code == 404
    assert client.get("/v1/models/other").status_code == 404
    assert _predict(client, {"instances": ["x"]}, f"/v1/models/{NAME}:classify").status_code == 404
    assert client.get("/nowhere").status_code == 404


def test_a_newly_pushed_version_is_served_without_restart_and_a_removed_one_unloaded(server, exported):
    client, repository, base = server
    before = _predict(client, {"instances": ["a gorgeous, witty film"]})
    assert before.headers["X-Model-Version"] == "100"
    versioned_pusher.push_atomically(exported[1], str(base), version=200)
    deadline = time.time() + 30
    while time.time() < deadline and repository.versions() != [100, 200]:
        time.sleep(0.05)
    after = _predict(client, {"instances": ["a gorgeous, witty film"]})
    assert after.headers["X-Model-Version"] == "200"
    assert after.get_json()["predictions"][0]["probability"] != before.get_json()["predictions"][0]["probability"]
    # The old version stays addressable while it is on disk, and goes when pruned.
    assert _predict(client, {"instances": ["x"]}, f"/v1/models/{NAME}/versions/100:predict").status_code == 200
    shutil.rmtree(base / "100")
    deadline = time.time() + 30
    while time.time() < deadline and repository.versions() != [200]:
        time.sleep(0.05)
    assert [row["version"] for row in client.get(f"/v1/models/{NAME}").get_json()["model_version_status"]] == ["200"]


def test_a_version_that_fails_to_load_is_reported_and_does_not_stop_serving(server):
    client, repository, base = server
    (base / "300").mkdir()
    (base / "300" / "saved_model.pb").write_bytes(b"garbage")
    repository.refresh()
    status = client.get(f"/v1/models/{NAME}").get_json()["model_version_status"]
    assert {"version": "300", "state": "END"}.items() <= status[-1].items()
    assert _predict(client, {"instances": ["x"]}).headers["X-Model-Version"] == "100"


def test_serve_command_binds_loopback_by_default():
    from pipeline.__main__ import make_parser

    args = make_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
