"""The fault suite: what a production run meets, injected into real runs.

Each case asserts the outcome a user relies on: a non-zero exit with one
clear paragraph (no traceback unless --verbose), nothing half-written where
the server looks, and the same command completing afterwards.

* SIGKILL during ExampleGen, Transform, Trainer (after an epoch's checkpoint),
  Evaluator and Pusher, one after the other on one output directory; each
  next run goes on from the cache, the Trainer resumes from its checkpoint,
  and a run started while another holds the directory refuses at once.
* A read-only and a full output directory (tmpfs mounts; skipped where this
  process cannot mount), a missing data directory, and a truncated TFRecord
  in a cached Transform output.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models import trainer
from pipeline import configs, model_card, run_summary
from pipeline.__main__ import main
from tests.helpers import SMALL_MODEL, real_polarity_lines, write_gz_lines

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

ROWS = 400
PIPELINE = "sentiment-polarity"
TRACEBACK = "Traceback (most recent call last)"
# Three epochs, so a kill after the first one's checkpoint leaves epochs to resume.
OVERRIDES = {**SMALL_MODEL, "training.epochs": "3", "evaluation.min_accuracy": "0"}


def run_args(input_path: Path, output_dir: Path, *extra: str) -> list[str]:
    args = ["run", "--dataset", "polarity", "--input", str(input_path), "--output-dir", str(output_dir)]
    for key, value in OVERRIDES.items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


@pytest.fixture(scope="module")
def polarity_csv(tmp_path_factory):
    return write_gz_lines(tmp_path_factory.mktemp("data") / "rt-polarity.csv.gz", real_polarity_lines(ROWS))


def serving_versions_are_complete(serving: Path) -> list[str]:
    """The numbered versions; each must be a whole SavedModel."""
    versions = sorted(p.name for p in serving.iterdir() if p.name.isdigit()) if serving.exists() else []
    for version in versions:
        assert (serving / version / "saved_model.pb").is_file(), version
        assert (serving / version / "variables" / "variables.index").is_file(), version
    return versions


def _states(output_dir: Path) -> dict[str, str]:
    summary = run_summary.summarize_run(output_dir / "metadata" / f"{PIPELINE}.sqlite", PIPELINE)
    return {c.component: c.state for c in summary.components}


class KilledRun:
    """`python -m pipeline run` in its own process group, SIGKILLed when `ready()` says so."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=configs.PROJECT_ROOT,
                                        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                        env=env)

    def kill_when(self, ready, timeout: float = 600, during=None) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended (exit {self.process.returncode}) before the kill point; "
                                     f"log: {self.log.read_text()[-3000:]}")
            if ready():
                if during:
                    during()
                os.killpg(self.process.pid, signal.SIGKILL)
                return self.process.wait(60)
            time.sleep(0.1)
        os.killpg(self.process.pid, signal.SIGKILL)
        raise AssertionError(f"kill point not reached in {timeout} s; log: {self.log.read_text()[-3000:]}")


def new_dir(pattern: str):
    """A predicate: a directory matching `pattern` appeared that was not there when it was made."""
    before = set(glob.glob(pattern, recursive=True))
    return lambda: bool(set(glob.glob(pattern, recursive=True)) - before)


@pytest.fixture(scope="module")
def kill_chain(polarity_csv, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("killed")
    root = output_dir / "pipelines" / PIPELINE
    serving = output_dir / "serving" / PIPELINE
    args = run_args(polarity_csv, output_dir)
    outcomes = {}

    def concurrent_run_refuses():
        # While the run about to be killed holds the directory, a second run of the
        # same pipeline (in this process: its imports are done) refuses at once.
        import contextlib
        import io

        err = io.StringIO()
        started = time.time()
        with contextlib.redirect_stderr(err):
            code = main(args)
        outcomes["concurrent"] = (code, err.getvalue(), time.time() - started)

    kill_points = [
        ("ExampleGen", new_dir(str(root / "ExampleGen" / "examples" / "*")), concurrent_run_refuses),
        ("Transform", new_dir(str(root / "Transform" / "transform_graph" / "*")), None),
        # The Keras checkpoint's state file is written last, once an epoch is saved.
        ("Trainer", new_dir(str(root / "Trainer" / trainer.CHECKPOINTS_DIR / "**" / "checkpoint")), None),
        ("Evaluator", new_dir(str(root / "Evaluator" / "evaluation" / "*")), None),
        ("Pusher", new_dir(str(root / "Pusher" / "pushed_model" / "*")), None),
    ]
    for component, ready, during in kill_points:
        run = KilledRun(args, output_dir / f"killed-in-{component}.log")
        code = run.kill_when(ready, during=during)
        outcomes[component] = {"exit": code, "versions": serving_versions_are_complete(serving)}
    final = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=configs.PROJECT_ROOT,
                           capture_output=True, text=True, timeout=900)
    outcomes["final"] = {"exit": final.returncode, "stdout": final.stdout, "stderr": final.stderr[-3000:],
                         "states": _states(output_dir), "versions": serving_versions_are_complete(serving),
                         "leftovers": sorted(p.name for p in serving.iterdir()
                                             if not p.name.isdigit() and p.name != model_card.CARDS_DIR)}
    return output_dir, outcomes


