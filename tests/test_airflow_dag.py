"""The Airflow DAG: imports cleanly into a DagBag with one task per component, and runs.

Needs Airflow, which lives in .venv-airflow (`make airflow-test` builds it and
runs this file there); under .venv the module is skipped. The e2e test runs
`airflow dags test` on the first 300 rows of the real polarity data.
"""

import gzip
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import configs, data_sources
from tests.helpers import required_upstream

ROOT = configs.PROJECT_ROOT
DAG_FILE = ROOT / "pipeline" / "airflow_dag.py"
DAG_ID = "sentiment-polarity"
# What goes into Airflow's dags folder: the DAG file itself stays in the package
# (the folder is put on sys.path, and pipeline/ there would shadow the package).
DAG_SHIM = "from pipeline.airflow_dag import DAG  # noqa: F401  (an Airflow DAG)\n"
ROWS = 300
SMALL_MODEL = (
    "training.epochs=1,training.batch_size=32,training.weight_averaging=0,model.embedding_dim=16,model.rnn_units=16,evaluation.min_accuracy=0.0,evaluation.min_auc=0,"
    "pretrained_vocabulary=0,model.pretrained_embeddings=,pretraining.enabled=false")
REQUIRED_UPSTREAM = required_upstream("LatestBlessedModelResolver")


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory):
    """The first ROWS rows of the real polarity CSV, as a data directory."""
    try:
        source_dir = data_sources.SHARED_DATA_DIR if os.environ.get(data_sources.DATA_DIR_ENV) is None else Path(
            os.environ[data_sources.DATA_DIR_ENV])
        source = source_dir / "polarity" / "rt-polarity.csv.gz"
        assert source.exists(), source
    except AssertionError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real data not available: {error}")
    with gzip.open(source, "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(ROWS + 1)]
    data_dir = tmp_path_factory.mktemp("data")
    (data_dir / "polarity").mkdir()
    with gzip.open(data_dir / "polarity" / "rt-polarity.csv.gz", "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return data_dir


@pytest.fixture(scope="module")
def airflow_env(small_data_dir, tmp_path_factory):
    pytest.importorskip("airflow", reason="Airflow is in .venv-airflow: run `make airflow-test`")
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "sentiment_dag.py").write_text(DAG_SHIM)
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        SENTIMENT_DATA_DIR=str(small_data_dir),
        SENTIMENT_OUTPUT_DIR=str(tmp_path_factory.mktemp("outputs")),
        SENTIMENT_SET=SMALL_MODEL,
        TF_USE_LEGACY_KERAS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def _airflow(env, *args, timeout=900):
    airflow = Path(sys.executable).parent / "airflow"
    return subprocess.run([str(airflow), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_dagbag_imports_the_dag_with_one_task_per_component(airflow_env):
    # In a fresh interpreter with the DAG file's environment, as the scheduler would.
    script = (
        "import json, sys\n"
        "from airflow.models import DagBag\n"
        "import os\n"
        "bag = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER'], include_examples=False)\n"
        f"dag = bag.dags.get({DAG_ID!r})\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()}, 'dag_ids': bag.dag_ids,\n"
        "  'tasks': {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} if dag else None,\n"
        "  'schedule': str(dag.schedule_interval) if dag else None,\n"
        "  'retries': sorted({t.retries for t in dag.tasks}) if dag else None}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=airflow_env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    import json

    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    assert found["dag_ids"] == [DAG_ID]
    tasks = {task: set(upstream) for task, upstream in found["tasks"].items()}
    assert set(REQUIRED_UPSTREAM) <= set(tasks), sorted(tasks)
    for task, required in REQUIRED_UPSTREAM.items():
        assert required <= tasks[task], (task, tasks[task])
    # Exactly the components create_pipeline() builds, with the same edges.
    from pipeline.pipeline import create_pipeline

    dataset = configs.with_overrides(configs.POLARITY, dict(item.split("=", 1) for item in SMALL_MODEL.split(",")))
    local = create_pipeline(configs.PipelineConfig(
        dataset=dataset, input_path=Path("/data/polarity/rt-polarity.csv.gz"), output_dir=Path("/out")))
    assert tasks == {c.id: {u.id for u in c.upstream_nodes} for c in local.components}
    assert found["schedule"] == "None"  # manual runs unless SENTIMENT_AIRFLOW_SCHEDULE is set
    assert found["retries"] == [1]  # a killed task runs once more (SENTIMENT_AIRFLOW_RETRIES)


def test_one_dags_file_holds_both_dags_with_retries_and_the_postgresql_store(airflow_env, small_data_dir, tmp_path):
    """The deployment's dags folder (bench/airflow_deployment.py): one file, SENTIMENT_DATASETS=polarity,imdb.

    No server is needed: the DAGs only carry the PostgreSQL ConnectionConfig (nothing listens on port 1).
    """
    data_dir = tmp_path / "data"
    (data_dir / "imdb").mkdir(parents=True)
    (data_dir / "polarity").symlink_to(small_data_dir / "polarity")
    for split in ("train", "test"):
        with gzip.open(data_dir / "imdb" / f"{split}.csv.gz", "wt", encoding="utf-8") as f:
            f.write("text,label\na fine film,1\na dull film,0\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sentiment_dags.py").write_text("from pipeline.airflow_dag import *  # noqa: F401,F403\n")
    env = dict(airflow_env, AIRFLOW__CORE__DAGS_FOLDER=str(dags), SENTIMENT_DATA_DIR=str(data_dir),
               SENTIMENT_DATASETS="polarity,imdb", SENTIMENT_METADATA_URI="postgresql://airflow@127.0.0.1:1/mlmd",
               SENTIMENT_AIRFLOW_RETRIES="3", SENTIMENT_AIRFLOW_RETRY_DELAY="7")
    script = (
        "import json, os\n"
        "from airflow.models import DagBag\n"
        "from pipeline import airflow_dag\n"
        "bag = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER'], include_examples=False)\n"
        "def tfx(task):  # TFX's launcher and its arguments, wrapped by airflow_dag\n"
        "    return task.python_callable.args[0]\n"
        "def store(task):\n"
        "    c = tfx(task).keywords['metadata_connection_config']\n"
        "    return [c.WhichOneof('config'), c.postgresql.host, c.postgresql.port, c.postgresql.user,\n"
        "            c.postgresql.dbname, c.postgresql.password]\n"
        "refused = []\n"
        "for env in ({'SENTIMENT_DATASETS': 'polarity,imdb', 'SENTIMENT_INPUT': '/x.csv'},\n"
        "            {'SENTIMENT_DATASETS': 'polarity,nope'}, {'SENTIMENT_AIRFLOW_RETRIES': '-1'}):\n"
        "    try:\n"
        "        airflow_dag.datasets_from_environment(env), airflow_dag.default_args_from_environment(env)\n"
        "    except ValueError as error:\n"
        "        refused.append(str(error))\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'dag_ids': sorted(bag.dag_ids),\n"
        "  'retries': {d.dag_id: sorted({t.retries for t in d.tasks}) for d in bag.dags.values()},\n"
        "  'delays': sorted({t.retry_delay.total_seconds() for d in bag.dags.values() for t in d.tasks}),\n"
        "  'stores': sorted({json.dumps(store(t)) for d in bag.dags.values() for t in d.tasks}),\n"
        "  'roots': sorted({tfx(t).keywords['pipeline_info'].pipeline_root for d in bag.dags.values()\n"
        "                   for t in d.tasks}), 'refused': refused,\n"
        "  'launchers': sorted({(t.python_callable.func.__module__, t.python_callable.func.__name__,\n"
        "                        tfx(t).func.__name__) for d in bag.dags.values() for t in d.tasks})}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    import json

    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    assert found["dag_ids"] == ["sentiment-imdb", "sentiment-polarity"]
    assert found["retries"] == {"sentiment-imdb": [3], "sentiment-polarity": [3]}
    assert found["delays"] == [7.0]
    # Every task of both DAGs records in the one PostgreSQL store; the password stays in libpq's passfile.
    assert [json.loads(s) for s in found["stores"]] == [["postgresql", "127.0.0.1", "1", "airflow", "mlmd", ""]]
    output_dir = Path(airflow_env["SENTIMENT_OUTPUT_DIR"])
    assert found["roots"] == [str(output_dir / "pipelines" / d) for d in ("sentiment-imdb", "sentiment-polarity")]
    # Every task launches through pipeline/airflow_launch.py, with TFX's launcher and its arguments.
    assert found["launchers"] == [["pipeline.airflow_launch", "launch_component", "_airflow_component_launcher"]]
    assert len(found["refused"]) == 3, found["refused"]
    assert "SENTIMENT_DATA_DIR" in found["refused"][0] and "nope" in found["refused"][1]


@pytest.mark.e2e
def test_airflow_runs_the_dag_end_to_end(airflow_env):
    started = time.time()
    init = _airflow(airflow_env, "db", "init", timeout=300)
    assert init.returncode == 0, init.stderr[-3000:]
    run = _airflow(airflow_env, "dags", "test", DAG_ID, "2024-01-02",
                   "--subdir", airflow_env["AIRFLOW__CORE__DAGS_FOLDER"], timeout=1500)
    log = run.stdout[-4000:] + run.stderr[-8000:]
    assert run.returncode == 0, log
    print(f"airflow dags test: {time.time() - started:.0f} s")

    with sqlite3.connect(Path(airflow_env["AIRFLOW_HOME"]) / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)))
    assert set(REQUIRED_UPSTREAM) <= set(states), states
    assert set(states.values()) == {"success"}, (states, log)

    output_dir = Path(airflow_env["SENTIMENT_OUTPUT_DIR"])
    assert (output_dir / "metadata" / f"{DAG_ID}.sqlite").exists()
    pushed = list((output_dir / "serving" / DAG_ID).glob("*/saved_model.pb"))
    assert len(pushed) == 1, log


def test_launch_component_records_the_run_id_qualified_by_the_dag_id(tmp_path):
    """TFX names artifacts KEY:RUN_ID, unique per type in a store: two DAGs scheduled for one date
    (same Airflow run id) sharing a store must not give TFX the same run id. No Airflow needed."""
    import functools
    import types

    from tfx.orchestration import data_types, metadata

    from pipeline import airflow_launch

    seen = {}

    class Launcher:
        @classmethod
        def create(cls, **kwargs):
            seen.update(kwargs)
            return cls()

        def launch(self):
            seen["launched"] = True

    component = types.SimpleNamespace(exec_properties={})
    tfx_launch = functools.partial(
        lambda **_: None, component=component, component_launcher_class=Launcher,
        pipeline_info=data_types.PipelineInfo("sentiment-imdb", str(tmp_path)), driver_args=None,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(str(tmp_path / "m.sqlite")),
        beam_pipeline_args=[], additional_pipeline_args={}, component_config=None)
    run = types.SimpleNamespace(run_id="scheduled__2024-01-02T00:00:00+00:00")
    ti = types.SimpleNamespace(dag_id="sentiment-imdb", get_dagrun=lambda: run)
    airflow_launch.launch_component(tfx_launch, ti=ti, exec_properties={"module_file": "m.py"})
    assert seen["launched"]
    assert seen["pipeline_info"].run_id == "sentiment-imdb:scheduled__2024-01-02T00:00:00+00:00"
    assert isinstance(seen["metadata_connection"], airflow_launch.RetryableMetadata)
    assert component.exec_properties == {"module_file": "m.py"}


def test_a_retried_component_registers_its_execution_again(tmp_path):
    """A try killed after registering its execution and pending outputs: TFX's own Metadata refuses the
    retry (the same input events, then outputs of the same names, again); RetryableMetadata reuses the
    execution and its outputs without duplicating an event, and the retry publishes."""
    from ml_metadata import errors as mlmd_errors
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import data_types, metadata
    from tfx.types import standard_artifacts

    from pipeline import airflow_launch

    config = metadata.sqlite_metadata_connection_config(str(tmp_path / "m.sqlite"))
    info = data_types.PipelineInfo("sentiment-polarity", str(tmp_path), run_id="sentiment-polarity:manual__1")
    component = data_types.ComponentInfo("tfx.components.trainer.component.Trainer", "Trainer", info)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")

    def model(execution_id):  # as TFX's driver names and places an output
        artifact = standard_artifacts.Model()
        artifact.uri, artifact.name = str(tmp_path / "Trainer" / "model" / str(execution_id)), f"model:{info.run_id}"
        return artifact

    def try_once(handle_class, publish=False):
        with handle_class(config) as handle:
            contexts = handle.register_pipeline_contexts_if_not_exists(info)
            execution = handle.register_execution(info, component, contexts, {"epochs": 1}, {"examples": [examples]})
            outputs = {"model": [model(execution.id)]}
            handle.update_execution(execution=execution, component_info=component, output_artifacts=outputs,
                                    contexts=contexts)
            if publish:
                handle.publish_execution(component, outputs)
            events = handle.store.get_events_by_execution_ids([execution.id])
            state = handle.store.get_executions_by_id([execution.id])[0].properties["state"].string_value
            return execution, outputs["model"][0], sorted((e.artifact_id, e.type) for e in events), state

    with metadata.Metadata(config) as handle:
        handle.publish_artifacts([examples])
    first, first_model, _, _ = try_once(metadata.Metadata)  # the first try, then SIGKILL
    with pytest.raises(mlmd_errors.AlreadyExistsError):
        try_once(metadata.Metadata)  # TFX 1.16 as it is: every retry fails
    again, again_model, events, state = try_once(airflow_launch.RetryableMetadata, publish=True)
    assert (again.id, again_model.id) == (first.id, first_model.id)
    event = metadata_store_pb2.Event
    assert events == [(examples.id, event.INPUT), (first_model.id, event.OUTPUT)]
    assert state == "complete"
