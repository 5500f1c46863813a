"""The pipeline with and without the pretrained reader, in one output directory.

1. `python -m pipeline run --set pretraining.enabled=true` from a fresh output
   directory: ExampleGen to Pusher with the ReaderPretrainer (not cached).
2. The same with pretraining off: everything upstream of the Trainer is
   cached, the Trainer trains from GloVe alone.
3. With `--variant` overrides (e.g. another learning rate), the same as 1
   again with them: the ReaderPretrainer is cached.

The pipeline's time with the pretraining cached is run 1's time less the
ReaderPretrainer's (`pipeline_seconds_pretraining_cached`): a run on new data
pretrains again, by design (its input changed).

Each run's figures come from its run_summary.json and the Trainer's
history.json; the pretraining's from the artifact's pretraining.json.
The runs are sequential on one machine: their times compare only when
nothing else runs. Writes bench/results/pretraining_<dataset>.json (or --output).

    python bench/pretraining_compare.py --dataset imdb --output-dir /tmp/pretraining
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def run(args, overrides: list[str], log: Path) -> dict:
    command = [sys.executable, "-m", "pipeline", "run", "--dataset", args.dataset, "--output-dir",
               str(args.output_dir)] + (["--data-dir", args.data_dir] if args.data_dir else [])
    for override in [*args.overrides, *overrides]:
        command += ["--set", override]
    started = time.time()
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.time() - started
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {code}); see {log}")
    root = args.output_dir / "pipelines" / f"sentiment-{args.dataset}"
    summary = json.loads((root / "run_summary.json").read_text())
    execution = Path(summary["model_uri"]).name
    history = json.loads((root / "Trainer" / "model_run" / execution / "history.json").read_text())
    restored = max(range(len(history["val_auc"])), key=history["val_auc"].__getitem__)
    return {
        "command": " ".join(command[1:]),
        "command_seconds": round(seconds, 1),
        "components": {c["component"]: {"state": c["state"], "seconds": c["wall_time_s"]}
                       for c in summary["components"]},
        "pipeline_seconds": summary["total_wall_time_s"],
        "test_accuracy": summary["metrics"].get("binary_accuracy"),
        "test_auc": summary["metrics"].get("auc"),
        "val_accuracy_per_epoch": [round(v, 4) for v in history["val_accuracy"]],
        "val_auc_per_epoch": [round(v, 4) for v in history["val_auc"]],
        "val_accuracy_network": round(history["val_accuracy"][restored], 4),
        "started_from": history.get("started_from"),
        "carried_over": history.get("warm_start"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="imdb")
    parser.add_argument("--output-dir", type=Path, required=True, help="a fresh directory")
    parser.add_argument("--data-dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides of every run")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides of the third run (pretraining on, cached)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        raise SystemExit(f"{args.output_dir} is not empty: the first run must pretrain, not reuse a cache")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logs = args.output_dir / "bench-logs"
    logs.mkdir()
    results = {"dataset": args.dataset, "with_pretrained_reader": run(args, ["pretraining.enabled=true"],
                                                                     logs / "with.log")}
    root = args.output_dir / "pipelines" / f"sentiment-{args.dataset}"
    report = sorted(root.glob("ReaderPretrainer/model/*/pretraining.json"))[-1]
    results["pretraining"] = json.loads(report.read_text())
    first = results["with_pretrained_reader"]
    first["pipeline_seconds_pretraining_cached"] = round(
        first["pipeline_seconds"] - first["components"]["ReaderPretrainer"]["seconds"], 1)
    results["without"] = run(args, [], logs / "without.log")
    if args.variant:
        results["variant"] = run(args, ["pretraining.enabled=true", *args.variant], logs / "variant.log")
    output = args.output or RESULTS / f"pretraining_{args.dataset}.json"
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
