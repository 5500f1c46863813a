"""The REST server: TF Serving's predict/status API, hot-loading of new versions, and clear 4xx errors."""

import json
import os
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
    answer = _predict(client, {"instances": ["x"]}, "/v1/models/other:predict")
    assert "unknown model 'other'" in answer.get_json()["error"]
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


def test_tensorflow_pools_come_from_the_flags_over_the_config(monkeypatch, tmp_path):
    from pipeline.__main__ import make_parser

    sized = []

    class Stop(Exception):
        pass

    def no_repository(*args, **kwargs):
        raise Stop  # the pools are sized before the first version can load

    monkeypatch.setattr(serve, "size_tensorflow_pools", lambda **pools: sized.append(pools))
    monkeypatch.setattr(serve, "ModelRepository", no_repository)
    args = make_parser().parse_args(["serve", "--model-base-dir", str(tmp_path), "--set", "serving.inter_op_threads=2",
                                     "--set", "serving.intra_op_threads=3", "--tensorflow-intra-op-parallelism", "1"])
    with pytest.raises(Stop):
        serve.serve_command(args)
    assert sized == [{"intra": 1, "inter": 2}]


def test_tensorflow_pools_reject_a_negative_size(capsys):
    from pipeline import configs
    from pipeline.__main__ import make_parser

    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args(["serve", "--tensorflow-inter-op-parallelism", "-1"])
    assert exit_info.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="serving.intra_op_threads must be >= 0"):
        configs.ServingConfig(intra_op_threads=-2)


