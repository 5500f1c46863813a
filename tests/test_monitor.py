"""`python -m pipeline monitor`: features, TFDV skew/drift verdicts, exit codes, outputs.

The comparison is tested on synthetic texts with a given vocabulary and a fake
scorer (no trained model); the last test runs the whole path with the tiny
exported model: server with --log-requests, then the monitor command.
"""

import dataclasses
import json
import math
import random

import pytest

from pipeline import configs, monitor, request_log

MONITORING = configs.MonitoringConfig()
POSITIVE = ["good", "great", "superb", "moving", "fine"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring"]
NEUTRAL = ["the", "movie", "plot", "a", "cast", "story", "film", "scene", "and", "it", "is", "of"]
VOCABULARY = frozenset(POSITIVE + NEGATIVE + NEUTRAL + [",", "."])
T0 = 1_800_000_000.0


def fake_texts(n, seed, positive_share=0.5, words=(8, 30)):
    """(texts, probabilities, labels): sentiment words of the class, neutral words, a few unknown ones;
    the fake scorer's probability rises with the positive words' majority."""
    rng = random.Random(seed)
    texts, probabilities, labels = [], [], []
    for _ in range(n):
        positive = rng.random() < positive_share
        tokens = []
        for _ in range(rng.randint(*words)):
            draw = rng.random()
            if draw < 0.2:
                tokens.append(rng.choice(POSITIVE if positive else NEGATIVE))
            elif draw < 0.25:
                tokens.append(f"zz{rng.randint(0, 999)}")
            else:
                tokens.append(rng.choice(NEUTRAL))
        text = " ".join(tokens).capitalize() + rng.choice([".", "!", " ,ok"])
        score = sum(t in POSITIVE for t in tokens) - sum(t in NEGATIVE for t in tokens) + rng.gauss(0, 0.7)
        probability = 1 / (1 + math.exp(-score))
        texts.append(text)
        probabilities.append(probability)
        labels.append(int(probability >= 0.5))
    return texts, probabilities, labels


class FakeReference:
    """A reference of 1000 balanced fake texts; counts how often it is computed."""

    def __init__(self, version=5):
        self.built = 0
        self.version = version

    def __call__(self, traffic_version):
        def frame():
            self.built += 1
            return monitor.feature_frame(*fake_texts(1000, seed=0), VOCABULARY)

        return monitor.Reference(self.version, VOCABULARY, "fake texts", {"fake": 1}, frame)


def write_traffic(directory, n, seed, when=T0, version=5, **kwargs):
    """Logged records, as the server's writer formats them."""
    directory.mkdir(parents=True, exist_ok=True)
    texts, probabilities, labels = fake_texts(n, seed, **kwargs)
    with open(directory / request_log.file_name(when), "w", encoding="utf-8") as f:
        for i, (text, p, label) in enumerate(zip(texts, probabilities, labels)):
            f.write(request_log.format_record(when + i * 0.01, version, text, {"probability": p, "label": label}))
    return directory


def check(tmp_path, logs, monitoring=MONITORING, reference=None, until=T0 + 3600, since=None):
    return monitor.check_window([logs], tmp_path / "monitoring", monitoring, reference or FakeReference(),
                                since=since, until=until)


def test_features_tokenize_like_the_model():
    frame = monitor.feature_frame(["  Good movie!<br />BAD plot  ", "", "zz zz"], [0.9, 0.5, 0.1], [1, 1, 0],
                                  {"good", "movie", "bad"})
    # tokens: good movie ! bad plot -> "!" and "plot" are not in the vocabulary
    assert frame[monitor.OOV_SHARE].tolist() == [pytest.approx(0.4), 0.0, 1.0]
    assert frame[monitor.NUM_CHARS].tolist() == [25, 0, 5]
    assert frame[monitor.PREDICTED_LABEL].tolist() == [1, 1, 0]


def test_traffic_like_the_reference_exits_0_and_prints_the_figures(tmp_path):
    outcome = check(tmp_path, write_traffic(tmp_path / "logs", 400, seed=1))
    assert outcome.exit_code == monitor.EXIT_OK, outcome.lines
    (figures,) = [line for line in outcome.lines if line.startswith("monitor: 400 records")]
    assert "skew: num_chars JSD" in figures and "predicted_label Linf" in figures and "drift: no previous" in figures
    assert not [line for line in outcome.lines if line.startswith(("skew:", "drift:"))]
    summary = json.loads((outcome.window_dir / "summary.json").read_text())
    measured = {(m["kind"], m["feature"]): m for m in summary["measurements"]}
    assert set(measured) == {("skew", f) for f in monitor.FEATURES}
    assert all(m["value"] < m["threshold"] for m in measured.values())
    assert measured[("skew", "num_chars")]["measure"] == "jensen_shannon_divergence"
    assert measured[("skew", "predicted_label")]["threshold"] == MONITORING.predicted_label_linf
    assert summary["exit_code"] == 0 and summary["traffic"]["records"] == 400
    for name in ("skew_anomalies.pbtxt", "skew_anomalies.pb", "traffic_stats.pb", "schema.pbtxt", "index.html"):
        assert (outcome.window_dir / name).is_file(), name


def test_longer_texts_are_num_chars_skew_exit_1(tmp_path):
    outcome = check(tmp_path, write_traffic(tmp_path / "logs", 400, seed=1, words=(60, 120)))
    assert outcome.exit_code == monitor.EXIT_FINDINGS
    assert any(line.startswith("skew: num_chars: Jensen-Shannon divergence ") and line.endswith("> 0.10")
               for line in outcome.lines), outcome.lines
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    anomalies = anomalies_pb2.Anomalies.FromString((outcome.window_dir / "skew_anomalies.pb").read_bytes())
    assert "num_chars" in anomalies.anomaly_info


def test_another_label_balance_is_predicted_label_skew_exit_1(tmp_path):
    outcome = check(tmp_path, write_traffic(tmp_path / "logs", 400, seed=1, positive_share=0.9))
    assert outcome.exit_code == monitor.EXIT_FINDINGS
    assert any(line.startswith("skew: predicted_label: L-infinity distance ") for line in outcome.lines), outcome.lines
    assert not any(line.startswith("skew: num_chars") for line in outcome.lines)


def test_bounds_come_from_the_config(tmp_path):
    loose = configs.with_overrides(configs.POLARITY, {"monitoring.num_chars_jsd": "1.0",
                                                      "monitoring.oov_share_jsd": "1.0"}).monitoring
    outcome = check(tmp_path, write_traffic(tmp_path / "logs", 400, seed=1, words=(60, 120)), monitoring=loose)
    assert not any(line.startswith("skew: num_chars") for line in outcome.lines), outcome.lines
    assert "num_chars JSD" in outcome.lines[-2] and "/1.00" in outcome.lines[-2]


def test_drift_is_measured_against_the_previous_window_which_starts_where_it_ended(tmp_path):
    logs = tmp_path / "logs"
    write_traffic(logs, 400, seed=1, when=T0)
    reference = FakeReference()
    first = check(tmp_path, logs, reference=reference, until=T0 + 100)
    assert first.exit_code == 0 and first.summary["previous_window"] is None
    write_traffic(logs, 400, seed=2, when=T0 + 200, positive_share=0.9)
    second = check(tmp_path, logs, reference=reference, until=T0 + 300)
    assert second.summary["window"]["since"] == T0 + 100  # the previous window's end
    assert second.summary["traffic"]["records"] == 400 and second.summary["previous_window"] == first.window_dir.name
    assert any(line.startswith("drift: predicted_label: L-infinity distance") for line in second.lines), second.lines
    assert second.exit_code == monitor.EXIT_FINDINGS
    assert reference.built == 1  # the reference statistics were cached for version 5


def test_too_few_records_or_none_in_the_window_is_no_verdict(tmp_path):
    logs = write_traffic(tmp_path / "logs", 50, seed=1)
    with pytest.raises(monitor.MonitorError, match=r"only 50 logged records .* monitoring.min_requests=200"):
        check(tmp_path, logs)
    with pytest.raises(monitor.MonitorError, match="no logged record between"):
        check(tmp_path, logs, since=T0 + 7200, until=T0 + 9000)
    assert not (tmp_path / "monitoring").exists() or not any((tmp_path / "monitoring").iterdir())
    few = dataclasses.replace(MONITORING, min_requests=50)
    assert check(tmp_path, logs, monitoring=few).exit_code in (0, 1)


def _cli(argv, capsys):
    from pipeline.__main__ import main

    code = main(["monitor", "--dataset", "polarity", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_exits_2_with_a_clear_message_and_no_traceback(tmp_path, capsys):
    logs = write_traffic(tmp_path / "logs", 50, seed=1)
    out = ["--output-dir", str(tmp_path / "out"), "--until", str(T0 + 3600)]  # T0 may be in the future
    code, _, err = _cli(["--log-dir", str(logs), "--since", "2027-01-15T08:00:00Z", *out], capsys)
    assert code == 2 and "error: only 50 logged records" in err and "Traceback" not in err
    code, _, err = _cli(["--log-dir", str(tmp_path / "nowhere"), *out], capsys)
    assert code == 2 and "no such log directory" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(["--log-dir", str(tmp_path / "empty"), *out], capsys)
    assert code == 2 and "no request log files" in err
    code, _, err = _cli(["--log-dir", str(logs), "--since", "yesterday", *out], capsys)
    assert code == 2 and "not a time: 'yesterday'" in err
    code, _, err = _cli(["--log-dir", str(logs), "--set", "monitoring.min_request=5", *out], capsys)
    assert code == 2 and "unknown config field 'monitoring.min_request'" in err
    code, _, err = _cli(["--log-dir", str(logs), "--set", "monitoring.min_requests=10", *out], capsys)
    assert code == 2 and "no served model under" in err


def test_readers_see_complete_lines_of_the_request_log_only(tmp_path):
    logger = request_log.RequestLogger(tmp_path)
    logger.log(3, ["one", "two"], [{"probability": 0.9, "label": 1}, {"probability": 0.1, "label": 0}])
    logger.close()
    (path,) = request_log.log_files(tmp_path)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"time": 1800000000.5, "model_version": 3, "text": "half-writ')  # a line being written
    records, report = monitor.read_records([tmp_path], since=None, until=2e9)
    assert [(r.text, r.model_version, r.label) for r in records] == [("one", 3, 1), ("two", 3, 0)]
    assert records[0].probability == pytest.approx(0.9)
    assert report.incomplete == 1 and report.malformed == 0


@pytest.mark.parametrize("raw,expected", [
    ("1800000000", T0), ("1800000000.5", T0 + 0.5), ("2027-01-15T08:00:00Z", T0),
    ("2027-01-15T09:00:00+01:00", T0), ("2027-01-15T08:00:00", T0), ("20270115T080000Z", T0)])
def test_times_are_unix_seconds_or_iso_8601(raw, expected):
    assert monitor.parse_time(raw) == expected


def test_gzipped_logs_and_other_directories_of_the_same_records_are_read(tmp_path):
    import gzip

    served = write_traffic(tmp_path / "served", 150, seed=1)
    batch = tmp_path / "batch"
    batch.mkdir()
    texts, probabilities, labels = fake_texts(150, seed=3)
    with gzip.open(batch / "predictions.jsonl.gz", "wt", encoding="utf-8") as f:
        for text, p, label in zip(texts, probabilities, labels):
            f.write(json.dumps({"time": T0 + 5, "model_version": 5, "text": text, "probability": p,
                                "label": label}) + "\n")
        f.write("not json\n")
    outcome = monitor.check_window([served, batch], tmp_path / "monitoring", MONITORING, FakeReference(),
                                   until=T0 + 3600)
    assert outcome.summary["traffic"]["records"] == 300 and outcome.summary["traffic"]["malformed"] == 1
    assert outcome.exit_code == 0, outcome.lines


@pytest.mark.e2e
def test_served_traffic_through_the_real_model_and_server(tiny_transform, tmp_path, capsys):
    """The whole path: the exported (untrained) model behind the server with a request logger,
    then `monitor` on its logs with the model's own vocabulary and a reference file."""
    import csv
    import gzip

    from components import versioned_pusher
    from pipeline import serve
    from tests import serving_models

    _, tft_output = tiny_transform
    base = tmp_path / "serving" / "sentiment-polarity"
    model_dir = serving_models.export_tiny_model(tft_output, str(tmp_path / "export"))
    versioned_pusher.push_atomically(model_dir, str(base), version=7)
    reference_texts, _, _ = fake_texts(400, seed=0)
    reference_file = tmp_path / "reference.csv.gz"
    with gzip.open(reference_file, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([t, 0] for t in reference_texts)

    def serve_and_log(texts, logs):
        repository = serve.ModelRepository(base)
        repository.refresh()
        logger = request_log.RequestLogger(logs)
        client = serve.create_app(repository, "sentiment-polarity", request_logger=logger).test_client()
        for start in range(0, len(texts), 50):
            response = client.post("/v1/models/sentiment-polarity:predict",
                                   data=json.dumps({"instances": texts[start:start + 50]}),
                                   content_type="application/json")
            assert response.status_code == 200
        assert logger.close()["logged"] == len(texts)

    serve_and_log(fake_texts(300, seed=1)[0], tmp_path / "same")
    common = ["--output-dir", str(tmp_path), "--model-base-dir", str(base), "--reference-data", str(reference_file)]
    code, out, err = _cli(["--log-dir", str(tmp_path / "same"), *common], capsys)
    assert code == 0, out + err
    assert "monitor: 300 records (v7: 300)" in out
    summary = json.loads(next((tmp_path / "monitoring" / "sentiment-polarity").glob("2*/summary.json")).read_text())
    assert summary["reference"]["model_version"] == 7 and summary["reference"]["examples"] == 400
    oov = next(m for m in summary["measurements"] if m["feature"] == "oov_share")
    assert oov["value"] < 0.1

    serve_and_log(fake_texts(300, seed=2, words=(60, 120))[0], tmp_path / "long")
    code, out, err = _cli(["--log-dir", str(tmp_path / "long"), "--since", "0", *common], capsys)
    assert code == 1, out + err
    assert "skew: num_chars: Jensen-Shannon divergence" in out
    assert (tmp_path / "monitoring" / "sentiment-polarity" / "reference-v7" / "reference_stats.pb").is_file()
