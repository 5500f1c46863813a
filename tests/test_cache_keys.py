"""ExampleGen's cache key sees the data and the parsing code, not just the input's top-level path.

A real LocalDagRunner run of ExampleGen alone over an unpacked rt-polaritydata
folder: re-running untouched is a cache hit; appending lines to a file inside
the folder, or changing the parsing code's digest, runs ExampleGen again and
the new examples hold the new rows.
"""

import json
import os

import pytest
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components import review_example_gen
from pipeline import run_summary

LINES = 40


def _write_folder(root, extra_pos_lines=0):
    folder = root / "rt-polaritydata"
    folder.mkdir(parents=True, exist_ok=True)
    pos = [f"a fine and lovely film number {i}" for i in range(LINES + extra_pos_lines)]
    neg = [f"a dull and tiresome film number {i}" for i in range(LINES)]
    (folder / "rt-polarity.pos").write_text("\n".join(pos) + "\n", encoding="cp1252")
    (folder / "rt-polarity.neg").write_text("\n".join(neg) + "\n", encoding="cp1252")
    return folder


def _run_example_gen(folder, output_dir, code_fingerprint="v1"):
    """Runs a one-component pipeline; returns (state of its ExampleGen execution, ingestion report)."""
    example_gen = review_example_gen.ReviewExampleGen(
        input_base=str(folder.parent), source=folder.name, eval_percent=10, test_percent=10,
        code_fingerprint=code_fingerprint).with_id("ExampleGen")
    metadata_path = output_dir / "metadata.sqlite"
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="cache-keys", pipeline_root=str(output_dir / "root"), components=[example_gen],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path)),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    tfx.orchestration.LocalDagRunner().run(pipeline)
    store = run_summary.open_store(metadata_path)
    [execution] = sorted(store.get_executions(), key=lambda e: e.id)[-1:]
    [event] = [e for e in store.get_events_by_execution_ids([execution.id])
               if e.type == metadata_store_pb2.Event.OUTPUT]
    [examples] = store.get_artifacts_by_id([event.artifact_id])
    with open(os.path.join(examples.uri, review_example_gen.REPORT_FILE)) as f:
        report = json.load(f)
    state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
    return state, report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    output_dir = tmp_path_factory.mktemp("out")
    folder = _write_folder(data)
    results = {"first": _run_example_gen(folder, output_dir)}
    results["untouched"] = _run_example_gen(folder, output_dir)
    # The same folder, one file edited inside it: the folder's own size and mtime do not change.
    folder_stat = os.stat(folder)
    _write_folder(data, extra_pos_lines=5)
    assert os.stat(folder).st_size == folder_stat.st_size
    results["edited"] = _run_example_gen(folder, output_dir)
    results["new_code"] = _run_example_gen(folder, output_dir, code_fingerprint="v2")
    return results


def test_an_untouched_input_is_a_cache_hit(runs):
    assert runs["first"][0] == "COMPLETE"
    assert runs["untouched"] == ("CACHED", runs["first"][1])


def test_a_file_edited_inside_an_input_folder_is_read_again(runs):
    state, report = runs["edited"]
    assert state == "COMPLETE"
    assert report["rows_in"] == report["examples_out"] == 2 * LINES + 5
    assert runs["first"][1]["rows_in"] == 2 * LINES


def test_a_change_of_parsing_code_reads_the_data_again(runs):
    assert runs["new_code"][0] == "COMPLETE"


def test_the_fingerprint_covers_every_file_with_its_size_and_mtime(tmp_path):
    folder = _write_folder(tmp_path)
    before = review_example_gen.source_fingerprint([str(folder)])
    assert before.startswith("files:2,")
    assert review_example_gen.source_fingerprint([str(folder)]) == before
    stat = os.stat(folder / "rt-polarity.neg")
    os.utime(folder / "rt-polarity.neg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert review_example_gen.source_fingerprint([str(folder)]) != before
