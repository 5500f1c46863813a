"""VersionedPusher: both blessings required, atomic versions, at most N kept."""

import json
import os
import threading
import time

import pytest
from tfx.types import standard_artifacts

from components import versioned_pusher
from tests.conftest import make_artifact


@pytest.fixture
def candidate(tmp_path):
    """A Model artifact whose serving directory holds a (fake) SavedModel of a few MB."""
    model = make_artifact(standard_artifacts.Model, tmp_path / "model")
    serving = tmp_path / "model" / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"pb" * 1000)
    (serving / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(4 << 20))
    return model


def _push(tmp_path, model, model_blessed, infra_blessed, keep=3, name="pushed"):
    inputs = {"model": [model]}
    if model_blessed is not None:
        inputs["model_blessing"] = [make_artifact(standard_artifacts.ModelBlessing, tmp_path / f"{name}-mb",
                                                  blessed=int(model_blessed))]
    if infra_blessed is not None:
        inputs["infra_blessing"] = [make_artifact(standard_artifacts.InfraBlessing, tmp_path / f"{name}-ib",
                                                  blessed=int(infra_blessed))]
    pushed = make_artifact(standard_artifacts.PushedModel, tmp_path / name)
    versioned_pusher.Executor().Do(
        inputs, {"pushed_model": [pushed]},
        {"push_destination": json.dumps({"filesystem": {"base_directory": str(tmp_path / "serving")}}),
         "custom_config": json.dumps({"versions_to_keep": keep})})
    return pushed


@pytest.mark.parametrize("model_blessed,infra_blessed", [(True, False), (False, True), (False, False),
                                                         (True, None), (None, True)])
def test_pushes_nothing_unless_both_blessings_say_yes(tmp_path, candidate, model_blessed, infra_blessed):
    pushed = _push(tmp_path, candidate, model_blessed, infra_blessed)
    assert pushed.get_int_custom_property("pushed") == 0
    assert not (tmp_path / "serving").exists() or not os.listdir(tmp_path / "serving")
    assert json.loads((tmp_path / "pushed" / versioned_pusher.PUSH_RECORD).read_text()) == {"pushed": False}


def test_pushes_a_complete_copy_with_both_blessings(tmp_path, candidate):
    pushed = _push(tmp_path, candidate, True, True)
    assert pushed.get_int_custom_property("pushed") == 1
    version = pushed.get_string_custom_property("pushed_version")
    destination = pushed.get_string_custom_property("pushed_destination")
    assert destination == str(tmp_path / "serving" / version)
    assert os.listdir(tmp_path / "serving") == [version]  # no temporary directory left
    source = tmp_path / "model" / "Format-Serving" / "variables" / "variables.data-00000-of-00001"
    copied = tmp_path / "serving" / version / "variables" / "variables.data-00000-of-00001"
    assert copied.read_bytes() == source.read_bytes()


def test_versions_increase_and_only_the_newest_n_are_kept(tmp_path, candidate):
    versions = []
    for i in range(4):
        pushed = _push(tmp_path, candidate, True, True, keep=2, name=f"pushed{i}")
        versions.append(int(pushed.get_string_custom_property("pushed_version")))
    assert versions == sorted(set(versions))  # strictly increasing, even within one second
    assert sorted(int(v) for v in os.listdir(tmp_path / "serving")) == versions[-2:]


def test_a_reader_never_sees_a_half_written_version(tmp_path, candidate):
    """A poller that lists versions while pushes happen only ever sees complete copies."""
    source = candidate.uri + "/Format-Serving"
    expected = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(source) for f in fs)
    base = tmp_path / "serving"
    seen_incomplete = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            for version in versioned_pusher.list_versions(str(base)):
                path = base / str(version)
                try:
                    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
                except FileNotFoundError:
                    continue  # pruned meanwhile
                # Pruning renames a version away in one step, so a walk it cut short
                # leaves no directory behind; a half-written version would still be there.
                if size and size != expected and path.exists():
                    seen_incomplete.append((version, size))
            time.sleep(0.0005)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(5):
            versioned_pusher.push_atomically(source, str(base))
            versioned_pusher.prune_versions(str(base), 2)
    finally:
        done.set()
        thread.join()
    assert not seen_incomplete
    assert len(versioned_pusher.list_versions(str(base))) == 2


def test_a_failed_copy_leaves_no_version_and_no_temporary_directory(tmp_path):
    base = tmp_path / "serving"
    with pytest.raises(FileNotFoundError):
        versioned_pusher.push_atomically(str(tmp_path / "does-not-exist"), str(base))
    assert os.listdir(base) == []
