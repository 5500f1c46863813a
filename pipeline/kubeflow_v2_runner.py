"""Compiles the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

    python -m pipeline compile --target kubeflow --image IMAGE \\
        --pipeline-root gs://BUCKET/pipelines --data-root gs://BUCKET/data \\
        --serving-root gs://BUCKET/serving --output sentiment-polarity.json

The graph is the one `create_pipeline()` builds for the local runner; only
where things live differs:

* Paths are runtime parameters of the compiled pipeline, with the values
  given here as defaults, so one spec runs against any bucket (GCS, S3, MinIO):
  `data_location` (the directory ExampleGen reads the dataset source from) and
  `push_destination` (a JSON `PushDestination`, where blessed models go). The
  pipeline root is the spec's `gcsOutputDirectory` (JSON output), which KFP
  and Vertex both let a run override (`pipeline_root=` at submission).
* Code is not read from this machine: the module code is referenced by import
  path (`models.preprocessing.preprocessing_fn`, `models.trainer.run_fn`) and
  the image (see Dockerfile) has this package installed at IMAGE_PROJECT_ROOT,
  where the curated schemas and setup.py are too. Compilation fails if any
  execution property still points into this checkout.
* Metadata is the orchestrator's, so no connection config is compiled in.

Compiling needs `kfp-pipeline-spec`, which cannot share a venv with TFX 1.16's
protobuf pin through pip's resolver; `scripts/setup_kfp_venv.sh` makes
`.venv-kfp` (kfp on top of .venv) and `make compile-kubeflow` uses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from pipeline import configs, runner_profiles

# Where the Dockerfile copies (and installs) this project inside the image.
IMAGE_PROJECT_ROOT = "/pipeline"
# The runtime parameters of the compiled pipeline.
DATA_LOCATION_PARAM = "data_location"
PUSH_DESTINATION_PARAM = "push_destination"
# Stands in for local paths while the graph is built; none may survive compilation.
_PLACEHOLDER_ROOT = Path("/__kfp_placeholder__")


class CompileError(RuntimeError):
    pass


def _join(root: str, *parts: str) -> str:
    """Joins URI parts with '/' (pathlib would turn gs://b into gs:/b)."""
    return "/".join([root.rstrip("/")] + [p.strip("/") for p in parts if p and p.strip("/")])


def default_source(dataset: configs.DatasetConfig) -> str:
    """The dataset source (relative to the data root) a cluster run reads by default: its CSV form."""
    return dataset.sources[-1]


def push_destination_json(serving_dir: str) -> str:
    return json.dumps({"filesystem": {"baseDirectory": serving_dir}}, sort_keys=True)


def build_pipeline(
    dataset: configs.DatasetConfig,
    pipeline_root: str,
    data_root: str,
    serving_root: str,
    source: str | None = None,
    beam_profile: str = runner_profiles.DEFAULT_PROFILE,
    beam_options: Mapping[str, str] | None = None,
    image_project_root: str = IMAGE_PROJECT_ROOT,
    enable_cache: bool = True,
):
    """The TFX pipeline as it is compiled for Kubeflow: paths as runtime parameters."""
    from tfx import v1 as tfx
    from tfx.types import standard_component_specs as specs

    from pipeline.pipeline import create_pipeline

    source = source or default_source(dataset)
    source_path = PurePosixPath(source)
    dataset = pretraining_sources_under(dataset, data_root)
    beam_args = runner_profiles.beam_pipeline_args(
        beam_profile, beam_options, setup_file=_join(image_project_root, "setup.py")
    )
    config = configs.PipelineConfig(
        dataset=dataset,
        input_path=_PLACEHOLDER_ROOT / "data" / source,
        output_dir=_PLACEHOLDER_ROOT / "outputs",
        beam_args=beam_args,
        enable_cache=enable_cache,
    )
    pipeline = create_pipeline(config)
    pipeline_name = config.pipeline_name
    pipeline.pipeline_info.pipeline_root = _join(pipeline_root, pipeline_name)

    data_location = tfx.dsl.experimental.RuntimeParameter(
        name=DATA_LOCATION_PARAM, ptype=str, default=_join(data_root, str(source_path.parent))
    )
    push_destination = tfx.dsl.experimental.RuntimeParameter(
        name=PUSH_DESTINATION_PARAM, ptype=str, default=push_destination_json(_join(serving_root, pipeline_name))
    )
    image_schema = _join(image_project_root, str(dataset.schema_dir.relative_to(configs.PROJECT_ROOT)), "schema.pbtxt")
    replaced = {specs.INPUT_BASE_KEY: 0, specs.PUSH_DESTINATION_KEY: 0, specs.SCHEMA_FILE_KEY: 0}
    for component in pipeline.components:
        props = component.exec_properties
        if specs.INPUT_BASE_KEY in props:
            props[specs.INPUT_BASE_KEY] = data_location
            replaced[specs.INPUT_BASE_KEY] += 1
        if specs.PUSH_DESTINATION_KEY in props:
            props[specs.PUSH_DESTINATION_KEY] = push_destination
            replaced[specs.PUSH_DESTINATION_KEY] += 1
        if specs.SCHEMA_FILE_KEY in props:
            props[specs.SCHEMA_FILE_KEY] = image_schema
            replaced[specs.SCHEMA_FILE_KEY] += 1
    if any(count != 1 for count in replaced.values()):
        raise CompileError(f"expected one ExampleGen, Pusher and ImportSchemaGen; replaced {replaced}")
    _check_no_local_paths(pipeline)
    return pipeline


def pretraining_sources_under(dataset: configs.DatasetConfig, data_root: str) -> configs.DatasetConfig:
    """`dataset` whose pretraining reads its relative files under the data root, as ExampleGen
    reads its source there (not this machine's copies); absolute paths and URIs stay as they are."""
    pretraining = dataset.pretraining
    moved = {field: tuple(path if "://" in path or path.startswith("/") else _join(data_root, path)
                          for path in getattr(pretraining, field))
             for field in ("unlabeled_sources", "labelled_sources")}
    return dataclasses.replace(dataset, pretraining=dataclasses.replace(pretraining, **moved))


def _check_no_local_paths(pipeline) -> None:
    """Fails if an execution property or Beam arg still names a path on this machine."""
    from pipeline import data_sources

    local_roots = (str(_PLACEHOLDER_ROOT), str(configs.PROJECT_ROOT), str(data_sources.SHARED_DATA_DIR))
    for component in pipeline.components:
        values: list[Any] = list(component.exec_properties.values())
        spec = getattr(component, "executor_spec", None)
        values += list(getattr(spec, "beam_pipeline_args", None) or [])
        for value in values:
            text = value if isinstance(value, str) else repr(value)
            for root in local_roots:
                if root in text:
                    raise CompileError(f"{component.id} would read a local path on the cluster: {text!r}")


def compile_pipeline(
    dataset: configs.DatasetConfig,
    image: str,
    output_file: str | os.PathLike,
    pipeline_root: str,
    data_root: str,
    serving_root: str,
    source: str | None = None,
    beam_profile: str = runner_profiles.DEFAULT_PROFILE,
    beam_options: Mapping[str, str] | None = None,
    image_project_root: str = IMAGE_PROJECT_ROOT,
    enable_cache: bool = True,
) -> dict[str, Any]:
    """Writes the Kubeflow V2 spec (`.json`: a PipelineJob; `.yaml`: the PipelineSpec) and returns it."""
    from tfx import v1 as tfx

    pipeline = build_pipeline(
        dataset, pipeline_root, data_root, serving_root, source, beam_profile, beam_options,
        image_project_root, enable_cache,
    )
    output_file = Path(output_file)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image,
            # Schema 2.1 (typed parameters) is what KFP 2 backends and Vertex expect.
            use_pipeline_spec_2_1=True,
        ),
    )
    defaults = runtime_parameter_defaults(pipeline)
    job = runner.run(pipeline, parameter_values=defaults, write_out=False)
    # TFX records the defaults only in the job's runtimeConfig; put them in the
    # spec too, so a run submitted from the spec alone may leave them out.
    parameters = job["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    for name, value in defaults.items():
        parameters[name]["defaultValue"] = value
        parameters[name]["isOptional"] = True
    output_file.parent.mkdir(parents=True, exist_ok=True)
    if output_file.suffix in (".yaml", ".yml"):
        import yaml

        output_file.write_text(yaml.safe_dump(job["pipelineSpec"], sort_keys=True))
    else:
        output_file.write_text(json.dumps(job, indent=2, sort_keys=True) + "\n")
    return job


def runtime_parameter_defaults(pipeline) -> dict[str, Any]:
    from tfx.orchestration import data_types

    defaults = {}
    for component in pipeline.components:
        for value in component.exec_properties.values():
            if isinstance(value, data_types.RuntimeParameter):
                defaults[value.name] = value.default
    return defaults


def validate_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Parses a compiled spec strictly with the KFP protobufs and loads it with the kfp SDK.

    Raises if any field is unknown to `kfp-pipeline-spec` or the SDK refuses it.
    Returns a short description (task names, parameters, images).
    """
    import yaml
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    path = Path(path)
    text = path.read_text()
    document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    spec_dict = document.get("pipelineSpec", document)
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.Parse(json.dumps(spec_dict), spec)  # strict: no ignore_unknown_fields
    if "pipelineSpec" in document:
        job = pipeline_spec_pb2.PipelineJob()
        json_format.Parse(json.dumps(document), job)
    # The SDK loads a bare PipelineSpec document; give it one.
    with tempfile.TemporaryDirectory() as scratch:
        spec_only = Path(scratch) / "pipeline_spec.yaml"
        spec_only.write_text(yaml.safe_dump(spec_dict, sort_keys=True))
        loaded = components.load_component_from_file(str(spec_only))
    executors = spec_dict.get("deploymentSpec", {}).get("executors", {})
    images = sorted({e["container"]["image"] for e in executors.values() if "container" in e})
    return {
        "name": spec.pipeline_info.name,
        "tasks": sorted(spec.root.dag.tasks),
        "parameters": sorted(spec.root.input_definitions.parameters),
        "images": images,
        "sdk_component": loaded.name,
    }


# --- command line: `python -m pipeline compile --target kubeflow ...` -------------------------

TARGETS = ("kubeflow",)


def add_compile_parser(commands) -> None:
    """Adds the `compile` subcommand to the `python -m pipeline` parser."""
    parser = commands.add_parser(
        "compile", help="compile the pipeline for Kubeflow Pipelines v2 / Vertex AI (needs .venv-kfp)"
    )
    parser.add_argument("--target", choices=TARGETS, required=True)
    parser.add_argument("--image", required=True, help="container image built from the Dockerfile (with a tag)")
    parser.add_argument("--output", help="spec file to write: .json (PipelineJob, for Vertex AI and KFP) or "
                        ".yaml (PipelineSpec); default outputs/kubeflow/sentiment-<dataset>.json")
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    configs.add_overrides_option(parser)
    parser.add_argument("--pipeline-root", required=True,
                        help="where runs write artifacts, e.g. gs://BUCKET/pipelines (the pipeline name is appended)")
    parser.add_argument("--data-root", required=True,
                        help="data directory on the cluster, laid out like ../shared/data (gs://BUCKET/data)")
    parser.add_argument("--serving-root", required=True,
                        help="where blessed models are pushed (the pipeline name is appended)")
    parser.add_argument("--source", help="dataset source under --data-root (default: the dataset's CSV, "
                        "e.g. polarity/rt-polarity.csv.gz)")
    parser.add_argument("--beam-profile", choices=sorted(runner_profiles.PROFILES),
                        default=runner_profiles.DEFAULT_PROFILE, help="where the Beam work runs (see runner_profiles)")
    parser.add_argument("--beam-option", action="append", metavar="KEY=VALUE",
                        help="a setting of the Beam profile, e.g. project=my-proj, region=europe-west1")
    parser.add_argument("--image-project-root", default=IMAGE_PROJECT_ROOT,
                        help="where the Dockerfile puts this project inside the image")
    parser.add_argument("--no-cache", action="store_true", help="compile with caching off")


def compile_command(args) -> int:
    try:
        from kfp.pipeline_spec import pipeline_spec_pb2  # noqa: F401
    except ImportError:
        raise SystemExit(
            "error: compiling for Kubeflow needs kfp-pipeline-spec, which is not in .venv (it conflicts with "
            "TFX's protobuf pin).\n"
            "  Run: bash scripts/setup_kfp_venv.sh && .venv-kfp/bin/python -m pipeline compile ..."
        ) from None
    try:
        dataset = configs.dataset_of(args)
        beam_options = runner_profiles.parse_options(args.beam_option)
        runner_profiles.beam_pipeline_args(args.beam_profile, beam_options)  # fail fast on a bad profile
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    output = Path(args.output or configs.default_output_dir() / "kubeflow" / f"sentiment-{dataset.name}.json")
    compile_pipeline(
        dataset, args.image, output, args.pipeline_root, args.data_root, args.serving_root,
        source=args.source, beam_profile=args.beam_profile, beam_options=beam_options,
        image_project_root=args.image_project_root, enable_cache=not args.no_cache,
    )
    summary = validate_spec(output)
    print(f"Wrote {output} (parsed strictly as a KFP PipelineSpec)\n"
          f"  pipeline:   {summary['name']}\n  image:      {', '.join(summary['images'])}\n"
          f"  tasks:      {', '.join(summary['tasks'])}\n  parameters: {', '.join(summary['parameters'])}")
    return 0
