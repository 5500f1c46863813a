"""Seconds per training epoch of a dataset's configured model, on a pipeline run's Transform output.

Each variant trains in a process of its own (TensorFlow's thread pools are
fixed when it starts): the model and optimizer the Trainer builds, on the
training split the Trainer reads, for a few epochs without validation. The
first epoch includes tracing the training step; the others are the steady
cost per epoch. Variants run in turn, round after round, so a load that
rises or falls on the machine reaches them alike: compare them by the
ratio within one run.

    python bench/epoch_speed.py --output-dir outputs --dataset polarity \\
        --variant default= --variant threads=training.intra_op_threads=1,training.inter_op_threads=2

`--code DIR` times the models/ of another checkout (a git worktree of an
older commit) as one more variant, `before`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def measure(code: Path, output_dir: Path, dataset: str, overrides: list[str], epochs: int) -> dict:
    """One variant in this process: per-epoch seconds (called with --child)."""
    sys.path.insert(0, str(code))
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from pipeline import configs

    config = configs.with_overrides(configs.DATASETS[dataset], dict(o.split("=", 1) for o in overrides))
    trainer_config = configs.TrainerConfig.of(config)
    training = trainer_config.training
    # Before TensorFlow starts, as the local runner does.
    for pool, threads in (("INTRA", training.intra_op_threads), ("INTER", training.inter_op_threads)):
        if threads:
            os.environ[f"TF_NUM_{pool}OP_THREADS"] = str(threads)
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import model as model_lib
    from models import trainer

    root = output_dir / "pipelines" / config.pipeline_name / "Transform"
    graph = max((root / "transform_graph").iterdir(), key=lambda p: int(p.name))
    examples = root / "transformed_examples" / graph.name / "Split-train" / "*"
    transform_output = tft.TFTransformOutput(str(graph))
    tf.keras.utils.set_random_seed(training.seed)
    dataset = trainer.input_fn(
        [str(examples)], transform_output, batch_size=training.batch_size,
        sort_window_batches=training.length_sort_window_batches, shuffle=True,
        shuffle_buffer=training.shuffle_buffer, seed=training.seed, length_multiple=training.length_multiple,
        rating=trainer_config.model.rating_head)
    started = time.time()
    _, train_model, _ = trainer.build_models(transform_output, trainer_config, training.seed)
    model_lib.build_metric_variables(train_model, next(iter(dataset)))  # as the Trainer does
    build_seconds = time.time() - started
    seconds = []

    class EpochTimer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(round(time.time() - self.started, 2))

    callbacks = [c for c in trainer.training_callbacks(training)
                 if not isinstance(c, tf.keras.callbacks.EarlyStopping)]
    train_model.fit(dataset, epochs=epochs, callbacks=[*callbacks, EpochTimer()], verbose=0)
    return {"build_seconds": round(build_seconds, 2), "epoch_seconds": seconds,
            # 0 = TensorFlow's default pool size.
            "intra_inter_op_threads": [training.intra_op_threads, training.inter_op_threads]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="a pipeline run's --output-dir")
    parser.add_argument("--dataset", default="polarity")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,KEY=VALUE",
                        help="a name and its --set overrides (comma-separated; none after '=' for the config)")
    parser.add_argument("--code", type=Path, help="another checkout to time as the variant 'before'")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("CODE", "OVERRIDES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        overrides = [o for o in args.child[1].split(",") if o]
        print(json.dumps(measure(Path(args.child[0]), args.output_dir, args.dataset, overrides, args.epochs)))
        return
    variants = {}
    for spec in args.variant or ["config="]:
        name, _, overrides = spec.partition("=")
        variants[name] = (ROOT, overrides)
    if args.code:
        variants["before"] = (args.code.resolve(), "")
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, (code, overrides) in variants.items():
            command = [sys.executable, __file__, "--output-dir", str(args.output_dir), "--dataset", args.dataset,
                       "--epochs", str(args.epochs), "--child", str(code), overrides]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"variant {name} failed:\n{done.stderr[-3000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {name}: {runs[name][-1]}", flush=True)
    steady = {name: [s for run in results for s in run["epoch_seconds"][1:]] for name, results in runs.items()}
    result = {
        "what": f"seconds per training epoch, {args.dataset}, Transform output of {args.output_dir}",
        "protocol": f"{args.rounds} rounds of {args.epochs} epochs per variant, variants in turn, each in its "
                    "own process; steady = epochs after the first (which traces the step)",
        "variants": {name: {"code": str(code), "overrides": overrides} for name, (code, overrides) in variants.items()},
        "runs": runs,
        "steady_epoch_seconds_mean": {name: round(sum(s) / len(s), 2) for name, s in steady.items() if s},
    }
    output = args.output or RESULTS / f"epoch_speed_{args.dataset}.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["steady_epoch_seconds_mean"]), "->", output)


if __name__ == "__main__":
    main()
