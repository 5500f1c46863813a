"""Request logging (pipeline/request_log.py) and its use by the server (serve --log-requests)."""

import json
import threading
import time

import pytest

from pipeline import request_log, serve

NAME = "sentiment-polarity"


def _result(p=0.75):
    return {"probability": p, "label": int(p >= 0.5), "length": 1, "attention": [1.0], "trajectory": [p]}


def _lines(directory):
    rows = []
    for path in request_log.log_files(directory):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


class Clock:
    """A clock that moves 1 ms a call, so every file gets a distinct name."""

    def __init__(self, start=1_800_000_000.0):
        self.now = start

    def __call__(self):
        self.now += 0.001
        return self.now


def test_every_instance_is_one_json_line_with_the_record_keys(tmp_path):
    logger = request_log.RequestLogger(tmp_path, clock=Clock())
    assert logger.log(7, ["good", "naïve <br /> \"quoted\"\n"], [_result(0.9), _result(0.2)])
    counters = logger.close()
    rows = _lines(tmp_path)
    assert [tuple(r) for r in rows] == [request_log.RECORD_KEYS] * 2
    assert [(r["model_version"], r["text"], r["label"]) for r in rows] == [
        (7, "good", 1), (7, "naïve <br /> \"quoted\"\n", 0)]
    assert rows[0]["probability"] == pytest.approx(0.9) and rows[0]["time"] == rows[1]["time"] > 1.8e9
    assert counters["logged"] == 2 and counters["dropped"] == counters["errors"] == 0
    (path,) = request_log.log_files(tmp_path)
    assert request_log.FILE_PATTERN.fullmatch(path.name) and path.name.startswith("requests-20270115T")


def _sampled_requests(directory, rate, seed, requests=1000):
    logger = request_log.RequestLogger(directory, sample_rate=rate, seed=seed)
    for i in range(requests):
        logger.log(1, [f"r{i}a", f"r{i}b"], [_result(), _result()])
    counters = logger.close()
    texts = [r["text"] for r in _lines(directory)]
    return counters, texts


def test_sampling_is_per_request_at_the_rate_and_repeatable_with_a_seed(tmp_path):
    counters, texts = _sampled_requests(tmp_path / "a", 0.3, seed=11)
    logged = {t[:-1] for t in texts}
    # Whole requests: both instances of a sampled request, none of the others.
    assert sorted(texts) == sorted([f"{r}a" for r in logged] + [f"{r}b" for r in logged])
    assert 240 <= len(logged) <= 360  # 0.3 of 1000, +- 4 standard deviations
    assert counters["logged"] == 2 * len(logged) and counters["sampled_out"] == 2000 - 2 * len(logged)
    _, again = _sampled_requests(tmp_path / "b", 0.3, seed=11)
    assert again == texts
    _, other = _sampled_requests(tmp_path / "c", 0.3, seed=12)
    assert other != texts
    assert _sampled_requests(tmp_path / "none", 0.0, seed=1)[1] == []
    assert len(_sampled_requests(tmp_path / "all", 1.0, seed=1, requests=10)[1]) == 20


def test_a_file_is_rotated_before_it_would_pass_the_size_limit(tmp_path):
    line_bytes = len(request_log.format_record(1_800_000_000.123456, 1, "x" * 20, _result()).encode())
    logger = request_log.RequestLogger(tmp_path, file_bytes=3 * line_bytes + 10, max_files=100, clock=Clock())
    for i in range(10):
        logger.log(1, [f"{i:020d}"], [_result()])
        logger.flush()
    counters = logger.close()
    files = request_log.log_files(tmp_path)
    assert [len(p.read_text().splitlines()) for p in files] == [3, 3, 3, 1]
    assert all(p.stat().st_size <= 3 * line_bytes + 10 for p in files)
    assert counters["files_rotated"] == 3 and counters["logged"] == 10
    assert [r["text"] for r in _lines(tmp_path)] == [f"{i:020d}" for i in range(10)]  # names sort by time


def test_only_the_newest_max_files_are_kept(tmp_path):
    line_bytes = len(request_log.format_record(1_800_000_000.123456, 1, "x" * 20, _result()).encode())
    logger = request_log.RequestLogger(tmp_path, file_bytes=line_bytes, max_files=3, clock=Clock())
    for i in range(8):
        logger.log(1, [f"{i:020d}"], [_result()])
        logger.flush()
    counters = logger.close()
    assert len(request_log.log_files(tmp_path)) == 3
    assert [r["text"] for r in _lines(tmp_path)] == [f"{i:020d}" for i in (5, 6, 7)]
    assert counters["files_deleted"] == 5 and counters["files_rotated"] == 7


