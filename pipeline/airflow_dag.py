"""The pipeline as an Apache Airflow DAG (Airflow 2), built by TFX's AirflowDagRunner.

Airflow's dags folder gets a one-line file, not this one:

    from pipeline.airflow_dag import *  # the DAGs of SENTIMENT_DATASETS

(Airflow puts the dags folder on sys.path, and pipeline/pipeline.py would then
shadow the `pipeline` package.) `from pipeline.airflow_dag import DAG` also
works, for one DAG. The scheduler and workers need this package installed;
scripts/setup_airflow_venv.sh makes such an environment here.

The DAG id is the pipeline name (`sentiment-polarity`), one Airflow task per
TFX component, and runs are triggered by hand unless a schedule is set. The
graph is `create_pipeline()`'s, as for the local and Kubeflow runners; ML
Metadata is the SQLite file under the output directory, as for
`python -m pipeline run`, unless SENTIMENT_METADATA_URI names a PostgreSQL or
MySQL store (a shared deployment: several DAGs and runs at once). With
SENTIMENT_DATASETS=polarity,imdb one dags-folder file holds one DAG per
dataset (`sentiment-polarity`, `sentiment-imdb`), all with the same settings;
the module exposes them as `DAGS` (by id) and as attributes (`sentiment_imdb`).
bench/airflow_deployment.py runs them on PostgreSQL with the Local and Celery
executors (`make airflow-run`, `make airflow-celery`, `make airflow-retry`).

An Airflow DAG file takes no command line, so it reads the environment:

- `SENTIMENT_DATASET`: `polarity` (default) or `imdb`.
- `SENTIMENT_DATASETS`: several DAGs from one file, comma-separated: `polarity,imdb`
  (overrides `SENTIMENT_DATASET`; then `SENTIMENT_INPUT` is refused, each finds its
  data under `SENTIMENT_DATA_DIR`).
- `SENTIMENT_INPUT` / `SENTIMENT_DATA_DIR`: as `--input` / `--data-dir` of
  `python -m pipeline run` (never downloads); an input of `span-<N>/` folders: each
  DAG run reads the newest span.
- `SENTIMENT_OUTPUT_DIR`: pipeline root, metadata and served models (default
  `./outputs` of the project).
- `SENTIMENT_METADATA_URI`: as `--metadata`: `postgresql://USER@HOST:PORT/DB`
  (password from PGPASSWORD or a passfile); unset: SQLite.
- `SENTIMENT_SET`: config overrides, comma-separated: `training.epochs=1,model.rnn_units=16`.
- `SENTIMENT_BEAM_PROFILE`, `SENTIMENT_BEAM_OPTIONS`: a profile of `runner_profiles`
  and its `key=value,...` options.
- `SENTIMENT_AIRFLOW_SCHEDULE`: an Airflow schedule (`@daily`, cron); unset: manual runs only.
- `SENTIMENT_AIRFLOW_RETRIES`: Airflow retries of every task (default 1): a task whose
  process dies (killed, worker lost) runs again; the tasks it needs are not re-run.
- `SENTIMENT_AIRFLOW_RETRY_DELAY`: seconds before a retry (default 30).
"""

from __future__ import annotations

import datetime
import functools
import os
from pathlib import Path

from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

from pipeline import airflow_launch, configs, data_sources, metadata_store, runner_profiles
from pipeline.pipeline import create_pipeline

DATASETS_ENV = "SENTIMENT_DATASETS"
RETRIES_ENV = "SENTIMENT_AIRFLOW_RETRIES"
RETRY_DELAY_ENV = "SENTIMENT_AIRFLOW_RETRY_DELAY"
DEFAULT_RETRIES = 1
DEFAULT_RETRY_DELAY_S = 30.0


def _pairs(raw: str | None) -> list[str]:
    return [item.strip() for item in (raw or "").split(",") if item.strip()]


def config_from_environment(env: dict[str, str] | None = None) -> configs.PipelineConfig:
    env = dict(os.environ if env is None else env)
    dataset = configs.DATASETS[env.get("SENTIMENT_DATASET", configs.DEFAULT_DATASET)]
    overrides = dict(pair.split("=", 1) for pair in _pairs(env.get("SENTIMENT_SET")))
    dataset = configs.with_overrides(dataset, {k.strip(): v.strip() for k, v in overrides.items()})
    input_path = data_sources.resolve_input(
        dataset, env.get("SENTIMENT_INPUT"), env.get(data_sources.DATA_DIR_ENV), download=False
    )
    output_dir = Path(env["SENTIMENT_OUTPUT_DIR"]).resolve() if env.get("SENTIMENT_OUTPUT_DIR") else (
        configs.default_output_dir())
    beam_args = configs.DEFAULT_BEAM_ARGS
    if env.get("SENTIMENT_BEAM_PROFILE"):
        beam_args = runner_profiles.beam_pipeline_args(
            env["SENTIMENT_BEAM_PROFILE"], runner_profiles.parse_options(_pairs(env.get("SENTIMENT_BEAM_OPTIONS")))
        )
    # An input laid out as span-<N>/ folders: every DAG run reads the newest span when it starts
    # (the continuous-training set-up, with SENTIMENT_AIRFLOW_SCHEDULE).
    input_spans = bool(data_sources.span_numbers(input_path))
    return configs.PipelineConfig(dataset=dataset, input_path=input_path, output_dir=output_dir, beam_args=beam_args,
                                  input_spans=input_spans, metadata_uri=env.get(metadata_store.ENV_URI) or None)


