"""Where the Evaluator's time goes: the model, and TFMA's metrics per slice.

On a pipeline run's output (the newest Trainer model, ExampleGen's test
split), in one process, in turns, round after round (so a load that rises or
falls on the machine reaches every variant alike):

* `model_alone`: the signature the Evaluator calls (serving_tf_examples) on
  every serialized test example, in batches of --batch-size;
* `pipeline_config`: TFMA (`run_model_analysis`, the DirectRunner) with the
  EvalConfig the pipeline builds for an input of one file (pipeline.make_eval_config:
  overall and length-bucket slices), as a first run without a baseline;
* `with_source_slice`: the same plus the source slice (an input of several files);
* `without_rating_metrics`: `pipeline_config` without the rating's MAE and Pearson's r;
* `overall_slice_only`: `pipeline_config` without the length-bucket slice.

Writes bench/results/evaluator_profile_<dataset>.json (or --output).

    python bench/evaluator_profile.py --dataset imdb --output-dir outputs
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tensorflow as tf  # noqa: E402
import tensorflow_model_analysis as tfma  # noqa: E402
import train_benchmark as tb  # noqa: E402

from models import features  # noqa: E402
from pipeline import configs  # noqa: E402
from pipeline import pipeline as pipeline_lib  # noqa: E402


def first_run_config(dataset: configs.DatasetConfig, variant: str) -> tfma.EvalConfig:
    """The pipeline's EvalConfig as TFMA runs it without a baseline (no change thresholds), cut down by `variant`."""
    config = copy.deepcopy(pipeline_lib.make_eval_config(dataset, slice_by_source=variant == "with_source_slice"))
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            for threshold in metric.per_slice_thresholds:
                threshold.threshold.ClearField("change_threshold")
    if variant == "without_rating_metrics":
        rating = {features.PREDICTED_RATING}
        kept = [spec for spec in config.metrics_specs if set(spec.output_names) != rating]
        del config.metrics_specs[:]
        config.metrics_specs.extend(kept)
    elif variant == "overall_slice_only":
        del config.slicing_specs[1:]
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default="imdb")
    parser.add_argument("--output-dir", type=Path, default=configs.default_output_dir())
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--output")
    args = parser.parse_args()
    dataset = configs.DATASETS[args.dataset]
    root = args.output_dir / "pipelines" / f"sentiment-{dataset.name}"
    model_dir = Path(tb.latest(str(root / "Trainer" / "model" / "*"))) / "Format-Serving"
    test_dir = Path(tb.latest(str(root / "ExampleGen" / "examples" / "*"))) / "Split-test"
    files = sorted(str(p) for p in test_dir.glob("*.gz"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    signature = tf.saved_model.load(str(model_dir)).signatures[features.TF_EXAMPLE_SIGNATURE]
    (input_name,) = signature.structured_input_signature[1]

    def model_alone():
        for start in range(0, len(records), args.batch_size):
            signature(**{input_name: tf.constant(records[start:start + args.batch_size])})

    def tfma_run(variant):
        config = first_run_config(dataset, variant)
        shared_model = tfma.default_eval_shared_model(str(model_dir), eval_config=config)
        with tempfile.TemporaryDirectory() as output:
            tfma.run_model_analysis(eval_shared_model=shared_model, eval_config=config,
                                    data_location=str(test_dir / "*.gz"), output_path=output)

    runs = {"model_alone": model_alone, **{v: (lambda v=v: tfma_run(v)) for v in
                                           ("pipeline_config", "with_source_slice", "without_rating_metrics",
                                            "overall_slice_only")}}
    model_alone()  # traces the signature for each batch shape, outside the timing
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_number in range(args.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(round(time.perf_counter() - started, 1))
            print(f"round {round_number + 1}: {name} {seconds[name][-1]} s", flush=True)
    result = {"dataset": dataset.name, "model": str(model_dir), "test_examples": len(records),
              "batch_size": args.batch_size, "rounds": args.rounds, "seconds": seconds,
              "median_seconds": {name: statistics.median(values) for name, values in seconds.items()},
              "slicing_specs": {v: [list(s.feature_keys) for s in first_run_config(dataset, v).slicing_specs]
                                for v in runs if v != "model_alone"}}
    output = Path(args.output or RESULTS / f"evaluator_profile_{dataset.name}.json")
    output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["median_seconds"], indent=2))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
