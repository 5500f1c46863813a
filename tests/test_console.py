"""The run's console (pipeline/console.py): a few lines for a person, the rest in the run's log.

Small and fast: no pipeline runs. The file-descriptor cases run in a child
process, as the CLI does, so what reaches its stdout is what a user sees.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import configs, console, local_runner

ROOT = Path(__file__).resolve().parents[1]

# Writes of every kind a run makes: absl, TensorFlow's and Beam's Python loggers, a warning,
# a print (Keras' progress bars), raw fd 2 (TensorFlow's C++ logs), then TFX's component records.
NOISY_RUN = """
import logging, os, sys, warnings
from absl import logging as absl_logging
from pipeline import console

with console.RunConsole(console.log_path(sys.argv[1]), verbose=sys.argv[2] == "verbose") as run:
    run.print("HEADER line for a person")
    absl_logging.info("ABSL info: Using deployment config")
    logging.getLogger("tensorflow").warning("TF python warning")
    logging.getLogger("apache_beam").warning("BEAM warning")
    warnings.warn("A FutureWarning", FutureWarning)
    print("PRINTED progbar 10/10")
    os.write(2, b"CPP log: oneDNN custom operations are on\\n")
    absl_logging.info("Component %s is running.", "ExampleGen")
    absl_logging.info("Component %s is finished.", "ExampleGen")
