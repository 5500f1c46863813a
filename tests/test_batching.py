"""Server-side batching (pipeline/batching.py) and REST's output_filter."""

import json
import threading
import time

import numpy as np
import pytest

from components import versioned_pusher
from pipeline import batching, predict, serve
from tests import serving_models

NAME = "sentiment-polarity"
TEXTS = ["a gorgeous, witty film", "dull", "", "not bad at all, not bad at all", "the best thing this year",
         "i wanted my two hours back and then some more", "a quiet, moving story", "overlong"]


class Repository:
    """What the batcher needs of serve.ModelRepository: get() and versions()."""

    def __init__(self, signatures):
        self.signatures = signatures

    def get(self, version):
        if not self.signatures:
            return None, None
        version = max(self.signatures) if version is None else version
        return version, self.signatures.get(version)

    def versions(self):
        return sorted(self.signatures)


class Recorder:
    """A run() for the batcher: the fake model's outputs, one call recorded per batch.

    Each text's probability is a function of the text and the version, so a slice
    given to the wrong request (or computed on the wrong version) shows.
    `gate`, when set, holds every call until it is set.
    """

    def __init__(self, gate=None, fail_on=None):
        self.calls, self.gate, self.fail_on = [], gate, fail_on
        self.per_token = []  # per call: whether the per-token outputs were asked for
        self.lock = threading.Lock()

    def __call__(self, signature, texts, per_token=True):
        with self.lock:
            self.calls.append((signature, list(texts)))
            self.per_token.append(per_token)
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("the fake model fails")
        lengths = np.array([len(t.split()) for t in texts], np.int64)
        width = max(1, int(lengths.max()))
        probability = np.array([_probability(signature, t) for t in texts], np.float32)
        outputs = {"probability": probability, "label": (probability >= 0.5).astype(np.int64), "length": lengths,
                   "rating": 1 + 9 * probability}
        if per_token:  # as the per-text signature, nothing per token otherwise
            weights = np.tile(np.arange(1, width + 1, dtype=np.float32), (len(texts), 1)) * probability[:, None]
            outputs.update(attention=weights, trajectory=weights)
        return outputs


def _probability(version, text):
    return (hash((version, text)) % 1000) / 1000


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _in_threads(function, arguments):
    results, errors = [None] * len(arguments), []

    def call(i):
        try:
            results[i] = function(*arguments[i])
        except Exception as error:  # noqa: BLE001
            errors.append(error)
            results[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(arguments))]
    for thread in threads:
        thread.start()
    return threads, results, errors


def _queued_behind_a_busy_model(batcher, run, gate, requests, blocker_version=None):
    """Holds the batcher's only thread in the model on a first request, queues `requests`
    ((version, texts[, outputs]) each) behind it until all their texts wait, then lets the
    model go. Returns (results, errors, the counters while they waited)."""
    blocker = _in_threads(batcher.predict, [(blocker_version, ["first"])])
    _wait_until(lambda: len(run.calls) == 1)
    threads, results, errors = _in_threads(batcher.predict, requests)
    _wait_until(lambda: batcher.counters()["queued_instances"] == sum(len(r[1]) for r in requests))
    waiting = batcher.counters()
    gate.set()
    for thread in threads + blocker[0]:
        thread.join(10)
    return results, errors, waiting


def test_requests_waiting_for_a_busy_model_are_merged_into_one_call_and_answered_separately():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = batching.Batcher(Repository({1: 1}), NAME, batching.BatchingParameters(
        max_batch_size=64, num_batch_threads=1), run=run)
    requests = [(None, TEXTS[i:i + 1 + i % 3]) for i in range(6)]
    try:
        results, errors, _ = _queued_behind_a_busy_model(batcher, run, gate, requests)
    finally:
        batcher.stop()
    assert not errors
    assert len(run.calls) == 2 and sorted(run.calls[1][1]) == sorted(t for _, texts in requests for t in texts)
    for (_, texts), (version, arrays) in zip(requests, results):
        assert version == 1
        assert arrays["probability"].tolist() == pytest.approx([_probability(1, t) for t in texts])
        assert arrays["length"].tolist() == [len(t.split()) for t in texts]
        # The per-token outputs are cut to this request's longest text, not the merged batch's.
        assert arrays["attention"].shape == (len(texts), max(len(t.split()) for t in texts))
    assert batcher.counters()["largest_batch"] == sum(len(t) for _, t in requests)