def test_every_kill_ends_the_run_and_leaves_only_complete_versions(kill_chain):
    _, outcomes = kill_chain
    for component in ("ExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert outcomes[component]["exit"] == -signal.SIGKILL, component
    # Nothing was pushed before the Pusher ran; the Pusher's kill leaves a whole version or none.
    for component in ("ExampleGen", "Transform", "Trainer", "Evaluator"):
        assert outcomes[component]["versions"] == [], component
    assert len(outcomes["Pusher"]["versions"]) <= 1


def test_the_same_command_completes_after_the_kills_and_reuses_what_finished(kill_chain):
    _, outcomes = kill_chain
    final = outcomes["final"]
    assert final["exit"] == 0, final["stderr"]
    states = final["states"]
    # Everything up to the Evaluator finished in an earlier (later killed) run: cached now.
    for component in ("ExampleGen", "StatisticsGen", "Transform", "Trainer", "InfraValidator"):
        assert states[component] == "CACHED", (component, states)
    # The Evaluator may run again: the model it blessed before the kill is now the baseline.
    assert states["Pusher"] == "COMPLETE"
    # One whole version is served, whether the killed Pusher had copied it or this run did.
    assert len(final["versions"]) == 1
    assert final["leftovers"] == [".push.lock"]


def test_the_trainer_resumed_from_its_checkpoint(kill_chain):
    output_dir, _ = kill_chain
    store = run_summary.open_store(output_dir / "metadata" / f"{PIPELINE}.sqlite")
    runs = [a for a in store.get_artifacts()
            if store.get_artifact_types_by_id([a.type_id])[0].name == "ModelRun"]
    histories = [json.loads((Path(a.uri) / trainer.HISTORY_FILE).read_text()) for a in runs
                 if (Path(a.uri) / trainer.HISTORY_FILE).exists()]
    assert len(histories) == 1
    [history] = histories
    epochs = int(OVERRIDES["training.epochs"])
    assert history["epochs_run"][0] >= 1 and history["epochs_run"][-1] <= epochs - 1
    assert len(history["val_accuracy"]) == len(history["epochs_run"])
    # The finished training removed its checkpoint.
    assert not glob.glob(str(output_dir / "pipelines" / PIPELINE / "Trainer" / trainer.CHECKPOINTS_DIR / "*" / "*"))


def test_a_second_run_on_the_same_directory_refuses_at_once(kill_chain):
    _, outcomes = kill_chain
    code, stderr, seconds = outcomes["concurrent"]
    assert code == 1
    assert f"another run of {PIPELINE} is using" in stderr and "pass another --output-dir" in stderr
    assert "pid " in stderr
    assert TRACEBACK not in stderr
    assert seconds < 120  # it did not wait for the other run


def test_a_truncated_cached_artifact_fails_clearly_and_no_cache_recovers(kill_chain, polarity_csv, capsys):
    output_dir, outcomes = kill_chain
    assert outcomes["final"]["exit"] == 0
    files = sorted(glob.glob(str(output_dir / "pipelines" / PIPELINE / "Transform" / "transformed_examples" / "*"
                                 / "Split-train" / "*.gz")))
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    versions_before = serving_versions_are_complete(output_dir / "serving" / PIPELINE)
    # A new Trainer setting: Transform's output comes from the cache, and the Trainer reads it.
    args = run_args(polarity_csv, output_dir, "--set", "training.epochs=2")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "The run failed in Trainer" in err
    assert "run again with --no-cache" in err
    assert "Nothing was pushed by this run" in err
    assert TRACEBACK not in err
    log = err.strip().splitlines()[-1].removeprefix("Traceback: ")
    assert "DataLossError" in Path(log).read_text()
    assert serving_versions_are_complete(output_dir / "serving" / PIPELINE) == versions_before

    assert main(args + ["--no-cache"]) == 0
    assert set(_states(output_dir).values()) == {"COMPLETE"}


def test_a_missing_data_directory_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"error: data directory .*no-such-dir holds none of"):
        main(["run", "--dataset", "polarity", "--data-dir", str(tmp_path / "no-such-dir"),
              "--output-dir", str(tmp_path / "out")])


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


@pytest.fixture
def mounts():
    mounted = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_output_directory_fails_in_one_paragraph(polarity_csv, tmp_path, mounts, capsys):
    target = tmp_path / "ro"
    if not _mount_tmpfs(target, "ro,size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    mounts.append(target)
    assert main(run_args(polarity_csv, target / "out")) == 1
    err = capsys.readouterr().err
    assert "is not writable: pass a writable --output-dir" in err
    assert TRACEBACK not in err
    assert main(run_args(polarity_csv, target / "out", "--verbose")) == 1
    assert TRACEBACK in capsys.readouterr().err


def test_a_full_disk_fails_clearly_and_the_same_command_then_completes(polarity_csv, tmp_path, mounts, capsys):
    target = tmp_path / "small"
    if not _mount_tmpfs(target, "size=2m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    mounts.append(target)
    args = run_args(polarity_csv, target / "out")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "is full: free space there, then run the same command again" in err
    assert TRACEBACK not in err
    serving = target / "out" / "serving" / PIPELINE
    assert serving_versions_are_complete(serving) == []

    subprocess.run(["mount", "-o", "remount,size=512m", str(target)], check=True)
    assert main(args) == 0
    assert len(serving_versions_are_complete(serving)) == 1
