"""A new span and polarity's pretraining: the second span's run copies the first's, not learning it again.

Polarity is cut into spans (`python -m pipeline make-spans`), and the pipeline runs span after
span in one output directory, with the default config (the ReaderPretrainer on IMDB's
sentences, 2 epochs). A new span is new examples, so TFX's cache cannot serve the
ReaderPretrainer; the component then finds that the sentences left after dropping the new
span's held-out texts, its settings and its code are those of the earlier execution
(`reuse_key.txt`) and copies that result (docs/model.md).

Writes bench/results/pretraining_reuse_polarity.json: per span, the run's exit code and wall
time, the ReaderPretrainer's and the Trainer's wall times, whether the pretraining was learnt
or copied (and from where), the counts of texts, and the span's test accuracy and AUC.

    python bench/pretraining_reuse.py --work-dir /tmp/pretraining-reuse          # about 35 min on 2 cores
    python bench/pretraining_reuse.py --work-dir DIR --first-span 2   # span 1 already run and recorded
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_spans import cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = "sentiment-polarity"


def record(output_dir: Path, span: int, exit_code: int, seconds: float, summaries: Path) -> dict:
    """What one span's run did, from its run_summary.json and its ReaderPretrainer artifact."""
    summary = json.loads((output_dir / "pipelines" / PIPELINE / "run_summary.json").read_text())
    walls = {c["component"]: c for c in summary["components"]}
    pretrainer = walls.get("ReaderPretrainer", {})
    entry = {"span": span, "exit_code": exit_code, "command_seconds": round(seconds, 1),
             "pipeline_seconds": summary["total_wall_time_s"],
             "reader_pretrainer": {"state": pretrainer.get("state"), "wall_seconds": pretrainer.get("wall_time_s")},
             "trainer_seconds": walls.get("Trainer", {}).get("wall_time_s"),
             "test_accuracy": summary["metrics"].get("binary_accuracy"), "test_auc": summary["metrics"].get("auc"),
             "test_examples": summary["metrics"].get("example_count"), "blessed": summary["blessed"]}
    if pretrainer.get("state") == "COMPLETE":  # this run's artifact is the newest
        models = output_dir / "pipelines" / PIPELINE / "ReaderPretrainer" / "model"
        newest = max((p for p in models.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        report = json.loads((newest / "pretraining.json").read_text())
        entry["reader_pretrainer"].update(
            artifact=str(newest), reused_from=report.get("reused_from"), corpus=report["corpus"],
            seconds_of_the_learning=report["seconds"], val_accuracy=report.get("val_accuracy"))
    summaries.mkdir(parents=True, exist_ok=True)
    (summaries / f"span-{span}.json").write_text(json.dumps(entry, indent=2) + "\n")
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--spans", type=int, default=2)
    parser.add_argument("--first-span", type=int, default=1, help="spans before it are already run and recorded")
    parser.add_argument("--spans-dir", type=Path, help="default: WORK_DIR/spans")
    parser.add_argument("--output-dir", type=Path, help="the pipeline's; default: WORK_DIR/outputs")
    parser.add_argument("--data-dir", help="as `python -m pipeline run --data-dir`")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "pretraining_reuse_polarity.json"))
    args = parser.parse_args()
    spans_dir = args.spans_dir or args.work_dir / "spans"
    output_dir = args.output_dir or args.work_dir / "outputs"
    summaries, logs = args.work_dir / "summaries", args.work_dir / "logs"
    data = ["--data-dir", args.data_dir] if args.data_dir else []

    if not (spans_dir / f"span-{args.spans}").exists():
        if cli("make-spans", "--dataset", "polarity", "--spans", str(args.spans), "--out", str(spans_dir), *data,
               log=logs / "make-spans.log"):
            raise SystemExit(f"make-spans failed: see {logs / 'make-spans.log'}")
    for span in range(args.first_span, args.spans + 1):
        started = time.time()
        code = cli("run", "--dataset", "polarity", "--input", str(spans_dir), "--span", str(span),
                   "--output-dir", str(output_dir), *data, log=logs / f"span-{span}.log")
        entry = record(output_dir, span, code, time.time() - started, summaries)
        print(json.dumps(entry), flush=True)
        if code:
            raise SystemExit(f"span {span}: exit {code}; see {logs / f'span-{span}.log'}")

    runs = [json.loads((summaries / f"span-{span}.json").read_text()) for span in range(1, args.spans + 1)]
    result = {"what": __doc__.splitlines()[0], "spans_dir": str(spans_dir), "output_dir": str(output_dir),
              "command": "python -m pipeline run --dataset polarity --input SPANS_DIR --span N --output-dir OUTPUT_DIR",
              "runs": runs}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