print("AFTER the run", flush=True)
"""


def _child(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _only_log(root: Path) -> str:
    logs = sorted((root / "logs").glob("run-*.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


NOISE = ("ABSL info", "TF python warning", "BEAM warning", "A FutureWarning", "PRINTED progbar", "CPP log")


def test_library_output_goes_to_the_log_and_only_component_lines_to_the_console(tmp_path):
    result = _child(NOISY_RUN, str(tmp_path), "quiet")
    assert result.returncode == 0, result.stderr
    console_lines = result.stdout.splitlines()
    assert console_lines[0] == "HEADER line for a person"
    assert [line.split("] ", 1)[1].split()[:2] for line in console_lines[1:3]] == [
        ["ExampleGen", "started"], ["ExampleGen", "done"]]
    assert console_lines[3:] == ["AFTER the run"]  # fds 1 and 2 are the console's again
    assert result.stderr == ""
    log = _only_log(tmp_path)
    for text in NOISE + ("Component ExampleGen is running.", "HEADER line for a person"):
        assert text in log, text


def test_verbose_streams_the_log_to_the_console_too(tmp_path):
    result = _child(NOISY_RUN, str(tmp_path), "verbose")
    assert result.returncode == 0, result.stderr
    for text in NOISE + ("HEADER line", "ExampleGen                 started"):
        assert text in result.stdout, text
    log = _only_log(tmp_path)
    for text in NOISE:
        assert text in log, text


def test_import_time_output_waits_for_the_runs_log_and_comes_back_when_startup_fails(tmp_path):
    script = """
    import os, sys
    from pipeline import console
    with console.startup_output():
        os.write(2, b"TF import noise\\n")
    try:
        with console.startup_output():
            os.write(2, b"noise before a bad argument\\n")
            raise SystemExit("error: bad argument")
    except SystemExit as error:
        print(error, flush=True)
    with console.RunConsole(console.log_path(sys.argv[1])):
        pass
    print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"), flush=True)
    """
    result = _child(script, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "TF import noise" not in result.stdout + result.stderr
    assert "noise before a bad argument" in result.stderr
    assert result.stdout.splitlines() == ["error: bad argument", console.QUIET_TF_CPP_LEVEL]
    assert "TF import noise" in _only_log(tmp_path)


def test_tensorflow_cpp_logs_are_lowered_unless_verbose(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    console.quiet_tensorflow(verbose=True)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    console.quiet_tensorflow(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == console.QUIET_TF_CPP_LEVEL


def _record(msg: str, *args) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "absl", "levelno": logging.INFO, "levelname": "INFO",
                                  "msg": msg, "args": args})


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_component_start_and_end_is_one_line_with_its_wall_time_and_figure():
    lines, clock = [], _Clock()
    handler = console.ComponentLines(lines.append, figure=lambda name: f"figure of {name}", clock=clock)
    handler.handle(_record("Component %s is running.", "Transform"))
    handler.handle(_record("Going to run a new execution %d", 7))
    handler.handle(_record("Using deployment config:\n %s", "x" * 5000))
    clock.now += 75.0
    handler.handle(_record("Component %s is finished.", "Transform"))
    handler.handle(_record("Component %s is running.", "StatisticsGen"))
    handler.handle(_record("A cached execution %d is used.", 3))
    clock.now += 0.25
    handler.handle(_record("Component %s is finished.", "StatisticsGen"))
    texts = [line.split("] ", 1)[1] for line in lines]
    assert texts == [
        f"{'Transform':<26} started",
        f"{'Transform':<26} done in 1 min 15 s: figure of Transform",
        f"{'StatisticsGen':<26} started",
        f"{'StatisticsGen':<26} done in 0.2 s (cached): figure of StatisticsGen",
    ]
    assert handler.finished == [("Transform", 75.0, "done"), ("StatisticsGen", 0.25, "cached")]


def test_each_trainer_epoch_is_one_line_with_loss_and_validation_metrics():
    lines, clock = [], _Clock()
    handler = console.ComponentLines(lines.append, figure=lambda name: "2 epoch(s)", clock=clock)
    handler.handle(_record("Component %s is running.", "Trainer"))
    for epoch in (1, 2):
        handler.handle(_record(f"Epoch {epoch}/15"))
        clock.now += 23
        handler.handle(_record("134/134 - 23s - loss: 0.5647 - accuracy: 0.7194 - auc: 0.7910 - member_loss: 0.5960 - "
                               "val_loss: 0.5581 - val_accuracy: 0.7353 - val_auc: 0.8140 - 23s/epoch - 173ms/step\n"))
    handler.handle(_record("Epoch 2: early stopping"))
    handler.handle(_record("Restoring model weights from the end of the best epoch: 1."))
    handler.handle(_record("Component %s is finished.", "Trainer"))
    texts = [line.split("] ", 1)[1].strip() for line in lines]
    assert texts[1] == "epoch  1/15: loss 0.5647, val_loss 0.5581, val_accuracy 0.7353, val_auc 0.8140 (23.0 s)"
    assert texts[2].startswith("epoch  2/15: loss 0.5647")
    assert texts[3] == (f"{'Trainer':<26} done in 46.0 s: 2 epoch(s); stopped early after epoch 2; "
                        "weights of epoch 1 kept")
    assert len(lines) == 4


def test_a_components_progress_lines_show_while_it_runs_and_only_then():
    lines, clock = [], _Clock()
    handler = console.ComponentLines(lines.append, figure=lambda name: None, clock=clock)
    handler.handle(_record("progress: %s", "before anything runs"))
    handler.handle(_record("Component %s is running.", "ReaderPretrainer"))
    handler.handle(_record("progress: %s", "labelled corpus: 300,261 sentences"))
    handler.handle(_record("progress: %d%% of epoch 1/1, loss %.4f", 10, 0.5523))
    handler.handle(_record("Component %s is finished.", "ReaderPretrainer"))
    texts = [line.split("] ", 1)[1].strip() for line in lines]
    assert texts[1:3] == ["labelled corpus: 300,261 sentences", "10% of epoch 1/1, loss 0.5523"]
    assert len(lines) == 4


def test_a_component_that_never_finishes_is_reported_failed():
    lines, clock = [], _Clock()
    handler = console.ComponentLines(lines.append, figure=lambda name: "not asked", clock=clock)
    handler.handle(_record("Component %s is running.", "Trainer"))
    clock.now += 3
    handler.close_run(failed=True)
    assert lines[-1].split("] ", 1)[1] == f"{'Trainer':<26} failed in 3.0 s"


@pytest.fixture
def config(tmp_path, monkeypatch):
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,1\nbad,0\n")
    monkeypatch.setattr(local_runner.metadata_store, "connect", lambda *_: None)
    return configs.PipelineConfig(dataset=configs.DATASETS["polarity"], input_path=data,
                                  output_dir=tmp_path / "out")


def test_a_failure_is_one_paragraph_naming_the_log_that_holds_the_traceback(config, monkeypatch, capfd):
    def broken(config, run_id, session):
        session.print("header")
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(local_runner, "_run_locked", broken)
    with pytest.raises(local_runner.PipelineFailed) as raised:
        local_runner.run(config)
    message = str(raised.value)
    assert message.startswith("The run failed: RuntimeError: the disk caught fire\n")
    assert "Traceback (most recent call last)" not in message
    log = Path(message.splitlines()[-1].removeprefix("Traceback: "))
    assert log.parent == config.pipeline_root / "logs"
    assert "Traceback (most recent call last)" in log.read_text()
    assert "RuntimeError: the disk caught fire" in log.read_text()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert f"log:           {log}" not in out  # the header is _run_locked's; here: only what it printed
    assert out.strip() == "header"


def test_a_data_failure_keeps_its_paragraph_and_names_the_log(config, monkeypatch):
    def bad_data(config, run_id, session):
        try:
            raise ValueError("label: LABEL_CLASS_MISSING")
        except ValueError as error:
            raise local_runner.PipelineFailed("label: LABEL_CLASS_MISSING\nThe run stopped before training.") from error

    monkeypatch.setattr(local_runner, "_run_locked", bad_data)
    with pytest.raises(local_runner.PipelineFailed) as raised:
        local_runner.run(config)
    message = str(raised.value)
    assert "Traceback" not in message
    assert message.startswith("label: LABEL_CLASS_MISSING\nThe run stopped before training.\nLog: ")
    assert "ValueError: label: LABEL_CLASS_MISSING" in Path(message.splitlines()[-1].removeprefix("Log: ")).read_text()