def datasets_from_environment(env: dict[str, str] | None = None) -> list[str]:
    """The datasets to build DAGs for: SENTIMENT_DATASETS, else SENTIMENT_DATASET (one)."""
    env = dict(os.environ if env is None else env)
    names = list(dict.fromkeys(_pairs(env.get(DATASETS_ENV)))) or [env.get("SENTIMENT_DATASET",
                                                                           configs.DEFAULT_DATASET)]
    unknown = [name for name in names if name not in configs.DATASETS]
    if unknown:
        raise ValueError(f"{DATASETS_ENV}: unknown dataset(s) {', '.join(unknown)}; "
                         f"known: {', '.join(configs.DATASETS)}")
    if len(names) > 1 and env.get("SENTIMENT_INPUT"):
        raise ValueError(f"SENTIMENT_INPUT names one dataset's file, and {DATASETS_ENV} asks for "
                         f"{', '.join(names)}: set SENTIMENT_DATA_DIR instead")
    return names


def default_args_from_environment(env: dict[str, str] | None = None) -> dict:
    """Every task's Airflow retries: SENTIMENT_AIRFLOW_RETRIES, SENTIMENT_AIRFLOW_RETRY_DELAY (seconds)."""
    env = dict(os.environ if env is None else env)
    try:
        retries = int(env.get(RETRIES_ENV) or DEFAULT_RETRIES)
        delay = float(env.get(RETRY_DELAY_ENV) or DEFAULT_RETRY_DELAY_S)
    except ValueError as error:
        raise ValueError(f"{RETRIES_ENV} / {RETRY_DELAY_ENV}: {error}") from None
    if retries < 0 or delay < 0:
        raise ValueError(f"{RETRIES_ENV} and {RETRY_DELAY_ENV} must be >= 0, got {retries} and {delay}")
    return {"retries": retries, "retry_delay": datetime.timedelta(seconds=delay)}


def build_dag(config: configs.PipelineConfig, schedule: str | None = None, default_args: dict | None = None):
    config.metadata_path.parent.mkdir(parents=True, exist_ok=True)
    airflow_config = AirflowPipelineConfig(airflow_dag_config={
        "schedule_interval": schedule,
        "start_date": datetime.datetime(2024, 1, 1),
        "catchup": False,
        # Runs of one DAG read each other's blessed model and push to one serving
        # directory: one at a time, whatever the store. Different DAGs run at once.
        "max_active_runs": 1,
        "tags": ["tfx", "sentiment"],
        # Passed to every task (AirflowDagRunner hands this dict to airflow.models.DAG).
        "default_args": default_args_from_environment({}) if default_args is None else default_args,
    })
    dag = AirflowDagRunner(airflow_config).run(create_pipeline(config, config.metadata.connection_config()))
    # Each task launches its component as TFX would, with a run id qualified by the DAG id and a
    # retry that can register again (pipeline/airflow_launch.py says why).
    for task in dag.tasks:
        task.python_callable = functools.partial(airflow_launch.launch_component, task.python_callable)
    return dag


def dags_from_environment(env: dict[str, str] | None = None) -> dict:
    """One DAG per dataset of datasets_from_environment(), by DAG id, all with env's settings."""
    env = dict(os.environ if env is None else env)
    schedule = env.get("SENTIMENT_AIRFLOW_SCHEDULE") or None
    default_args = default_args_from_environment(env)
    dags = {}
    for name in datasets_from_environment(env):
        dag = build_dag(config_from_environment({**env, "SENTIMENT_DATASET": name}), schedule, default_args)
        dags[dag.dag_id] = dag
    return dags


DAGS = dags_from_environment()
DAG = next(iter(DAGS.values()))  # the first (the only one unless SENTIMENT_DATASETS lists several)
# Module attributes, so that `from pipeline.airflow_dag import *` puts every DAG at the top
# level of the dags-folder file, where Airflow's DagBag looks for them.
for _dag_id, _dag in DAGS.items():
    globals()[_dag_id.replace("-", "_")] = _dag
__all__ = ["DAG", "DAGS", *(dag_id.replace("-", "_") for dag_id in DAGS)]