def test_a_batch_never_mixes_versions():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = batching.Batcher(Repository({1: 1, 2: 2}), NAME, batching.BatchingParameters(
        max_batch_size=64, num_batch_threads=1), run=run)
    requests = [(1 + i % 2 if i % 3 else None, [TEXTS[i]]) for i in range(8)]
    try:
        results, errors, _ = _queued_behind_a_busy_model(batcher, run, gate, requests, blocker_version=1)
    finally:
        batcher.stop()
    assert not errors
    assert len(run.calls) == 3
    for signature, texts in run.calls[1:]:  # one call per version, each with only its version's texts
        assert sorted(texts) == sorted(t for v, ts in requests for t in ts if (v or 2) == signature)
    for (version, texts), (served, arrays) in zip(requests, results):
        assert served == (version or 2)
        assert arrays["probability"].tolist() == pytest.approx([_probability(served, t) for t in texts])


def test_requests_without_per_token_outputs_are_batched_apart_and_run_without_them():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = batching.Batcher(Repository({1: 1}), NAME, batching.BatchingParameters(
        max_batch_size=64, num_batch_threads=1), run=run)
    asks = [["probability", "label"], ["attention"], ["label", "rating", "length"], None, ["probability"],
            ["trajectory", "label"]]
    requests = [(None, [TEXTS[i]], asked) for i, asked in enumerate(asks)]
    try:
        results, errors, waiting = _queued_behind_a_busy_model(batcher, run, gate, requests)
    finally:
        batcher.stop()
    assert not errors
    assert waiting["queued_batches"] == 2  # one per kind of answer
    light = [TEXTS[i] for i, asked in enumerate(asks) if asked and not {"attention", "trajectory"} & set(asked)]
    calls = dict(zip(run.per_token[1:], (texts for _, texts in run.calls[1:])))
    assert len(run.calls) == 3 and sorted(calls[False]) == sorted(light)
    assert sorted(calls[True]) == sorted(set(TEXTS[:len(asks)]) - set(light))
    for (_, (text,), asked), (_, arrays) in zip(requests, results):
        assert list(arrays) == [name for name in predict.OUTPUTS if asked is None or name in asked]
        if "probability" in arrays or "label" in arrays:  # this request's own row
            assert arrays.get("probability", [_probability(1, text)]) == pytest.approx([_probability(1, text)])
            assert arrays.get("label", [int(_probability(1, text) >= 0.5)]) == [int(_probability(1, text) >= 0.5)]
    # Without batching, the same choice per request.
    direct = batching.make_predictor(Repository({1: 1}), NAME, None, run=run)
    direct.predict(None, ["x"], ["probability"])
    direct.predict(None, ["x"], ["attention"])
    direct.predict(None, ["x"])
    assert run.per_token[-3:] == [False, True, True]


def test_a_full_queue_is_refused_at_once_with_unavailable():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = batching.Batcher(Repository({1: 1}), NAME, batching.BatchingParameters(
        max_batch_size=2, num_batch_threads=1, max_enqueued_batches=1), run=run)
    try:
        running = _in_threads(batcher.predict, [(None, ["a"])])
        _wait_until(lambda: len(run.calls) == 1)
        waiting = _in_threads(batcher.predict, [(None, ["b", "c"])])  # fills the one batch that may wait
        _wait_until(lambda: batcher.counters()["queued_batches"] == 1)
        started = time.monotonic()
        with pytest.raises(batching.Unavailable, match="queue of version 1 is full") as refused:
            batcher.predict(None, ["d"])
        assert time.monotonic() - started < 1.0
        assert refused.value.code == "UNAVAILABLE" and refused.value.http_status == 503
        assert batcher.counters()["rejected"] == 1
        gate.set()
        for thread in running[0] + waiting[0]:
            thread.join(10)
        assert not running[2] and not waiting[2]
        assert batcher.predict(None, ["d"])[0] == 1  # room again
    finally:
        batcher.stop()