def test_a_restarted_logger_never_reuses_a_file_and_counts_old_files_against_max_files(tmp_path):
    clock = Clock()
    first = request_log.RequestLogger(tmp_path, clock=clock)
    first.log(1, ["old"], [_result()])
    first.close()
    clock.now -= 1.0  # even with a clock that went back
    second = request_log.RequestLogger(tmp_path, max_files=1, clock=clock)
    second.log(1, ["new"], [_result()])
    second.close()
    assert [r["text"] for r in _lines(tmp_path)] == ["new"]


class FakeSignature:
    """The exported signature's outputs, no TensorFlow model: probability 0.75 for every text."""

    def __call__(self, text):
        import tensorflow as tf

        n = int(text.shape[0])
        return {"probability": tf.fill([n], 0.75), "label": tf.ones([n], tf.int64),
                "attention": tf.ones([n, 1]), "trajectory": tf.fill([n, 1], 0.75),
                "length": tf.ones([n], tf.int64)}


def _app(tmp_path, logger):
    base = tmp_path / NAME
    (base / "100").mkdir(parents=True)
    repository = serve.ModelRepository(base, loader=lambda path: FakeSignature(), warm_up_fn=lambda s, p: 0)
    repository.refresh()
    return serve.create_app(repository, NAME, max_instances=8, request_logger=logger).test_client()


def _post(client, texts):
    return client.post(f"/v1/models/{NAME}:predict", data=json.dumps({"instances": texts}),
                       content_type="application/json")


def test_the_server_logs_what_it_answered_and_reports_the_counters(tmp_path):
    logger = request_log.RequestLogger(tmp_path / "logs")
    client = _app(tmp_path, logger)
    assert "request_log" not in _app(tmp_path / "plain", None).get(f"/v1/models/{NAME}").get_json()
    answer = _post(client, ["a good film", "dull"]).get_json()
    assert _post(client, {"not": "texts"}).status_code == 400  # not answered: not logged
    logger.flush()
    status = client.get(f"/v1/models/{NAME}").get_json()
    assert status["request_log"]["logged"] == 2 and status["request_log"]["dropped"] == 0
    logger.close()
    rows = _lines(tmp_path / "logs")
    assert [(r["text"], r["model_version"], r["label"]) for r in rows] == [("a good film", 100, 1), ("dull", 100, 1)]
    assert [r["probability"] for r in rows] == [p["probability"] for p in answer["predictions"]]


def test_a_full_queue_drops_records_counts_them_and_never_delays_the_answer(tmp_path):
    entered, release = threading.Event(), threading.Event()

    class StuckDisk(request_log.RequestLogger):
        def _write_batch(self, batch):
            entered.set()
            release.wait(30)
            super()._write_batch(batch)

    logger = StuckDisk(tmp_path / "logs", queue_size=4)
    client = _app(tmp_path, logger)
    assert _post(client, ["r0 a", "r0 b"]).status_code == 200
    assert entered.wait(10)  # the writer holds request 0 and is stuck on the disk
    durations = []
    for i in range(1, 10):
        start = time.monotonic()
        assert _post(client, [f"r{i} a", f"r{i} b"]).status_code == 200
        durations.append(time.monotonic() - start)
    assert max(durations) < 2.0  # nothing waited for the writer (an answer takes milliseconds)
    counters = logger.counters()
    assert counters["dropped"] == 14 and counters["queued"] == 4  # requests 1 and 2 wait; 3-9 dropped whole
    release.set()
    counters = logger.close()
    assert counters["logged"] == 6 and counters["dropped"] == 14
    assert sorted({r["text"].split()[0] for r in _lines(tmp_path / "logs")}) == ["r0", "r1", "r2"]


def test_close_writes_everything_queued_and_later_requests_are_counted_not_raised(tmp_path):
    logger = request_log.RequestLogger(tmp_path, queue_size=100_000)
    for i in range(5000):
        logger.log(1, [f"t{i}"], [_result()])
    counters = logger.close()
    assert counters["logged"] == 5000 and counters["queued"] == 0
    assert len(_lines(tmp_path)) == 5000
    assert logger.log(1, ["late"], [_result()]) is False
    assert logger.counters()["dropped"] == 1


def test_logging_failures_are_counted_and_never_raised(tmp_path):
    logger = request_log.RequestLogger(tmp_path)
    assert logger.log(1, None, None) is False  # not even a list
    assert logger.log(1, ["fine", "bad result"], [_result(), {"probability": "high"}])
    counters = logger.close()
    assert counters["errors"] == 2 and counters["logged"] == 1
    assert [r["text"] for r in _lines(tmp_path)] == ["fine"]


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "nan", "x"])
def test_a_sample_rate_outside_0_to_1_is_a_usage_error(rate, capsys):
    from pipeline.__main__ import make_parser

    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args(["serve", "--log-requests", "x", "--log-sample-rate", rate])
    assert exit_info.value.code == 2 and "--log-sample-rate" in capsys.readouterr().err
    args = make_parser().parse_args(["serve", "--log-requests", "x", "--log-sample-rate", "0.25"])
    assert args.log_sample_rate == 0.25 and args.log_requests == "x"