def test_tensorflow_pools_are_sized_and_refused_once_tensorflow_runs():
    import subprocess
    import sys

    script = (
        "from pipeline import serve\n"
        "serve.size_tensorflow_pools(intra=1, inter=2)\n"
        "import tensorflow as tf\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())\n"
        "tf.constant(1.0) + 1.0\n"
        "serve.size_tensorflow_pools(intra=1, inter=2)\n"  # what they are already: fine
        "try:\n"
        "    serve.size_tensorflow_pools(intra=3)\n"
        "except RuntimeError as error:\n"
        "    print(error)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "1 2"
    assert lines[1] == "TensorFlow is already running: its intra-op pool can no longer be sized to 3 threads"


# --- Fakes: a signature with the model's outputs, so the HTTP tests need no TensorFlow model.


class FakeSignature:
    """Answers like the exported serving signature (one token per word, at most 12);
    records every call's texts; raises for texts containing `fail_on`."""

    def __init__(self, probability=0.75, fail_on=None, on_call=None, max_len=12, multiple=1):
        self.probability, self.fail_on, self.on_call = probability, fail_on, on_call
        self.max_len, self.multiple = max_len, multiple
        self.calls = []
        self.widths = []

    def __call__(self, text):
        import tensorflow as tf

        texts = [t.decode("utf-8") for t in text.numpy()]
        self.calls.append(texts)
        if self.on_call is not None:
            self.on_call(texts)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError(f"the fake model fails on {self.fail_on!r}")
        # Like the export: at most max_len tokens, padded to the longest rounded up to `multiple`.
        lengths = [min(len(t.split()), self.max_len) for t in texts]
        width = min(-(-max(lengths + [1]) // self.multiple) * self.multiple, self.max_len)
        self.widths.append(width)
        n = len(texts)
        return {"probability": tf.fill([n], self.probability), "label": tf.ones([n], tf.int64),
                "attention": tf.zeros([n, width]), "trajectory": tf.zeros([n, width]),
                "length": tf.constant(lengths, tf.int64)}


def _fake_server(tmp_path, max_body_bytes=4096, **signature_args):
    base = tmp_path / NAME
    (base / "100").mkdir(parents=True)
    signature = FakeSignature(**signature_args)
    repository = serve.ModelRepository(base, loader=lambda path: signature)
    repository.refresh()
    app = serve.create_app(repository, NAME, max_instances=8, max_body_bytes=max_body_bytes)
    return app, repository, signature


@pytest.fixture
def fake_client(tmp_path):
    app, _, _ = _fake_server(tmp_path, max_body_bytes=1_000_000)
    return app.test_client()


def _json_error(response, status):
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/json", response.get_data()[:300]
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


# --- 6a: JSON nested deeper than the decoder's recursion limit.


@pytest.mark.parametrize("body", ["[" * 100_000, '{"instances": ' + "[" * 100_000, '{"a":' * 50_000])
def test_json_nested_too_deeply_is_a_400(fake_client, body):
    message = _json_error(_predict(fake_client, body), 400)
    assert "not valid JSON" in message and "nested too deeply" in message
    assert _predict(fake_client, {"instances": ["still fine"]}).status_code == 200


# --- 6b: a body over the limit, over a real waitress server.


def _http(port, method, path, body=None, headers=None, chunked=False):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        if chunked:
            pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
            connection.request(method, path, body=iter(pieces), encode_chunked=True,
                               headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        else:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json",
                                                                  **(headers or {})})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


@pytest.fixture
def waitress_server(tmp_path):
    import threading

    app, _, _ = _fake_server(tmp_path, max_body_bytes=4096)
    server = serve.make_server(app, "127.0.0.1", 0, threads=2, max_body_bytes=4096)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server.effective_port
    server.close()
    thread.join(timeout=5)


def _body_of_size(size):
    head, tail = b'{"instances": ["', b'"]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("size,chunked", [(4097, False), (4096 + 2048, False), (200_000, False), (4097, True)])
def test_a_body_over_the_limit_is_a_json_413_over_real_waitress(waitress_server, size, chunked):
    start = time.monotonic()
    path = f"/v1/models/{NAME}:predict"
    status, content_type, data = _http(waitress_server, "POST", path, _body_of_size(size), chunked=chunked)
    assert status == 413, (status, data[:300])
    assert content_type == "application/json", (content_type, data[:300])
    assert json.loads(data) == {"error": "request body over the limit of 4096 bytes"}
    # At the limit it is served, and the server keeps serving.
    status, _, data = _http(waitress_server, "POST", path, _body_of_size(4096), chunked=chunked)
    assert status == 200, data[:300]
    assert json.loads(data)["predictions"][0]["probability"] == pytest.approx(0.75)
    assert time.monotonic() - start < 5


# --- 6c: signature_name.


def test_signature_name_serving_default_is_accepted_and_others_are_a_400(fake_client):
    for body in ({"signature_name": "serving_default", "instances": ["x"]},
                 {"signature_name": "serving_default", "inputs": {"text": ["x"]}}):
        response = _predict(fake_client, body)
        assert response.status_code == 200, response.get_json()
        assert len(response.get_json()["predictions"]) == 1
    message = _json_error(_predict(fake_client, {"signature_name": "serving_tf_examples", "instances": ["x"]}), 400)
    assert message == ("unknown signature_name 'serving_tf_examples'; this server serves only 'serving_default' "
                       "(the only signature that takes raw text)")
    message = _json_error(_predict(fake_client, {"signature_name": ["x"], "instances": ["x"]}), 400)
    assert message == '"signature_name" must be a string, got list'


def test_parse_texts_accepts_signature_name():
    assert serve.parse_texts({"signature_name": "serving_default", "instances": ["a", "b"]}, 8) == ["a", "b"]
    with pytest.raises(serve.BadRequest, match="unknown signature_name 'predict'"):
        serve.parse_texts({"signature_name": "predict", "inputs": ["a"]}, 8)


# --- 6d: a lone surrogate in a text.


@pytest.mark.parametrize("body", ['{"instances": ["fine", "\\ud800"]}', '{"instances": ["fine", {"text": "a\\udfff"}]}',
                                  '{"inputs": {"text": ["fine", "\\ud800 b"]}}'])
def test_a_lone_surrogate_is_a_400_naming_the_instance(fake_client, body):
    message = _json_error(_predict(fake_client, body), 400)
    assert message.startswith("instance 1: the text is not valid Unicode"), message
    assert _predict(fake_client, {"instances": ["still fine"]}).status_code == 200


# --- 6e: versions that are not ASCII digits, or too long.


@pytest.mark.parametrize("version", ["²", "١٠٠", "1" * 5000, "1" * 20, "-1", "+1", " 1", "1_0"])
def test_malformed_versions_are_a_400(fake_client, version):
    from urllib.parse import quote

    v = quote(version)
    message = _json_error(_predict(fake_client, {"instances": ["x"]}, f"/v1/models/{NAME}/versions/{v}:predict"), 400)
    assert message.startswith("version must be a number of at most 19 ASCII digits, got "), message
    assert len(message) < 200
    _json_error(fake_client.get(f"/v1/models/{NAME}/versions/{v}"), 400)


def test_a_well_formed_absent_version_is_a_404(fake_client):
    big = "9" * 19
    message = _json_error(_predict(fake_client, {"instances": ["x"]}, f"/v1/models/{NAME}/versions/{big}:predict"), 404)
    assert f"no version {big}" in message
    assert "no version 7" in _json_error(fake_client.get(f"/v1/models/{NAME}/versions/0007"), 404)
    response = _predict(fake_client, {"instances": ["x"]}, f"/v1/models/{NAME}/versions/0100:predict")
    assert response.status_code == 200 and response.headers["X-Model-Version"] == "100"


# --- 6f: GET on :predict.


@pytest.mark.parametrize("path", [f"/v1/models/{NAME}:predict", f"/v1/models/{NAME}/versions/100:predict"])
def test_get_on_predict_is_a_405_naming_post(fake_client, path):
    response = fake_client.get(path)
    message = _json_error(response, 405)
    assert message == f"GET is not allowed on {path}; allowed: POST"
    assert response.headers["Allow"] == "POST"
    message = _json_error(fake_client.put(path, data="{}"), 405)
    assert message == f"PUT is not allowed on {path}; allowed: POST"


def test_post_on_status_is_a_405_naming_get(fake_client):
    path = f"/v1/models/{NAME}"
    message = _json_error(_predict(fake_client, {"instances": ["x"]}, path), 405)
    assert message.startswith(f"POST is not allowed on {path}; allowed: GET"), message


# --- Anything unforeseen: a JSON 500, with the traceback in the log.


def test_an_unexpected_error_is_a_json_500_and_logged(tmp_path, caplog):
    app, _, _ = _fake_server(tmp_path, fail_on="explode")
    client = app.test_client()
    with caplog.at_level("ERROR", logger="sentiment.serve"):
        message = _json_error(_predict(client, {"instances": ["please explode"]}), 500)
    assert message.startswith("internal error"), message
    assert "the fake model fails" not in message  # no internals in the answer...
    records = [r for r in caplog.records if r.name == "sentiment.serve" and r.exc_info]
    assert records and "the fake model fails on 'explode'" in str(records[0].exc_info[1])  # ...but in the log
    assert _predict(client, {"instances": ["still fine"]}).status_code == 200


# --- 7: the model lifecycle (ModelRepository.refresh).


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _available(version):
    return {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def test_a_failed_version_is_retried_when_its_files_change_and_only_then(tmp_path):
    base = tmp_path / NAME
    model = base / "1" / "saved_model.pb"
    _write(model, b"half")
    loads = []

    def loader(path):
        loads.append(path.name)
        if (path / "saved_model.pb").read_bytes() != b"complete":
            raise ValueError("truncated SavedModel")
        return FakeSignature()

    repository = serve.ModelRepository(base, loader=loader)
    repository.refresh()
    repository.refresh()
    assert loads == ["1"]  # unchanged: not retried
    assert repository.status() == [{"version": "1", "state": "END", "status": {
        "error_code": "UNKNOWN", "error_message": "ValueError: truncated SavedModel"}}]
    # Same size, new mtime: retried (and fails again).
    _write(model, b"HALF")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    repository.refresh()
    assert loads == ["1", "1"]
    repository.refresh()
    assert loads == ["1", "1"]
    # The copy completes: loaded, and the failure forgotten.
    _write(model, b"complete")
    _write(base / "1" / "variables" / "variables.index", b"x")
    repository.refresh()
    assert loads == ["1", "1", "1"]
    assert repository.versions() == [1]
    assert repository.status() == [_available(1)]
    repository.refresh()
    assert loads == ["1", "1", "1"]


def test_a_new_version_is_loaded_before_the_old_one_is_unloaded(tmp_path):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    seen = []

    def loader(path):
        # What a client would get while this version loads.
        seen.append((path.name, repository.versions(), repository.get(None)[0]))
        return FakeSignature()

    repository = serve.ModelRepository(base, loader=loader)
    repository.refresh()
    # versions_to_keep=1: the Pusher renames 2 into place and prunes 1 before the server looks.
    shutil.rmtree(base / "1")
    (base / "2").mkdir()
    repository.refresh()
    assert seen == [("1", [], None), ("2", [1], 1)]
    assert repository.versions() == [2]
    assert repository.status() == [_available(2)]


def test_a_missing_or_empty_base_directory_keeps_what_is_loaded(tmp_path, caplog):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: FakeSignature())
    repository.refresh()
    shutil.rmtree(base)
    with caplog.at_level("WARNING", logger="sentiment.serve"):
        repository.refresh()
        repository.refresh()
    assert repository.versions() == [1] and repository.get(None)[0] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # once, not at every poll
    assert "no version on disk" in warnings[0] and "keeping version(s) [1]" in warnings[0]
    base.mkdir()
    (base / ".tmp-2-abcd").mkdir()  # a copy in progress is not a version
    repository.refresh()
    assert repository.versions() == [1]
    (base / "2").mkdir()
    repository.refresh()
    assert repository.versions() == [2]


def test_the_last_loaded_version_stays_while_its_replacement_fails_to_load(tmp_path, caplog):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)

    def loader(path):
        if (path / "broken").exists():
            raise ValueError("broken")
        return FakeSignature()

    repository = serve.ModelRepository(base, loader=loader)
    repository.refresh()
    shutil.rmtree(base / "1")
    _write(base / "2" / "broken", b"")
    with caplog.at_level("WARNING", logger="sentiment.serve"):
        repository.refresh()
    assert repository.versions() == [1] and repository.get(None)[0] == 1
    assert [r["version"] for r in repository.status()] == ["1", "2"]
    assert any("version 1 is gone from disk but stays loaded" in r.getMessage() for r in caplog.records)
    (base / "2" / "broken").unlink()
    repository.refresh()
    assert repository.versions() == [2]
    assert repository.status() == [_available(2)]


def test_a_version_is_warmed_up_before_it_is_visible(tmp_path):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    during = []
    signature = FakeSignature(on_call=lambda texts: during.append((repository.versions(), repository.get(None))))
    repository = serve.ModelRepository(base, loader=lambda path: signature)
    repository.refresh()
    assert during, "the signature was never run before the version became visible"
    assert all(state == ([], (None, None)) for state in during), during[:3]
    assert repository.get(None) == (1, signature)
    # Every padded width (1..12 tokens here) and a batch of several texts.
    assert set(signature.widths) == set(range(1, 13))
    assert max(len(texts) for texts in signature.calls) >= 8
    assert "" in {t for texts in signature.calls for t in texts}


def test_warm_up_covers_the_padded_widths_with_few_calls():
    signature = FakeSignature(max_len=320, multiple=16)
    calls = serve.warm_up(signature)
    assert set(signature.widths) == set(range(16, 321, 16))
    assert calls == len(signature.calls) <= 30


def test_a_failing_warm_up_is_a_failed_load(tmp_path):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: FakeSignature(fail_on=""))
    repository.refresh()
    assert repository.versions() == [] and repository.get(None) == (None, None)
    (row,) = repository.status()
    assert row["version"] == "1" and row["state"] == "END"
    assert row["status"]["error_message"] == "warm-up failed: RuntimeError: the fake model fails on ''"