def test_a_request_larger_than_max_batch_size_runs_alone_unsplit():
    run = Recorder()
    batcher = batching.Batcher(Repository({1: 1}), NAME, batching.BatchingParameters(max_batch_size=2), run=run)
    try:
        _, arrays = batcher.predict(None, TEXTS[:5])
    finally:
        batcher.stop()
    assert [texts for _, texts in run.calls] == [TEXTS[:5]]
    assert len(arrays["label"]) == 5


def test_a_failing_merged_batch_fails_only_the_request_that_breaks_the_model():
    gate = threading.Event()
    run = Recorder(gate, fail_on="poison")
    batcher = batching.Batcher(Repository({1: 1}), NAME, batching.BatchingParameters(num_batch_threads=1), run=run)
    try:
        results, _, _ = _queued_behind_a_busy_model(batcher, run, gate, [(None, ["fine"]), (None, ["poison"]),
                                                                         (None, ["also fine"])])
    finally:
        batcher.stop()
    assert [type(r).__name__ for r in results] == ["tuple", "RuntimeError", "tuple"]
    assert batcher.counters()["failed_batches"] == 1


def test_versions_and_outputs_are_checked_before_queueing():
    batcher = batching.Batcher(Repository({1: 1}), NAME, run=Recorder())
    try:
        with pytest.raises(batching.NotFound, match="has no version 7; versions: \\[1\\]"):
            batcher.predict(7, ["x"])
        with pytest.raises(batching.InvalidArgument, match="unknown output 'logits'"):
            batcher.predict(None, ["x"], ["probability", "logits"])
        assert set(batcher.predict(None, ["x"], ["label"])[1]) == {"label"}
        assert set(batcher.predict(None, ["x"], [])[1]) == set(predict.OUTPUTS)
    finally:
        batcher.stop()
    with pytest.raises(batching.Unavailable, match="no version loaded yet"):
        batching.Direct(Repository({}), NAME).predict(None, ["x"])
    with pytest.raises(batching.Unavailable, match="stopping"):
        batcher.predict(None, ["x"])


def test_stop_answers_queued_requests_unavailable():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = batching.Batcher(Repository({1: 1}), NAME, batching.BatchingParameters(num_batch_threads=1), run=run)
    running = _in_threads(batcher.predict, [(None, ["a"])])
    _wait_until(lambda: len(run.calls) == 1)
    threads, results, _ = _in_threads(batcher.predict, [(None, ["b"])])
    _wait_until(lambda: batcher.counters()["queued_batches"] == 1)
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    for thread in threads:
        thread.join(10)
    assert isinstance(results[0], batching.Unavailable)
    gate.set()
    stopper.join(10)
    for thread in running[0]:
        thread.join(10)


def test_batching_parameters_are_checked():
    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        batching.BatchingParameters(max_batch_size=0)
    with pytest.raises(ValueError, match="batch_timeout_micros must be at least 0"):
        batching.BatchingParameters(batch_timeout_micros=-1)


def test_serve_command_line_sets_the_batching_parameters():
    from pipeline import configs
    from pipeline.__main__ import make_parser

    limits = configs.ServingConfig()
    args = make_parser().parse_args(["serve"])
    assert args.threads is None
    default = serve.batching_parameters(args, limits)
    assert default == batching.BatchingParameters(limits.max_batch_size, limits.batch_timeout_micros,
                                                  limits.num_batch_threads, limits.max_enqueued_batches)
    args = make_parser().parse_args(["serve", "--max-batch-size", "8", "--batch-timeout-micros", "500",
                                     "--num-batch-threads", "3", "--max-enqueued-batches", "2"])
    assert serve.batching_parameters(args, limits) == batching.BatchingParameters(8, 500, 3, 2)
    assert serve.batching_parameters(make_parser().parse_args(["serve", "--no-batching"]), limits) is None


