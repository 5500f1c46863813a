"""Command line: `python -m pipeline run --dataset polarity|imdb [options]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import dataclasses

from pipeline import configs, data_sources, metadata_store, runner_profiles


def build_config(args: argparse.Namespace) -> configs.PipelineConfig:
    dataset = configs.DATASETS[args.dataset]
    try:
        dataset = configs.with_overrides(dataset, configs.parse_overrides(args.set or []))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        input_path = data_sources.resolve_input(dataset, args.input, args.data_dir, download=not args.no_download)
        if dataset.model.pretrained_embeddings:
            vectors = data_sources.resolve_embeddings(dataset.model.pretrained_embeddings, args.data_dir)
            dataset = configs.with_overrides(dataset, {"model.pretrained_embeddings": str(vectors)})
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
            output_dir=Path(args.output_dir).resolve() if args.output_dir else configs.default_output_dir(),
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
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a dataset config field, e.g. training.epochs=2 or max_len=128")
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
    run.add_argument("--verbose", action="store_true", help="print the traceback of a failure too "
                     "(it is always written to a log file under the pipeline root)")
    run.add_argument("--beam-profile", choices=sorted(runner_profiles.PROFILES),
                     help="where the Beam work runs (pipeline/runner_profiles.py); "
                     "default: configs.DEFAULT_BEAM_ARGS, i.e. " + runner_profiles.DEFAULT_PROFILE)
    run.add_argument("--beam-option", action="append", metavar="KEY=VALUE",
                     help="a setting of the Beam profile, e.g. workers=2, project=..., job_endpoint=host:8099")

    from pipeline import kubeflow_v2_runner  # light: the TFX imports happen when compiling

    kubeflow_v2_runner.add_compile_parser(commands)

    from pipeline import monitor, predict, serve

    predict.add_parser(commands)
    serve.add_parser(commands)
    monitor.add_parser(commands)

    from pipeline import bulk_inference, lineage, spans

    spans.add_parser(commands)
    bulk_inference.add_parser(commands)
    lineage.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "compile":
        from pipeline import kubeflow_v2_runner

        return kubeflow_v2_runner.compile_command(args)
    if args.command == "predict":
        from pipeline import predict

        return predict.predict_command(args)
    if args.command == "serve":
        from pipeline import serve

        return serve.serve_command(args)
    if args.command == "monitor":
        from pipeline import monitor

        return monitor.monitor_command(args)
    if args.command == "make-spans":
        from pipeline import spans

        return spans.make_spans_command(args)
    if args.command == "score":
        from pipeline import bulk_inference

        return bulk_inference.score_command(args)
    if args.command == "lineage":
        from pipeline import lineage

        return lineage.lineage_command(args)
    if args.command == "run":
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
        from pipeline import local_runner  # heavy imports only once the arguments are valid

        try:
            local_runner.run(config, verbose=args.verbose)
        except (local_runner.PipelineFailed, local_runner.RunInProgress) as failure:
            print(f"\n{failure}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.exit(main())
