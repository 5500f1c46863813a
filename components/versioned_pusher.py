"""Pusher that needs both blessings, writes a version atomically and prunes old ones.

TFX's Pusher pushes when the blessings it is *given* say yes, copies straight
into `<base>/<version>` (a server polling the directory can see a half-copied
model), and never deletes a version. This one:

* requires a `ModelBlessing` (Evaluator) AND an `InfraBlessing` (InfraValidator),
  both blessed; a missing one counts as a no;
* copies the SavedModel into `<base>/.tmp-<version>-<random>` and renames it to
  `<base>/<version>` (a rename within one filesystem is atomic), so a reader
  sees either no version or the whole one;
* picks a version number greater than every version already there (Unix time,
  bumped if needed), so the newest push is always the highest version;
* keeps the newest `versions_to_keep` versions (custom_config) and removes the
  rest, each by first renaming it out of the numeric namespace;
* does not push a model whose files are identical to the newest served
  version (an unchanged re-run is re-evaluated against the new baseline and
  blessed again; pushing it would only evict a genuinely different model
  from the rollback window);
* holds an exclusive lock on `<base>/.push.lock` while it pushes, so two
  pushes never pick the same version number, and any `.tmp-*` / `.old-*` left
  by a push that was killed (its lock died with it) is removed.

It keeps the standard Pusher's spec (`model`, `model_blessing`, `infra_blessing`,
`push_destination`, `custom_config`) and output (`PushedModel` with `pushed`,
`pushed_destination`, `pushed_version`), so runners and the run summary need
no change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from typing import Any, Iterator

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.components.util import model_utils
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

VERSIONS_TO_KEEP_KEY = "versions_to_keep"
DEFAULT_VERSIONS_TO_KEEP = 3
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".old-"
PUSH_RECORD = "push.json"
LOCK_FILE = ".push.lock"
# On the PushedModel when the model was not pushed because the newest version already is it.
ALREADY_SERVED_KEY = "already_served_version"


def list_versions(base_directory: str) -> list[int]:
    """Complete versions under the serving directory, oldest first (temporary dirs excluded)."""
    if not os.path.isdir(base_directory):
        return []
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    return sorted(int(name) for name in os.listdir(base_directory)
                  if re.fullmatch(r"[0-9]{1,19}", name) and os.path.isdir(os.path.join(base_directory, name)))


def next_version(base_directory: str, now: float | None = None) -> int:
    existing = list_versions(base_directory)
    return max([int(now if now is not None else time.time())] + [v + 1 for v in existing])


@contextlib.contextmanager
def push_lock(base_directory: str) -> Iterator[None]:
    """Exclusive for one push at a time per serving directory (released if the process dies)."""
    os.makedirs(base_directory, exist_ok=True)
    with open(os.path.join(base_directory, LOCK_FILE), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_stale_staging(base_directory: str) -> list[str]:
    """Removes `.tmp-*` / `.old-*` entries. Call with the push lock held: their pushes are dead."""
    stale = sorted(name for name in os.listdir(base_directory) if name.startswith((TMP_PREFIX, TRASH_PREFIX)))
    for name in stale:
        shutil.rmtree(os.path.join(base_directory, name), ignore_errors=True)
    return stale


def tree_digest(path: str) -> str:
    """sha256 over every file's relative path and bytes: equal digests, the same SavedModel."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()


def served_copy_of(model_path: str, base_directory: str) -> int | None:
    """The newest version, if it holds exactly the files of `model_path`."""
    versions = list_versions(base_directory)
    if versions and tree_digest(model_path) == tree_digest(os.path.join(base_directory, str(versions[-1]))):
        return versions[-1]
    return None


def push_atomically(model_path: str, base_directory: str, version: int | None = None) -> tuple[int, str]:
    """Copies the SavedModel at `model_path` to `<base>/<version>`; returns (version, path)."""
    with push_lock(base_directory):
        return _push_locked(model_path, base_directory, version)


def _push_locked(model_path: str, base_directory: str, version: int | None) -> tuple[int, str]:
    version = version if version is not None else next_version(base_directory)
    final = os.path.join(base_directory, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"version {version} already exists at {final}")
    staging = os.path.join(base_directory, f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(model_path, staging)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version, final


def prune_versions(base_directory: str, keep: int) -> list[int]:
    """Removes all but the newest `keep` versions; returns the removed versions."""
    with push_lock(base_directory):
        return _prune_locked(base_directory, keep)


def _prune_locked(base_directory: str, keep: int) -> list[int]:
    keep = max(1, int(keep))
    versions = list_versions(base_directory)
    removed = versions[:-keep] if len(versions) > keep else []
    for version in removed:
        path = os.path.join(base_directory, str(version))
        trash = os.path.join(base_directory, f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
        os.rename(path, trash)  # out of the served namespace at once, then deleted
        shutil.rmtree(trash, ignore_errors=True)
    return removed


class Executor(pusher_executor.Executor):
    def CheckBlessing(self, input_dict: dict[str, list[types.Artifact]]) -> bool:
        for key, check, what in (
            (standard_component_specs.MODEL_BLESSING_KEY, model_utils.is_model_blessed, "model validation"),
            (standard_component_specs.INFRA_BLESSING_KEY, model_utils.is_infra_validated, "infra validation"),
        ):
            artifacts = input_dict.get(key)
            if not artifacts:
                logging.warning("Pusher: no %s blessing given; not pushing", what)
                return False
            blessing = artifact_utils.get_single_instance(artifacts)
            if not check(blessing):
                logging.info("Pusher: model on %s was not blessed by %s; not pushing", blessing.uri, what)
                return False
        return True

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        os.makedirs(model_push.uri, exist_ok=True)
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            _write_record(model_push.uri, {"pushed": False})
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("VersionedPusher pushes to a filesystem destination only")
        base = destination.filesystem.base_directory
        custom = json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null") or {}
        keep = int(custom.get(VERSIONS_TO_KEEP_KEY, DEFAULT_VERSIONS_TO_KEEP))

        with push_lock(base):
            stale = remove_stale_staging(base)
            if stale:
                logging.warning("Pusher: removed %s left by a push that did not finish", stale)
            served = served_copy_of(model_path, base)
            if served is not None:
                logging.info("Pusher: this model is already the newest served version (%d); not pushing", served)
                self._MarkNotPushed(model_push)
                model_push.set_int_custom_property(ALREADY_SERVED_KEY, served)
                _write_record(model_push.uri, {"pushed": False, ALREADY_SERVED_KEY: served})
                return
            version, serving_path = _push_locked(model_path, base, None)
            removed = _prune_locked(base, keep)
        logging.info("Pusher: pushed version %d to %s; removed old versions %s", version, serving_path, removed)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))
        _write_record(model_push.uri, {"pushed": True, "version": version, "destination": serving_path,
                                       "removed_versions": removed, "versions_to_keep": keep})


def _write_record(uri: str, record: dict[str, Any]) -> None:
    with open(os.path.join(uri, PUSH_RECORD), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


class VersionedPusher(pusher_component.Pusher):
    """`tfx.components.Pusher` with the executor above; needs model AND infra blessing."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model, model_blessing, infra_blessing, push_destination, versions_to_keep: int):
        super().__init__(model=model, model_blessing=model_blessing, infra_blessing=infra_blessing,
                         push_destination=push_destination,
                         custom_config={VERSIONS_TO_KEEP_KEY: int(versions_to_keep)})
