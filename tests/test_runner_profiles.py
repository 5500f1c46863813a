"""Beam runner profiles: the args each one produces, and that the pipeline carries them.

Only the DirectRunner profiles can run here; the others are checked by the
arguments they give every Beam component of the built pipeline.
"""

import os
from pathlib import Path

import pytest

from pipeline import __main__ as cli
from pipeline import configs, runner_profiles
from pipeline.runner_profiles import ProfileError, beam_pipeline_args

SETUP = f"--setup_file={configs.PROJECT_ROOT / 'setup.py'}"
CLUSTER_OPTIONS = {
    "direct-in-memory": {},
    "direct-multi-processing": {},
    "dataflow": {"project": "my-proj", "region": "europe-west1", "temp_location": "gs://bucket/tmp"},
    "flink": {"job_endpoint": "flink-jobserver:8099"},
    "spark": {"job_endpoint": "spark-jobserver:8099"},
}
BEAM_COMPONENTS = {"ExampleGen", "StatisticsGen", "Transform", "Evaluator"}


def test_every_profile_is_covered_here():
    assert set(runner_profiles.PROFILES) == set(CLUSTER_OPTIONS)
    assert runner_profiles.DEFAULT_PROFILE in runner_profiles.PROFILES


def test_default_profile_is_the_configs_default():
    assert beam_pipeline_args() == configs.DEFAULT_BEAM_ARGS
    assert beam_pipeline_args("direct-in-memory") == (
        "--direct_running_mode=in_memory", "--direct_num_workers=1", SETUP)


def test_multi_processing_uses_one_worker_per_core():
    assert beam_pipeline_args("direct-multi-processing") == (
        "--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count()}", SETUP)
    assert "--direct_num_workers=3" in beam_pipeline_args("direct-multi-processing", {"workers": "3"})
    with pytest.raises(ProfileError, match="workers"):
        beam_pipeline_args("direct-multi-processing", {"workers": "0"})


def test_dataflow_args_and_setup_file_for_workers():
    args = beam_pipeline_args("dataflow", {**CLUSTER_OPTIONS["dataflow"], "max-num-workers": "8"},
                              setup_file="/pipeline/setup.py")
    assert args == (
        "--runner=DataflowRunner",
        "--project=my-proj",
        "--region=europe-west1",
        "--temp_location=gs://bucket/tmp",
        "--max_num_workers=8",
        "--setup_file=/pipeline/setup.py",
    )


@pytest.mark.parametrize("profile", ["flink", "spark"])
def test_flink_and_spark_go_through_a_running_job_server(profile):
    endpoint = CLUSTER_OPTIONS[profile]["job_endpoint"]
    assert beam_pipeline_args(profile, CLUSTER_OPTIONS[profile]) == (
        "--runner=PortableRunner", f"--job_endpoint={endpoint}", "--environment_type=DOCKER", SETUP)
    args = beam_pipeline_args(profile, {"job_endpoint": endpoint, "environment_type": "LOOPBACK"})
    assert "--environment_type=LOOPBACK" in args
    # Not the FlinkRunner/SparkRunner shortcuts: those download a job-server jar at start.
    assert not any(a.startswith("--runner=Flink") or a.startswith("--runner=Spark") for a in args)


@pytest.mark.parametrize("profile,options,message", [
    ("dataflow", {"project": "p", "region": "r"}, "temp_location"),
    ("flink", {}, "job_endpoint"),
    ("spark", {"job_endpoint": "h:1", "projcet": "typo"}, "projcet"),
    ("direct-in-memory", {"workers": "2"}, "workers"),
    ("dask", {}, "unknown Beam profile"),
])
def test_bad_profile_settings_fail_with_a_message(profile, options, message):
    with pytest.raises(ProfileError, match=message):
        beam_pipeline_args(profile, options)


def test_parse_options():
    assert runner_profiles.parse_options(["project=p", "temp-location=gs://b/t"]) == {
        "project": "p", "temp_location": "gs://b/t"}
    with pytest.raises(ProfileError):
        runner_profiles.parse_options(["project"])


@pytest.fixture(scope="module")
def input_path(tmp_path_factory):
    # Building the pipeline reads nothing, but the config wants a path.
    return tmp_path_factory.mktemp("data") / "polarity" / "rt-polarity.csv.gz"


@pytest.mark.parametrize("profile", sorted(CLUSTER_OPTIONS))
def test_the_pipeline_built_with_each_profile_gives_every_beam_component_its_args(profile, input_path, tmp_path):
    from pipeline.pipeline import create_pipeline

    args = beam_pipeline_args(profile, CLUSTER_OPTIONS[profile])
    config = configs.PipelineConfig(
        dataset=configs.POLARITY, input_path=input_path, output_dir=tmp_path, beam_args=args)
    pipeline = create_pipeline(config)
    assert pipeline.beam_pipeline_args == list(args)
    by_id = {c.id: c for c in pipeline.components}
    assert BEAM_COMPONENTS <= set(by_id)
    for component_id in BEAM_COMPONENTS:
        component_args = by_id[component_id].executor_spec.beam_pipeline_args
        assert list(args) == component_args[-len(args):], component_id
    # The rest of the graph does not depend on the profile.
    default = create_pipeline(configs.PipelineConfig(
        dataset=configs.POLARITY, input_path=input_path, output_dir=tmp_path))
    assert [c.id for c in default.components] == [c.id for c in pipeline.components]


def _run_args(monkeypatch, argv):
    """What `python -m pipeline run ...` would hand the local runner."""
    seen = {}
    monkeypatch.setattr(cli, "build_config", lambda args: configs.PipelineConfig(
        dataset=configs.POLARITY, input_path=Path("/nowhere/x.csv"), output_dir=Path("/nowhere")))
    import pipeline.local_runner as local_runner

    monkeypatch.setattr(local_runner, "run", lambda config, **_: seen.setdefault("config", config))
    assert cli.main(["run", *argv]) == 0
    return seen["config"].beam_args


def test_run_command_takes_a_beam_profile(monkeypatch):
    assert _run_args(monkeypatch, []) == configs.DEFAULT_BEAM_ARGS
    assert _run_args(monkeypatch, ["--beam-profile", "direct-multi-processing", "--beam-option", "workers=2"]) == (
        "--direct_running_mode=multi_processing", "--direct_num_workers=2", SETUP)
    with pytest.raises(SystemExit, match="temp_location"):
        _run_args(monkeypatch, ["--beam-profile", "dataflow", "--beam-option", "project=p",
                                "--beam-option", "region=r"])
