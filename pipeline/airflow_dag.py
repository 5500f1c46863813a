"""The pipeline as an Apache Airflow DAG (Airflow 2), built by TFX's AirflowDagRunner.

Airflow's dags folder gets a one-line file, not this one:

    from pipeline.airflow_dag import DAG  # an Airflow DAG

(Airflow puts the dags folder on sys.path, and pipeline/pipeline.py would then
shadow the `pipeline` package.) The scheduler and workers need this package
installed; scripts/setup_airflow_venv.sh makes such an environment here.

The DAG id is the pipeline name (`sentiment-polarity`), one Airflow task per
TFX component, and runs are triggered by hand unless a schedule is set. The
graph is `create_pipeline()`'s, as for the local and Kubeflow runners; ML
Metadata is the SQLite file under the output directory, as for
`python -m pipeline run`, unless SENTIMENT_METADATA_URI names a PostgreSQL or
MySQL store (a shared deployment: several DAGs and runs at once).

An Airflow DAG file takes no command line, so it reads the environment:

| variable | meaning |
|---|---|
| `SENTIMENT_DATASET` | `polarity` (default) or `imdb` |
| `SENTIMENT_INPUT` / `SENTIMENT_DATA_DIR` | as `--input` / `--data-dir` of `python -m pipeline run` (never downloads); an input of `span-<N>/` folders: each DAG run reads the newest span |
| `SENTIMENT_OUTPUT_DIR` | pipeline root, metadata and served models (default `./outputs` of the project) |
| `SENTIMENT_METADATA_URI` | as `--metadata`: `postgresql://USER@HOST:PORT/DB` (password from PGPASSWORD or a passfile); unset: SQLite |
| `SENTIMENT_SET` | config overrides, comma-separated: `training.epochs=1,model.rnn_units=16` |
| `SENTIMENT_BEAM_PROFILE`, `SENTIMENT_BEAM_OPTIONS` | a profile of `runner_profiles` and its `key=value,...` options |
| `SENTIMENT_AIRFLOW_SCHEDULE` | an Airflow schedule (`@daily`, cron); unset: manual runs only |
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig  # noqa: E402

from pipeline import configs, data_sources, metadata_store, runner_profiles  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402


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


def build_dag(config: configs.PipelineConfig, schedule: str | None = None):
    config.metadata_path.parent.mkdir(parents=True, exist_ok=True)
    airflow_config = AirflowPipelineConfig(airflow_dag_config={
        "schedule_interval": schedule,
        "start_date": datetime.datetime(2024, 1, 1),
        "catchup": False,
        # Runs of one DAG read each other's blessed model and push to one serving
        # directory: one at a time, whatever the store. Different DAGs run at once.
        "max_active_runs": 1,
        "tags": ["tfx", "sentiment"],
    })
    return AirflowDagRunner(airflow_config).run(create_pipeline(config, config.metadata.connection_config()))


DAG = build_dag(config_from_environment(), schedule=os.environ.get("SENTIMENT_AIRFLOW_SCHEDULE") or None)
