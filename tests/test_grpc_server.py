"""TF Serving's gRPC API, called as a TF Serving user calls it: the tensorflow-serving-api stubs."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components import versioned_pusher
from pipeline import grpc_server, predict, serve
from tests import serving_models
from tests.test_serve import FakeSignature

NAME = "sentiment-polarity"
TEXTS = ["a gorgeous, witty film", "dull", "", "naïve, Émile: 😀 <br /> not bad at all, really"]
OUTPUTS = {"probability", "label", "attention", "trajectory", "length"}


@pytest.fixture(scope="module")
def exported(tiny_transform, tmp_path_factory):
    _, tft_output = tiny_transform
    root = tmp_path_factory.mktemp("exports")
    return [serving_models.export_tiny_model(tft_output, str(root / f"m{seed}"), seed=seed) for seed in (0, 1)]


class Served:
    """A repository, the REST app over it and a real gRPC server over the same repository."""

    def __init__(self, base: Path, loader=None, max_instances=8, max_body_bytes=1 << 20, poll_seconds=0.05):
        self.base = base
        self.repository = serve.ModelRepository(base, poll_seconds=poll_seconds, loader=loader)
        self.repository.refresh()
        self.limits = {"max_instances": max_instances, "max_body_bytes": max_body_bytes}
        self.server, self.port = grpc_server.create_server(self.repository, NAME, port=0, threads=2,
                                                           max_instances=max_instances,
                                                           max_body_bytes=max_body_bytes)
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    @property
    def rest(self):
        """A REST client over the same repository."""
        return serve.create_app(self.repository, NAME, **self.limits).test_client()

    def close(self):
        self.channel.close()
        self.server.stop(None)
        self.repository.stop()


@pytest.fixture
def served(exported, tmp_path):
    base = tmp_path / NAME
    versioned_pusher.push_atomically(exported[0], str(base), version=100)
    served = Served(base)
    served.repository.start()
    yield served
    served.close()


@pytest.fixture
def fake(tmp_path):
    base = tmp_path / NAME
    (base / "100").mkdir(parents=True)
    signature = FakeSignature()
    served = Served(base, loader=lambda path: signature)
    yield served
    served.close()


def request_of(texts=TEXTS, name=NAME, version=None, signature_name="serving_default", output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.model_spec.signature_name = signature_name
    if texts is not None:
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    request.output_filter.extend(output_filter)
    return request


def arrays(response):
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def code_of(call, request):
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30)
    return error.value.code(), error.value.details()


# --- same answers as REST and as the signature in-process


def test_predict_gives_the_same_probabilities_as_rest_and_the_signature(served, exported):
    response = served.predictions.Predict(request_of(), timeout=30)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 100
    assert response.model_spec.signature_name == "serving_default"
    got = arrays(response)
    assert set(got) == OUTPUTS
    assert got["probability"].dtype == np.float32 and got["probability"].shape == (4,)
    assert got["label"].dtype == np.int64 and got["length"].dtype == np.int64
    width = got["attention"].shape[1]
    assert got["attention"].shape == got["trajectory"].shape == (4, width) and got["attention"].dtype == np.float32

    in_process = {k: v.numpy() for k, v in
                  predict.load_signature(exported[0])(text=tf.constant(TEXTS)).items()}
    assert width >= max(got["length"])
    for key in OUTPUTS:
        # Per-token outputs: the padded tensor, here as wide as the longest text (0 past each length).
        np.testing.assert_allclose(got[key], in_process[key][:, :width] if got[key].ndim == 2 else in_process[key],
                                   atol=1e-6, err_msg=key)

    rest = served.rest.post(f"/v1/models/{NAME}:predict", data=json.dumps({"instances": TEXTS}),
                            content_type="application/json")
    assert rest.status_code == 200 and rest.headers["X-Model-Version"] == "100"
    for i, row in enumerate(rest.get_json()["predictions"]):
        assert row["probability"] == pytest.approx(float(got["probability"][i]), abs=1e-6)
        assert row["label"] == got["label"][i] and row["length"] == got["length"][i]
        n = row["length"]
        np.testing.assert_allclose(row["attention"], got["attention"][i, :n], atol=1e-6)
        np.testing.assert_allclose(row["trajectory"], got["trajectory"][i, :n], atol=1e-6)
        assert not got["attention"][i, n:].any()  # padding is 0, as the export answers it


def test_a_request_without_signature_name_or_version_gets_serving_default_of_the_highest(served):
    request = request_of(signature_name="")
    response = served.predictions.Predict(request, timeout=30)
    assert response.model_spec.version.value == 100 and set(response.outputs) == OUTPUTS


def test_output_filter_returns_only_the_outputs_named(served):
    full = arrays(served.predictions.Predict(request_of(), timeout=30))
    response = served.predictions.Predict(request_of(output_filter=["probability", "label"]), timeout=30)
    assert set(response.outputs) == {"probability", "label"}
    np.testing.assert_array_equal(arrays(response)["probability"], full["probability"])
    only = served.predictions.Predict(request_of(output_filter=["trajectory"]), timeout=30)
    assert set(only.outputs) == {"trajectory"}


@pytest.mark.parametrize("output_filter,message", [(["probabilty"], "not an output of serving_default"),
                                                   (["label", "label"], "twice")])
def test_a_bad_output_filter_is_invalid_argument(served, output_filter, message):
    code, details = code_of(served.predictions.Predict, request_of(output_filter=output_filter))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


def test_versions_are_those_of_rest_and_hot_reloaded(served, exported):
    before = arrays(served.predictions.Predict(request_of(), timeout=30))["probability"]
    versioned_pusher.push_atomically(exported[1], str(served.base), version=200)
    deadline = time.time() + 30
    while time.time() < deadline and served.repository.versions() != [100, 200]:
        time.sleep(0.05)
    newest = served.predictions.Predict(request_of(), timeout=30)
    assert newest.model_spec.version.value == 200
    assert not np.allclose(arrays(newest)["probability"], before)
    pinned = served.predictions.Predict(request_of(version=100), timeout=30)
    assert pinned.model_spec.version.value == 100
    np.testing.assert_array_equal(arrays(pinned)["probability"], before)
    rest = served.rest.post(f"/v1/models/{NAME}:predict", data=json.dumps({"instances": TEXTS}),
                            content_type="application/json")
    assert rest.headers["X-Model-Version"] == "200"
    np.testing.assert_allclose([r["probability"] for r in rest.get_json()["predictions"]],
                               arrays(newest)["probability"], atol=1e-6)


# --- metadata and status


def test_get_model_metadata_returns_the_serving_default_signature_def(served):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = NAME
    response = served.predictions.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 100
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    definition = defs.signature_def["serving_default"]
    assert list(defs.signature_def) == ["serving_default"]
    assert definition.method_name == "tensorflow/serving/predict"
    assert set(definition.inputs) == {"text"} and definition.inputs["text"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in definition.inputs["text"].tensor_shape.dim] == [-1]
    assert set(definition.outputs) == OUTPUTS
    assert definition.outputs["label"].dtype == tf.int64.as_datatype_enum
    assert [d.size for d in definition.outputs["attention"].tensor_shape.dim] == [-1, -1]


@pytest.mark.parametrize("fields,message", [([], "at least one metadata_field"),
                                            (["signature_def", "graph"], "'graph' is not supported")])
def test_get_model_metadata_without_signature_def_is_invalid_argument(served, fields, message):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = NAME
    code, details = code_of(served.predictions.GetModelMetadata, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


def test_metadata_falls_back_to_the_loaded_signature_when_the_directory_is_gone(exported, tmp_path):
    import shutil

    signature = predict.load_signature(exported[0])
    shutil.copytree(exported[0], tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "variables")
    (tmp_path / "copy" / "saved_model.pb").write_bytes(b"not a SavedModel")
    defs = grpc_server.signature_def_map(tmp_path / "copy", signature)
    assert set(defs.signature_def["serving_default"].outputs) == OUTPUTS


def test_get_model_status_lists_the_versions_like_rest(tmp_path):
    def loader(path):
        if path.name == "300":
            raise OSError("unreadable")
        return FakeSignature()

    for version in ("100", "300"):
        (tmp_path / NAME / version).mkdir(parents=True)
    fake = Served(tmp_path / NAME, loader=loader)
    try:
        _check_status(fake)
    finally:
        fake.close()


def _check_status(fake):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = NAME
    response = fake.models.GetModelStatus(request, timeout=30)
    got = [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_code,
            s.status.error_message) for s in response.model_version_status]
    assert got == [(100, "AVAILABLE", 0, ""), (300, "END", 2, "OSError: unreadable")]
    rest = fake.rest.get(f"/v1/models/{NAME}").get_json()["model_version_status"]
    assert [(int(r["version"]), r["state"], r["status"]["error_message"]) for r in rest] == \
        [(v, s, m) for v, s, _, m in got]
    request.model_spec.version.value = 100
    assert [s.version for s in fake.models.GetModelStatus(request, timeout=30).model_version_status] == [100]
    request.model_spec.version.value = 7
    assert code_of(fake.models.GetModelStatus, request)[0] == grpc.StatusCode.NOT_FOUND
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "other"
    assert code_of(fake.models.GetModelStatus, request)[0] == grpc.StatusCode.NOT_FOUND


# --- errors: what the client did wrong, never INTERNAL


def _tensor(dtype, dims, strings=()):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    return tensor_pb2.TensorProto(dtype=dtype, string_val=list(strings), tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))


def _with_inputs(**inputs):
    request = request_of(texts=None)
    for key, tensor in inputs.items():
        request.inputs[key].CopyFrom(tensor)
    return request


def _with_label():
    request = request_of()
    request.model_spec.version_label = "stable"
    return request


BAD_REQUESTS = {
    "unknown model": (request_of(name="other"), grpc.StatusCode.NOT_FOUND, "unknown model 'other'"),
    "unknown version": (request_of(version=7), grpc.StatusCode.NOT_FOUND, "version 7"),
    "empty model name": (request_of(name=""), grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is empty"),
    "version label": (_with_label(), grpc.StatusCode.INVALID_ARGUMENT, "version label 'stable'"),
    "other signature": (request_of(signature_name="serving_tf_examples"), grpc.StatusCode.INVALID_ARGUMENT,
                        "unknown signature_name 'serving_tf_examples'"),
    "no text input": (_with_inputs(), grpc.StatusCode.INVALID_ARGUMENT, "no input 'text'"),
    "another input name": (_with_inputs(texts=tf.make_tensor_proto(["x"])), grpc.StatusCode.INVALID_ARGUMENT,
                           "no input 'text' (inputs: ['texts'])"),
    "an extra input": (_with_inputs(text=tf.make_tensor_proto(["x"]), extra=tf.make_tensor_proto(["y"])),
                       grpc.StatusCode.INVALID_ARGUMENT, "unexpected inputs ['extra']"),
    "int text": (_with_inputs(text=tf.make_tensor_proto([1, 2])), grpc.StatusCode.INVALID_ARGUMENT,
                 "must be DT_STRING, got DT_INT32"),
    "float text": (_with_inputs(text=tf.make_tensor_proto([0.5])), grpc.StatusCode.INVALID_ARGUMENT, "DT_FLOAT"),
    "scalar text": (_with_inputs(text=tf.make_tensor_proto("one text")), grpc.StatusCode.INVALID_ARGUMENT,
                    "must be 1-D (a batch of texts), got shape []"),
    "2-D text": (_with_inputs(text=tf.make_tensor_proto([["a"], ["b"]])), grpc.StatusCode.INVALID_ARGUMENT,
                 "got shape [2, 1]"),
    "empty batch": (_with_inputs(text=tf.make_tensor_proto([], dtype=tf.string)), grpc.StatusCode.INVALID_ARGUMENT,
                    "is empty"),
    "shape disagrees": (_with_inputs(text=_tensor(tf.string.as_datatype_enum, [3], [b"a"])),
                        grpc.StatusCode.INVALID_ARGUMENT, "shape [3] but 1 string values"),
    "huge declared shape": (_with_inputs(text=_tensor(tf.string.as_datatype_enum, [1 << 40], [b"a"])),
                            grpc.StatusCode.INVALID_ARGUMENT, "string values"),
    "too many instances": (request_of(texts=["a"] * 9), grpc.StatusCode.INVALID_ARGUMENT,
                           "too many instances: 9 > 8"),
    "invalid UTF-8": (request_of(texts=[b"fine", b"\xff\xfe bad"]), grpc.StatusCode.INVALID_ARGUMENT,
                      "instance 1: the text is not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_not_found_or_invalid_argument_and_the_server_keeps_serving(fake, case):
    request, code, message = BAD_REQUESTS[case]
    got, details = code_of(fake.predictions.Predict, request)
    assert got == code, (got, details)
    assert message in details, details
    assert fake.predictions.Predict(request_of(texts=["still fine"]), timeout=30).model_spec.version.value == 100


def test_bad_metadata_requests_get_the_same_codes(fake):
    for spec, code in (({"name": "other"}, grpc.StatusCode.NOT_FOUND), ({"name": ""}, grpc.StatusCode.INVALID_ARGUMENT),
                       ({"name": NAME, "version": 7}, grpc.StatusCode.NOT_FOUND),
                       ({"name": NAME, "version_label": "canary"}, grpc.StatusCode.INVALID_ARGUMENT)):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = spec["name"]
        if "version" in spec:
            request.model_spec.version.value = spec["version"]
        if "version_label" in spec:
            request.model_spec.version_label = spec["version_label"]
        assert code_of(fake.predictions.GetModelMetadata, request)[0] == code, spec


def test_a_request_over_the_size_limit_is_resource_exhausted(tmp_path):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    served = Served(base, loader=lambda path: FakeSignature(), max_body_bytes=4096)
    try:
        code, _ = code_of(served.predictions.Predict, request_of(texts=["a" * 5000]))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert served.predictions.Predict(request_of(texts=["fine"]), timeout=30).outputs
    finally:
        served.close()


def test_no_version_loaded_is_unavailable(tmp_path):
    served = Served(tmp_path / NAME, loader=lambda path: FakeSignature())
    try:
        assert code_of(served.predictions.Predict, request_of())[0] == grpc.StatusCode.UNAVAILABLE
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = NAME
        assert code_of(served.predictions.GetModelMetadata, request)[0] == grpc.StatusCode.UNAVAILABLE
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = NAME
        assert list(served.models.GetModelStatus(status, timeout=30).model_version_status) == []
    finally:
        served.close()


def test_a_model_that_fails_is_internal_and_logged_and_the_server_keeps_serving(tmp_path, caplog):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    signature = FakeSignature()
    served = Served(base, loader=lambda path: signature)
    signature.fail_on = "boom"
    try:
        code, details = code_of(served.predictions.Predict, request_of(texts=["boom"]))
        assert code == grpc.StatusCode.INTERNAL and "RuntimeError" in details
        assert "internal error in Predict" in caplog.text
        assert served.predictions.Predict(request_of(texts=["fine"]), timeout=30).outputs
    finally:
        served.close()


def test_unserved_methods_are_unimplemented(fake):
    from tensorflow_serving.apis import classification_pb2

    with pytest.raises(grpc.RpcError) as error:
        fake.predictions.Classify(classification_pb2.ClassificationRequest(), timeout=30)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_request_logging_covers_grpc_too(tmp_path):
    from pipeline import request_log

    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: FakeSignature())
    repository.refresh()
    logger = request_log.RequestLogger(tmp_path / "log")
    server, port = grpc_server.create_server(repository, NAME, port=0, threads=1, request_logger=logger)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(request_of(texts=["naïve", "b"], output_filter=["label"]), timeout=30)
    finally:
        server.stop(None)
        logger.close()
    lines = [json.loads(line) for f in sorted((tmp_path / "log").iterdir()) for line in f.read_text().splitlines()]
    assert [(r["text"], r["model_version"], r["probability"], r["label"]) for r in lines] == \
        [("naïve", 1, 0.75, 1), ("b", 1, 0.75, 1)]


# --- the command line


def test_grpc_port_option():
    from pipeline.__main__ import make_parser

    parse = make_parser().parse_args
    assert parse(["serve"]).grpc_port is None  # the config's 8500, or any port with --port 0
    assert parse(["serve", "--grpc-port", "0"]).grpc_port == 0
    assert parse(["serve", "--grpc-port", "8600"]).grpc_port == 8600
    assert parse(["serve", "--grpc-port", "any"]).grpc_port == serve.GRPC_ANY_PORT
    for bad in ("-1", "70000", "x"):
        with pytest.raises(SystemExit):
            parse(["serve", "--grpc-port", bad])
    from pipeline import configs

    assert configs.ServingConfig().grpc_port == 8500


def test_a_taken_grpc_port_is_a_clear_error(tmp_path):
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: FakeSignature())
    first, port = grpc_server.create_server(repository, NAME, port=0)
    try:
        with pytest.raises(grpc_server.BindError, match=f"cannot bind gRPC to 127.0.0.1:{port}"):
            grpc_server.create_server(repository, NAME, port=port)
    finally:
        first.stop(None)


def test_python_m_pipeline_serve_answers_grpc_beside_rest(exported, tmp_path):
    import requests

    base = tmp_path / NAME
    versioned_pusher.push_atomically(exported[0], str(base), version=5)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--model-base-dir", str(base), "--port", "0",
                             "--poll-seconds", "0.2"], cwd=Path(__file__).resolve().parent.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        grpc_line = proc.stdout.readline()
        rest_line = proc.stdout.readline()
        assert grpc_line.startswith("gRPC PredictionService and ModelService for sentiment-polarity on 127.0.0.1:"), \
            grpc_line
        assert rest_line.startswith("Serving sentiment-polarity versions [5]"), rest_line
        port = int(grpc_line.rsplit(":", 1)[1])
        url = rest_line.split(" on ", 1)[1].strip()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request_of(output_filter=["probability"]), timeout=30)
        rest = requests.post(f"{url}:predict", json={"instances": TEXTS}, timeout=30).json()
        np.testing.assert_allclose(arrays(response)["probability"],
                                   [r["probability"] for r in rest["predictions"]], atol=1e-6)
        assert response.model_spec.version.value == 5
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


# --- a predictor (pipeline/batching.py's interface): gRPC calls the model through it


class _Refused(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class FakePredictor:
    """predict(version, texts, outputs) -> (version, arrays), refusals carrying a gRPC status name."""

    def __init__(self, error=None):
        self.error, self.calls = error, []

    def predict(self, version, texts, outputs):
        self.calls.append((version, list(texts), outputs))
        if self.error is not None:
            raise self.error
        n = len(texts)
        arrays = {"label": np.ones(n, np.int64), "probability": np.full(n, 0.25, np.float32),
                  "length": np.ones(n, np.int64), "attention": np.ones((n, 1), np.float32),
                  "trajectory": np.ones((n, 1), np.float32)}
        return 7, {name: arrays[name] for name in (outputs or arrays)}


def _predictor_server(tmp_path, predictor):
    base = tmp_path / NAME
    (base / "7").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: FakeSignature())
    repository.refresh()
    server, port = grpc_server.create_server(repository, NAME, port=0, threads=1, predictor=predictor)
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}")


def test_predict_goes_through_the_predictor_when_given(tmp_path):
    predictor = FakePredictor()
    server, channel = _predictor_server(tmp_path, predictor)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request_of(texts=["naïve", "b"], version=7, output_filter=["probability"]),
                                timeout=30)
        assert set(response.outputs) == {"probability"} and response.model_spec.version.value == 7
        np.testing.assert_array_equal(arrays(response)["probability"], [0.25, 0.25])
        assert predictor.calls == [(7, ["naïve", "b"], ["probability"])]  # texts as str, the filter passed on
        assert set(stub.Predict(request_of(texts=["x"]), timeout=30).outputs) == OUTPUTS
        assert predictor.calls[-1] == (None, ["x"], None)
    finally:
        channel.close()
        server.stop(None)


@pytest.mark.parametrize("code", ["NOT_FOUND", "UNAVAILABLE", "INVALID_ARGUMENT", "INTERNAL"])
def test_a_predictor_refusal_keeps_its_status(tmp_path, code):
    server, channel = _predictor_server(tmp_path, FakePredictor(_Refused(code, f"refused: {code}")))
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        got, details = code_of(stub.Predict, request_of(texts=["x"]))
        assert got == getattr(grpc.StatusCode, code)
        # INTERNAL is the server's fault: logged, and the client gets no internals.
        assert details == (f"refused: {code}" if code != "INTERNAL" else "internal error (_Refused); the server log "
                           "has the details")
    finally:
        channel.close()
        server.stop(None)


def test_concurrent_grpc_and_rest_requests_share_the_batchers_model_calls(tmp_path):
    """Through pipeline/batching.py's Batcher, as `serve` wires it: requests that arrive while the
    model is busy are merged into one call, each gets its own rows, over gRPC and REST alike
    (all asking for the same kind of answer: per-text outputs only)."""
    import threading

    from pipeline import batching

    gate, calls = threading.Event(), []
    signature = FakeSignature(on_call=lambda texts: calls.append(texts) or gate.wait(10))
    base = tmp_path / NAME
    (base / "1").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: signature)
    gate.set()
    repository.refresh()  # warm-up calls pass the open gate
    gate.clear()
    calls.clear()
    batcher = batching.Batcher(repository, NAME, batching.BatchingParameters(num_batch_threads=1))
    server, port = grpc_server.create_server(repository, NAME, port=0, threads=8, predictor=batcher)
    server.start()
    rest = serve.create_app(repository, NAME, predictor=batcher).test_client()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        first = stub.Predict.future(request_of(texts=["the first one"]), timeout=30)  # holds the model
        deadline = time.time() + 10
        while not calls and time.time() < deadline:
            time.sleep(0.01)
        texts = [["a b"], ["c d e f", "g"], ["h i j"]]
        futures_ = [stub.Predict.future(request_of(texts=t, output_filter=["length"]), timeout=30) for t in texts]
        rest_answer = {}
        rest_thread = threading.Thread(target=lambda: rest_answer.update(rest.post(
            f"/v1/models/{NAME}:predict", data=json.dumps({"instances": ["k l m n o"], "output_filter": ["length"]}),
            content_type="application/json").get_json()))
        rest_thread.start()
        deadline = time.time() + 10  # all four requests waiting in the batcher's queue (its internals)
        while time.time() < deadline and sum(len(b.tasks) for q in list(batcher._queues.values()) for b in q) < 4:
            time.sleep(0.01)
        gate.set()
        assert set(first.result().outputs) == OUTPUTS
        for want, future in zip(texts, futures_):
            np.testing.assert_array_equal(arrays(future.result())["length"], [len(t.split()) for t in want])
        rest_thread.join(10)
        assert [p["length"] for p in rest_answer["predictions"]] == [5]
        assert len(calls) == 2 and calls[0] == ["the first one"]  # the four others in one call, in arrival order
        assert sorted(calls[1]) == ["a b", "c d e f", "g", "h i j", "k l m n o"]
    finally:
        gate.set()
        channel.close()
        server.stop(None)
        batcher.stop()
