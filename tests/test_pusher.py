"""VersionedPusher: both blessings required, atomic versions, at most N kept."""

import json
import os
import threading
import time

import pytest
from tfx.types import standard_artifacts

from components import versioned_pusher
from tests.helpers import make_artifact


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
    assert not versioned_pusher.list_versions(str(tmp_path / "serving"))
    assert json.loads((tmp_path / "pushed" / versioned_pusher.PUSH_RECORD).read_text()) == {"pushed": False}


def test_pushes_a_complete_copy_with_both_blessings(tmp_path, candidate):
    pushed = _push(tmp_path, candidate, True, True)
    assert pushed.get_int_custom_property("pushed") == 1
    version = pushed.get_string_custom_property("pushed_version")
    destination = pushed.get_string_custom_property("pushed_destination")
    assert destination == str(tmp_path / "serving" / version)
    # No temporary directory left; the lock file stays.
    assert sorted(os.listdir(tmp_path / "serving")) == sorted([version, versioned_pusher.LOCK_FILE])
    source = tmp_path / "model" / "Format-Serving" / "variables" / "variables.data-00000-of-00001"
    copied = tmp_path / "serving" / version / "variables" / "variables.data-00000-of-00001"
    assert copied.read_bytes() == source.read_bytes()


def _retrain(model, seed: int) -> None:
    """Gives the candidate's SavedModel other weights, as a new training run would."""
    variables = os.path.join(model.uri, "Format-Serving", "variables", "variables.data-00000-of-00001")
    with open(variables, "r+b") as f:
        f.write(seed.to_bytes(8, "big"))


def test_versions_increase_and_only_the_newest_n_are_kept(tmp_path, candidate):
    versions = []
    for i in range(4):
        _retrain(candidate, i)
        pushed = _push(tmp_path, candidate, True, True, keep=2, name=f"pushed{i}")
        versions.append(int(pushed.get_string_custom_property("pushed_version")))
    assert versions == sorted(set(versions))  # strictly increasing, even within one second
    assert versioned_pusher.list_versions(str(tmp_path / "serving")) == versions[-2:]


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
    assert os.listdir(base) == [versioned_pusher.LOCK_FILE]


def test_the_same_model_is_not_pushed_again_and_the_rollback_window_is_kept(tmp_path, candidate):
    first = _push(tmp_path, candidate, True, True, keep=2, name="first")
    served = first.get_string_custom_property("pushed_version")
    _retrain(candidate, 7)
    second = _push(tmp_path, candidate, True, True, keep=2, name="second")
    newest = second.get_string_custom_property("pushed_version")
    # Three unchanged re-runs blessed again: nothing new is pushed, the older version stays.
    for i in range(3):
        again = _push(tmp_path, candidate, True, True, keep=2, name=f"again{i}")
        assert again.get_int_custom_property("pushed") == 0
        assert again.get_int_custom_property(versioned_pusher.ALREADY_SERVED_KEY) == int(newest)
        record = json.loads((tmp_path / f"again{i}" / versioned_pusher.PUSH_RECORD).read_text())
        assert record == {"pushed": False, versioned_pusher.ALREADY_SERVED_KEY: int(newest)}
    assert sorted(versioned_pusher.list_versions(str(tmp_path / "serving"))) == sorted([int(served), int(newest)])


def test_leftovers_of_a_killed_push_are_removed_by_the_next_push(tmp_path, candidate):
    base = tmp_path / "serving"
    for leftover in (".tmp-1700000000-deadbeef", ".old-1600000000-deadbeef"):
        (base / leftover / "variables").mkdir(parents=True)
        (base / leftover / "saved_model.pb").write_bytes(b"half")
    pushed = _push(tmp_path, candidate, True, True)
    version = pushed.get_string_custom_property("pushed_version")
    assert sorted(os.listdir(base)) == sorted([versioned_pusher.LOCK_FILE, version])


def test_pushes_at_the_same_moment_get_distinct_versions(tmp_path, candidate, monkeypatch):
    # Every push starts in the same second, and each copy takes a while: all of
    # them would choose their version before any of them renames it into place.
    monkeypatch.setattr(versioned_pusher.time, "time", lambda: 1_800_000_000.0)
    copytree = versioned_pusher.shutil.copytree

    def slow_copytree(*args, **kwargs):
        result = copytree(*args, **kwargs)
        time.sleep(0.2)
        return result

    monkeypatch.setattr(versioned_pusher.shutil, "copytree", slow_copytree)
    source = candidate.uri + "/Format-Serving"
    base = str(tmp_path / "serving")
    start = threading.Barrier(4)
    results, errors = [], []

    def push():
        start.wait()
        try:
            results.append(versioned_pusher.push_atomically(source, base))
        except Exception as error:  # noqa: BLE001 - the test reports any
            errors.append(error)

    threads = [threading.Thread(target=push) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = [version for version, _ in results]
    assert len(set(versions)) == 4
    assert versioned_pusher.list_versions(base) == sorted(versions)


def test_only_ascii_numbered_directories_are_versions(tmp_path):
    for name in ("12", "²", "١٠", "7a", ".tmp-13-ab"):
        (tmp_path / name).mkdir()
    assert versioned_pusher.list_versions(str(tmp_path)) == [12]
