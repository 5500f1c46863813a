"""Command line: `python -m pipeline run --dataset polarity|imdb [options]`.

Each subcommand's parser names the function that runs it (`set_defaults(func=...)`);
commands that take config overrides share configs.add_overrides_option and configs.dataset_of.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from pipeline import configs, data_sources, metadata_store, runner_profiles


def build_config(args: argparse.Namespace) -> configs.PipelineConfig:
    try:
        dataset = configs.dataset_of(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        input_path = data_sources.resolve_input(dataset, args.input, args.data_dir, download=not args.no_download)
        if dataset.model.pretrained_embeddings:
            vectors = data_sources.resolve_embeddings(dataset.model.pretrained_embeddings, args.data_dir)
            dataset = configs.with_overrides(dataset, {"model.pretrained_embeddings": str(vectors)})
        if dataset.pretraining.enabled:
            dataset = data_sources.resolve_pretraining_sources(dataset, args.data_dir)
    except data_sources.DataNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    spans = data_sources.span_numbers(input_path)
    if args.span is not None and args.span not in spans:
        raise SystemExit(f"error: --span {args.span}: {input_path} has "
                         + (f"spans {', '.join(map(str, spans))}" if spans else "no span-<N>/ folders"))
    try:
        return configs.PipelineConfig(
            dataset=dataset,
            input_path=input_path,
            output_dir=configs.output_dir_of(args.output_dir),
            enable_cache=not args.no_cache,
            quarantine=args.quarantine,
            allowed_anomalies=tuple(args.allow_anomaly or ()),
            input_spans=bool(spans),
            span=args.span,
            metadata_uri=args.metadata or os.environ.get(metadata_store.ENV_URI) or None,
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the pipeline locally (Beam DirectRunner, SQLite metadata)")
    run.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    run.add_argument("--input", help="read this instead of the dataset's default source: a CSV/TSV[.gz] with a "
                     "text,label header, or an aclImdb / rt-polaritydata archive or folder")
    run.add_argument("--data-dir", help=f"directory holding <dataset>/ files (default: ${data_sources.DATA_DIR_ENV}, "
                     "then ../shared/data, then a download)")
    run.add_argument("--output-dir", help="where pipeline outputs, metadata and served models go "
                     "(default: $SENTIMENT_OUTPUT_DIR or ./outputs)")
    configs.add_overrides_option(run)
    run.add_argument("--span", type=int, help="with an --input laid out as span-<N>/ folders: read span N "
                     "(default: the newest); training reads the newest training.spans validated spans up to it")
    run.add_argument("--metadata", metavar="URI",
                     help="the ML Metadata store: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (or mysql://); "
                          f"default ${metadata_store.ENV_URI}, else a SQLite file under --output-dir. Passwords "
                          "come from PGPASSWORD or a passfile (PGPASSFILE, ~/.pgpass), never the URI")
    run.add_argument("--no-cache", action="store_true", help="re-run components even when inputs are unchanged")
    run.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    run.add_argument("--quarantine", action="store_true",
                     help="set rows that cannot be parsed aside (counted, written beside the examples) "
                     "instead of failing the run")
    run.add_argument("--allow-anomaly", action="append", metavar="FEATURE[:ANOMALY_TYPE]",
                     help="accept a data anomaly on purpose, e.g. num_chars or num_chars:INT_TYPE_BIG_INT")
    run.add_argument("--verbose", action="store_true", help="also stream the run's log (absl, TensorFlow, Beam, "
                     "Keras; always written to <pipeline root>/logs/) and TensorFlow's C++ INFO lines")
    run.add_argument("--beam-profile", choices=sorted(runner_profiles.PROFILES),
                     help="where the Beam work runs (pipeline/runner_profiles.py); "
                     "default: configs.DEFAULT_BEAM_ARGS, i.e. " + runner_profiles.DEFAULT_PROFILE)
    run.add_argument("--beam-option", action="append", metavar="KEY=VALUE",
                     help="a setting of the Beam profile, e.g. workers=2, project=..., job_endpoint=host:8099")
    run.set_defaults(func=run_command)

    # Light imports: the heavy ones (TFX, TensorFlow) happen when a command runs.
    from pipeline import bulk_inference, kubeflow_v2_runner, lineage, monitor, predict, serve, spans

    kubeflow_v2_runner.add_compile_parser(commands)
    predict.add_parser(commands)
    serve.add_parser(commands)
    monitor.add_parser(commands)
    spans.add_parser(commands)
    bulk_inference.add_parser(commands)
    lineage.add_parser(commands)
    # The modules add their parsers; which function runs each command is said here, in one place.
    for name, func in {
        "compile": kubeflow_v2_runner.compile_command,
        "predict": predict.predict_command,
        "serve": serve.serve_command,
        "monitor": monitor.monitor_command,
        "make-spans": spans.make_spans_command,
        "score": bulk_inference.score_command,
        "lineage": lineage.lineage_command,
    }.items():
        commands.choices[name].set_defaults(func=func)
    missing = sorted(name for name, sub in commands.choices.items() if sub.get_default("func") is None)
    assert not missing, f"subcommands without a func: {missing}"
    return parser


def run_command(args: argparse.Namespace) -> int:
    """`run`: the pipeline on the local runner."""
    from pipeline import console

    with console.startup_output(args.verbose):  # import-time noise waits for the run's log
        config = _run_config(args)
        from pipeline import local_runner  # heavy imports only once the arguments are valid

    try:
        local_runner.run(config, verbose=args.verbose)
    except (local_runner.PipelineFailed, local_runner.RunInProgress) as failure:
        print(f"\n{failure}", file=sys.stderr, flush=True)
        return 1
    return 0


def _run_config(args: argparse.Namespace) -> configs.PipelineConfig:
    config = build_config(args)
    if args.beam_profile or args.beam_option:
        try:
            beam_args = runner_profiles.beam_pipeline_args(
                args.beam_profile or runner_profiles.DEFAULT_PROFILE,
                runner_profiles.parse_options(args.beam_option),
            )
        except runner_profiles.ProfileError as error:
            raise SystemExit(f"error: {error}") from None
        config = dataclasses.replace(config, beam_args=beam_args)
    for name, value in configs.tf_thread_environment(config.dataset.training).items():
        os.environ.setdefault(name, value)  # TensorFlow reads these once, at start
    return config


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
