"""The Kubeflow Pipelines v2 spec: compiled by the real command, parsed strictly, graph asserted.

Compiling needs kfp-pipeline-spec, which pip cannot install beside TFX 1.16's
protobuf pin, so the compile and the strict parse run in .venv-kfp (kfp on top
of .venv, built here by scripts/setup_kfp_venv.sh in about 15 s on a warm pip
cache). The graph assertions then read the JSON in this process. The spec is
not executed: there is no Kubeflow cluster or Docker engine here.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import configs, kubeflow_v2_runner
from tests.helpers import required_upstream

ROOT = configs.PROJECT_ROOT
KFP_PYTHON = ROOT / ".venv-kfp" / "bin" / "python"
IMAGE = "europe-docker.pkg.dev/my-proj/ml/sentiment-pipeline:1.2.3"
PIPELINE_ROOT = "gs://my-bucket/pipelines"
DATA_ROOT = "gs://my-bucket/data"
SERVING_ROOT = "s3://other-bucket/serving"
EXECUTOR_MODULE = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
RESOLVER = "LatestBlessedModelResolver-model-resolver"
BLESSING_RESOLVER = "LatestBlessedModelResolver-model-blessing-resolver"

# The edges of the pipeline as the README draws it; every one must be in the spec.
REQUIRED_DEPENDENCIES = required_upstream(RESOLVER)
BEAM_TASKS = {"ExampleGen", "StatisticsGen", "Transform", "Evaluator"}


def _env():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    return env


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def kfp_python():
    _run(["bash", "scripts/setup_kfp_venv.sh"], timeout=900)
    return str(KFP_PYTHON)


def _compile(kfp_python, output, *extra):
    return _run([
        kfp_python, "-m", "pipeline", "compile", "--target", "kubeflow", "--image", IMAGE,
        "--pipeline-root", PIPELINE_ROOT, "--data-root", DATA_ROOT, "--serving-root", SERVING_ROOT,
        "--output", str(output), *extra,
    ], timeout=600)


@pytest.fixture(scope="module")
def compiled(kfp_python, tmp_path_factory):
    """polarity as a PipelineJob JSON (default profile), imdb as a PipelineSpec YAML on Dataflow."""
    out = tmp_path_factory.mktemp("kfp")
    polarity, imdb = out / "sentiment-polarity.json", out / "sentiment-imdb.yaml"
    printed = _compile(kfp_python, polarity).stdout
    _compile(kfp_python, imdb, "--dataset", "imdb", "--beam-profile", "dataflow",
             "--beam-option", "project=my-proj", "--beam-option", "region=europe-west1",
             "--beam-option", "temp_location=gs://my-bucket/tmp")
    return {"polarity": polarity, "imdb": imdb, "printed": printed}


@pytest.fixture(scope="module")
def job(compiled):
    return json.loads(compiled["polarity"].read_text())


@pytest.fixture(scope="module")
def spec(job):
    return job["pipelineSpec"]


def _executor(spec, task):
    label = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]


def _constant(task_spec, name):
    return task_spec["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def test_both_specs_parse_strictly_and_load_with_the_kfp_sdk(kfp_python, compiled):
    # Strict json_format.Parse into PipelineSpec (and PipelineJob for the JSON),
    # then kfp.components.load_component_from_file; done in the kfp venv.
    for name in ("polarity", "imdb"):
        script = ("import json, sys; from pipeline.kubeflow_v2_runner import validate_spec; "
                  "print(json.dumps(validate_spec(sys.argv[1])))")
        summary = json.loads(_run([kfp_python, "-c", script, str(compiled[name])]).stdout.strip().splitlines()[-1])
        assert summary["name"] == f"sentiment-{name}"
        assert summary["sdk_component"] == f"sentiment-{name}"
        assert summary["images"] == [IMAGE]
        assert summary["parameters"] == ["data_location", "push_destination"]
    assert "parsed strictly" in compiled["printed"]


def test_a_spec_with_an_unknown_field_is_rejected(kfp_python, compiled, tmp_path):
    broken = json.loads(compiled["polarity"].read_text())
    broken["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["notAField"] = 1
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    script = "import sys; from pipeline.kubeflow_v2_runner import validate_spec; validate_spec(sys.argv[1])"
    result = subprocess.run([kfp_python, "-c", script, str(path)], cwd=ROOT, env=_env(),
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "notAField" in result.stderr


def test_every_component_is_a_task_with_its_dependencies(spec):
    from pipeline.pipeline import create_pipeline

    tasks = spec["root"]["dag"]["tasks"]
    dependencies = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    for name, required in REQUIRED_DEPENDENCIES.items():
        assert name in dependencies, f"{name} missing from {sorted(dependencies)}"
        assert required <= dependencies[name], (name, dependencies[name])
    assert dependencies[RESOLVER] == dependencies[BLESSING_RESOLVER] == set()

    # Exactly the graph create_pipeline() builds for the local runner, nothing more or less.
    local = create_pipeline(configs.PipelineConfig(
        dataset=configs.POLARITY, input_path=Path("/data/polarity/rt-polarity.csv.gz"), output_dir=Path("/out")))
    expected = {}
    for node in local.components:
        upstream = {RESOLVER if u.id == "LatestBlessedModelResolver" else u.id for u in node.upstream_nodes}
        if node.id == "LatestBlessedModelResolver":
            expected[RESOLVER] = expected[BLESSING_RESOLVER] = upstream
        else:
            expected[node.id] = upstream
    assert dependencies == expected


def test_every_task_runs_the_image_with_the_tfx_executor_entrypoint(spec):
    executors = spec["deploymentSpec"]["executors"]
    containers = {label: e["container"] for label, e in executors.items() if "container" in e}
    # Everything but the two resolver queries is a container task.
    assert len(containers) == len(spec["root"]["dag"]["tasks"]) - 2
    for label, container in containers.items():
        assert container["image"] == IMAGE, label
        assert container["command"] == ["python", "-m", EXECUTOR_MODULE], label
    assert {e.get("resolver") is not None for label, e in executors.items() if "resolver" in label} == {True}


def test_paths_are_runtime_parameters_with_cluster_defaults(job, spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == {"data_location", "push_destination"}
    assert parameters["data_location"] == {
        "parameterType": "STRING", "defaultValue": f"{DATA_ROOT}/polarity", "isOptional": True}
    destination = json.loads(parameters["push_destination"]["defaultValue"])
    assert destination == {"filesystem": {"baseDirectory": f"{SERVING_ROOT}/sentiment-polarity"}}
    assert job["runtimeConfig"]["parameterValues"] == {
        name: p["defaultValue"] for name, p in parameters.items()}
    # The pipeline root is the run's output directory, which a submission can override.
    assert job["runtimeConfig"]["gcsOutputDirectory"] == f"{PIPELINE_ROOT}/sentiment-polarity"

    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["ExampleGen"]["inputs"]["parameters"]["input_base"] == {"componentInputParameter": "data_location"}
    assert tasks["Pusher"]["inputs"]["parameters"]["push_destination"] == {
        "componentInputParameter": "push_destination"}
    # ExampleGen still reads the dataset's file under data_location.
    input_config = json.loads(_constant(tasks["ExampleGen"], "input_config"))
    assert {s["pattern"] for s in input_config["splits"]} == {"rt-polarity.csv.gz"}


def test_code_and_schema_come_from_the_image_not_this_machine(compiled, spec):
    tasks = spec["root"]["dag"]["tasks"]
    assert _constant(tasks["ImportSchemaGen"], "schema_file") == "/pipeline/schema/polarity/schema.pbtxt"
    assert _constant(tasks["Transform"], "preprocessing_fn") == "models.preprocessing.preprocessing_fn"
    assert _constant(tasks["Trainer"], "run_fn") == "models.trainer.run_fn"
    text = compiled["polarity"].read_text() + compiled["imdb"].read_text()
    assert str(ROOT) not in text and str(ROOT.parent / "shared") not in text
    # Polarity's pretraining reads IMDB's labelled reviews under the data root, as ExampleGen its source.
    assert json.loads(_constant(tasks["ReaderPretrainer"], "labelled_sources")) == [f"{DATA_ROOT}/imdb/train.csv.gz"]
    assert "__kfp_placeholder__" not in text
    for task in BEAM_TASKS:
        assert "--setup_file=/pipeline/setup.py" in _executor(spec, task)["container"]["args"], task


def test_beam_profile_reaches_every_beam_task(compiled):
    spec = yaml.safe_load(compiled["imdb"].read_text())
    assert spec["pipelineInfo"]["name"] == "sentiment-imdb"
    assert spec["root"]["inputDefinitions"]["parameters"]["data_location"]["defaultValue"] == f"{DATA_ROOT}/imdb"
    for task in BEAM_TASKS:
        args = _executor(spec, task)["container"]["args"]
        for arg in ("--runner=DataflowRunner", "--project=my-proj", "--region=europe-west1",
                    "--temp_location=gs://my-bucket/tmp", "--setup_file=/pipeline/setup.py"):
            assert arg in args, (task, arg)
        assert "--direct_running_mode=in_memory" not in args


def test_dockerfile_builds_on_tfx_and_installs_the_project_where_the_spec_expects_it():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.splitlines()[[line.startswith("FROM") for line in dockerfile.splitlines()].index(True)] == (
        "FROM tensorflow/tfx:1.16.0")
    assert f"WORKDIR {kubeflow_v2_runner.IMAGE_PROJECT_ROOT}" in dockerfile
    for directory in ("pipeline/", "components/", "models/", "schema/"):
        assert f"COPY {directory} {directory}" in dockerfile
    assert "-e ." in dockerfile


def test_compile_without_kfp_says_how_to_get_it():
    # .venv has no kfp on purpose; the command must say where to compile instead.
    if importlib.util.find_spec("kfp") is not None:
        pytest.skip("kfp is importable here")
    result = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--target", "kubeflow", "--image", IMAGE,
                             "--pipeline-root", "gs://b/p", "--data-root", "gs://b/d", "--serving-root", "gs://b/s"],
                            cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert result.returncode != 0
    assert "setup_kfp_venv.sh" in result.stderr