def _warmup_file(version_dir, logs):
    import tensorflow as tf

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())


def test_the_tf_serving_warmup_file_is_replayed(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

    base = tmp_path / NAME
    request = predict_pb2.PredictRequest()
    request.model_spec.name = NAME
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["from the warm-up file", "and a second text"]))
    other = predict_pb2.PredictRequest()
    other.model_spec.signature_name = "serving_tf_examples"
    other.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"not served"]))
    _warmup_file(base / "1", [
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)),
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=other)),
        prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
            request=classification_pb2.ClassificationRequest())),
    ])
    signature = FakeSignature()
    repository = serve.ModelRepository(base, loader=lambda path: signature)
    repository.refresh()
    assert repository.versions() == [1]
    assert ["from the warm-up file", "and a second text"] in signature.calls
    assert not any("not served" in t for texts in signature.calls for t in texts)


def test_a_corrupt_tf_serving_warmup_file_is_a_failed_load(tmp_path):
    base = tmp_path / NAME
    _write(base / "1" / "assets.extra" / "tf_serving_warmup_requests", b"not a TFRecord at all")
    repository = serve.ModelRepository(base, loader=lambda path: FakeSignature())
    repository.refresh()
    assert repository.versions() == []
    (row,) = repository.status()
    assert row["state"] == "END" and row["status"]["error_message"].startswith("warm-up failed: ")


def test_the_real_model_is_warmed_up_on_every_padded_width(exported, tmp_path):
    base = tmp_path / NAME
    versioned_pusher.push_atomically(exported[0], str(base), version=1)
    widths, batches = set(), []

    class Recording:
        def __init__(self, signature):
            self.signature = signature

        def __call__(self, text):
            out = self.signature(text=text)
            widths.add(int(out["attention"].shape[1]))
            batches.append(int(text.shape[0]))
            return out

    repository = serve.ModelRepository(base, loader=lambda path: Recording(predict.load_signature(path)))
    repository.refresh()
    assert repository.versions() == [1]
    assert widths == set(range(1, 13))  # the tiny export: max_len 12, no rounding of widths
    assert max(batches) >= 8
    before = len(batches)
    app = serve.create_app(repository, NAME)
    response = _predict(app.test_client(), {"instances": ["a gorgeous, witty film", ""]})
    assert response.status_code == 200 and len(batches) == before + 1