# --- REST, with a fake model (no TensorFlow model needed)


def _app(tmp_path, run, parameters=None, request_logger=None):
    parameters = batching.BatchingParameters() if parameters is None else parameters
    base = tmp_path / NAME
    (base / "100").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: 100, warm_up_fn=lambda signature, path: 0)
    repository.refresh()
    predictor = batching.make_predictor(repository, NAME, parameters, run=run)
    app = serve.create_app(repository, NAME, max_instances=8, request_logger=request_logger, predictor=predictor)
    return app.test_client(), predictor


def _post(client, body):
    return client.post(f"/v1/models/{NAME}:predict", data=json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("parameters", [None, batching.BatchingParameters()])
def test_output_filter_returns_only_the_asked_outputs(tmp_path, parameters):
    client, predictor = _app(tmp_path, Recorder(), parameters)
    try:
        full = _post(client, {"instances": TEXTS[:3]}).get_json()["predictions"]
        assert [list(row) for row in full] == [list(predict.OUTPUTS)] * 3  # today's answer, in its order
        for asked in (["probability", "label"], ["label"], ["trajectory"], "probability"):
            response = _post(client, {"instances": TEXTS[:3], "output_filter": asked})
            assert response.status_code == 200, response.get_json()
            rows = response.get_json()["predictions"]
            wanted = [name for name in predict.OUTPUTS if name in ([asked] if isinstance(asked, str) else asked)]
            assert rows == [{k: row[k] for k in wanted} for row in full]
        assert _post(client, {"instances": TEXTS[:3], "output_filter": []}).get_json()["predictions"] == full
        for bad, message in ((["probability", "logits"], "unknown output 'logits'"),
                             ([1], "must be a list of output names"), ({"a": 1}, "must be a list of output names")):
            response = _post(client, {"instances": ["x"], "output_filter": bad})
            assert response.status_code == 400 and message in response.get_json()["error"]
    finally:
        predictor.stop()


def test_a_full_queue_is_a_503_over_rest(tmp_path):
    gate = threading.Event()
    run = Recorder(gate)
    client, predictor = _app(tmp_path, run, batching.BatchingParameters(
        max_batch_size=1, num_batch_threads=1, max_enqueued_batches=1))
    try:
        clients = [client.application.test_client() for _ in range(2)]
        threads, results, _ = _in_threads(_post, [(clients[0], {"instances": ["a"]})])
        _wait_until(lambda: len(run.calls) == 1)
        more, more_results, _ = _in_threads(_post, [(clients[1], {"instances": ["b"]})])
        _wait_until(lambda: predictor.counters()["queued_batches"] == 1)
        response = _post(client, {"instances": ["c"]})
        assert response.status_code == 503 and response.mimetype == "application/json"
        assert "queue of version 100 is full" in response.get_json()["error"]
        status = client.get(f"/v1/models/{NAME}").get_json()
        assert status["batching"]["rejected"] == 1
        gate.set()
        for thread in threads + more:
            thread.join(10)
        assert [r.status_code for r in results + more_results] == [200, 200]
    finally:
        gate.set()
        predictor.stop()


# --- The real (tiny) SavedModel


@pytest.fixture(scope="module")
def exported(tiny_transform, tmp_path_factory):
    _, tft_output = tiny_transform
    root = tmp_path_factory.mktemp("exports")
    return [serving_models.export_tiny_model(tft_output, str(root / f"m{seed}"), seed=seed) for seed in (0, 1)]


def test_merged_batches_answer_exactly_as_one_request_at_a_time(exported, tmp_path):
    base = tmp_path / NAME
    versioned_pusher.push_atomically(exported[0], str(base), version=100)
    repository = serve.ModelRepository(base, warm_up_fn=lambda signature, path: 0)
    repository.refresh()
    _, signature = repository.get(None)
    alone = {text: predict.run_signature(signature, [text]) for text in TEXTS}
    # Every request waits for the batch to fill: the 8 requests are one call of 8 texts.
    batcher = batching.Batcher(repository, NAME, batching.BatchingParameters(
        max_batch_size=len(TEXTS), batch_timeout_micros=5_000_000, num_batch_threads=1))
    try:
        threads, results, errors = _in_threads(batcher.predict, [(None, [text]) for text in TEXTS])
        for thread in threads:
            thread.join(30)
        counters = batcher.counters()
    finally:
        batcher.stop()
    assert not errors
    assert counters["batches"] == 1 and counters["largest_batch"] == len(TEXTS)
    for text, (version, arrays) in zip(TEXTS, results):
        want = alone[text]
        assert version == 100
        assert arrays["label"].tolist() == want["label"].tolist()
        n = int(want["length"][0])
        assert arrays["length"].tolist() == [n]
        # The same floats up to TensorFlow's CPU kernels: an element computed in a vectorized
        # packet of 8 (a batch of 8) and in the scalar tail (a batch of 1) can differ in the last
        # bit (measured: "dull" alone and 8 times in one call, 1 ulp, with or without oneDNN; TF
        # Serving's batching has the same property). Not the slice of another text: those differ
        # by far more.
        for name in ("probability", "attention", "trajectory"):
            got, expected = (arrays[name], want[name]) if name == "probability" else (
                arrays[name][:, :n], want[name][:, :n])
            assert got.shape == expected.shape, (text, name)
            np.testing.assert_array_max_ulp(got, expected, maxulp=4)


def test_the_per_text_signature_answers_as_serving_default_without_per_token_outputs(
        exported, tiny_transform, tmp_path):
    _, tft_output = tiny_transform
    with_rating = serving_models.export_tiny_model(tft_output, str(tmp_path / "rating"), rating_head=True)
    for export_dir, expected in ((exported[0], {"probability", "label", "length"}),
                                 (with_rating, {"probability", "label", "length", "rating"})):
        signature = predict.load_signature(export_dir)
        full = predict.run_signature(signature, TEXTS)
        light = predict.run_signature(signature, TEXTS, per_token=False)
        assert set(light) == expected and {"attention", "trajectory"} <= set(full)
        for name in expected:  # the same batch, the same kernels: the same values
            np.testing.assert_array_equal(light[name], full[name], err_msg=name)
        # An export without it (older than the signature) answers from serving_default.
        signature.per_text = None
        assert set(predict.run_signature(signature, TEXTS[:2], per_token=False)) == set(full)


def test_rest_with_batching_gives_the_answers_of_rest_without(exported, tmp_path):
    base = tmp_path / NAME
    versioned_pusher.push_atomically(exported[0], str(base), version=100)
    repository = serve.ModelRepository(base, warm_up_fn=lambda signature, path: 0)
    repository.refresh()
    plain = serve.create_app(repository, NAME).test_client()
    batcher = batching.Batcher(repository, NAME, batching.BatchingParameters(num_batch_threads=1))
    batched = serve.create_app(repository, NAME, predictor=batcher)
    try:
        want = {text: _post(plain, {"instances": [text]}).get_json() for text in TEXTS}
        clients = [batched.test_client() for _ in TEXTS]
        threads, results, errors = _in_threads(_post, [(c, {"instances": [t]}) for c, t in zip(clients, TEXTS)])
        for thread in threads:
            thread.join(30)
    finally:
        batcher.stop()
    assert not errors
    for text, response in zip(TEXTS, results):
        assert response.status_code == 200
        got, expected = response.get_json(), want[text]
        assert got["model_version"] == expected["model_version"] == "100"
        (row,), (expected_row,) = got["predictions"], expected["predictions"]
        # The tiny export has no rating head: every other output, in predict.OUTPUTS order.
        assert list(row) == list(expected_row) == [name for name in predict.OUTPUTS if name != "rating"]
        assert (row["label"], row["length"]) == (expected_row["label"], expected_row["length"])
        for name in ("probability", "attention", "trajectory"):  # up to the last bit (see above)
            np.testing.assert_array_max_ulp(np.float32(row[name]), np.float32(expected_row[name]), maxulp=4)
