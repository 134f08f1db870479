"""Distillation on SST-2: a 3-layer student of the 6-layer MiniLM classifier, against the same
3-layer model fine-tuned on the labels alone, in one run.

Trains (or takes, `--teacher`) the teacher on the first `--train_examples` SST-2 sentences (1
epoch, as benchmarks/inference.py), then trains three students of `--layers` layers cut from it,
each for `--epochs` on the same labelled sentences:
- `labels_only`: the cut model fine-tuned on the hard labels (alpha 0, no teacher signal), the
  peer: what the smaller model reaches without distillation;
- `distilled_every` / `distilled_first`: `bridgetune distill` with the teacher's soft labels
  (T 2, alpha 0.5) on the labelled sentences plus `--unlabelled` more SST-2 training sentences
  given as text (labelled by the teacher), keeping every k-th / the first layers.
Every model is then timed on the dev sentences in one process: texts/s in length-sorted
batches of 32 (PyTorch fp32, the Predictor's path).

Prints a table and ONE JSON object last: {"benchmark": "distill", "teacher": {metric,
texts_per_second_b32}, "students": {name: {metric, texts_per_second_b32, retained, speedup,
train_seconds}}, "retained": best student's dev accuracy / the teacher's, "speedup": its texts/s
/ the teacher's}.

    python benchmarks/distill.py --quick      # 1,000 labelled + 1,000 unlabelled, 300 dev
    python benchmarks/distill.py --output distill.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sst2_teacher import CONFIG, add_arguments, setup  # noqa: E402
from sst2_teacher import teacher as sst2_teacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, "/tmp/bridgetune-distill-benchmark")
    parser.add_argument("--unlabelled", type=int, help="more sentences as text (20,000; 1,000)")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()
    runs = setup(args, "distill")
    if runs is None:
        return
    import torch
    from inference import measure

    import bridgetune
    from bridgetune.inference.predictor import Predictor
    from bridgetune.recipes.export import read_parity_examples

    out, labelled, dev_limit, common = runs.out, runs.labelled, runs.dev_limit, runs.common
    unlabelled = args.unlabelled or (1000 if args.quick else 20000)
    config, train_file, dev_file = CONFIG, runs.train_file, runs.dev_file
    teacher = sst2_teacher(args, runs)
    # the sentences after the labelled ones, as plain text: the teacher labels them
    lines = train_file.read_text(encoding="utf-8").splitlines()[1 + labelled :]
    text_file = out / "unlabelled.txt"
    text_file.write_text(
        "\n".join(line.split("\t", 1)[1] for line in lines[:unlabelled]) + "\n", encoding="utf-8"
    )
    base = [
        *common,
        f"train.epochs={args.epochs}",
        f"distill.teacher={teacher}",
        f"distill.student_layers={args.layers}",
        f"distill.temperature={args.temperature}",
    ]
    students = {
        "labels_only": ["distill.alpha=0.0"],
        "distilled_every": [
            f"distill.alpha={args.alpha}",
            f"distill.unlabelled={text_file}",
            "distill.layer_selection=every",
        ],  # fmt: skip
        "distilled_first": [
            f"distill.alpha={args.alpha}",
            f"distill.unlabelled={text_file}",
            "distill.layer_selection=first",
        ],  # fmt: skip
    }
    directories, seconds = {"teacher": teacher}, {}
    for name, overrides in students.items():
        started = time.perf_counter()
        directories[name] = bridgetune.distill(
            config, [*base, *overrides, f"name={name}"], overwrite=True
        ).model_dir
        seconds[name] = round(time.perf_counter() - started, 1)
    # read as the students read it (their config's column map; a --teacher may have had another)
    examples = read_parity_examples(directories["labels_only"], dev_file, True, dev_limit)
    rows = {}
    for name, directory in directories.items():
        predictor = Predictor.load(directory, device="cpu")
        features = predictor.task.encode(examples, predictor.tokenizer, predictor.max_length)
        row = measure(predictor.model, predictor.task, features, examples,
                      predictor.tokenizer.pad_token_id, "fp32", args.repeats)  # fmt: skip
        row["layers"] = predictor.model.config.num_hidden_layers
        rows[name] = row
        print(name, row, flush=True)
    teacher_row = rows.pop("teacher")
    for name, row in rows.items():
        row["retained"] = round(row["metric"] / teacher_row["metric"], 4)
        row["speedup"] = round(row["texts_per_second_b32"] / teacher_row["texts_per_second_b32"], 2)
        row["train_seconds"] = seconds[name]
    print(f"\n{'model':18s}{'layers':>7s}{'accuracy':>10s}{'retained':>10s}{'texts/s':>9s}"
          f"{'speedup':>9s}")  # fmt: skip
    print(f"{'teacher':18s}{teacher_row['layers']:7d}{teacher_row['metric']:10.4f}{1:10.3f}"
          f"{teacher_row['texts_per_second_b32']:9.1f}{1:9.2f}")  # fmt: skip
    for name, row in rows.items():
        print(f"{name:18s}{row['layers']:7d}{row['metric']:10.4f}{row['retained']:10.3f}"
              f"{row['texts_per_second_b32']:9.1f}{row['speedup']:9.2f}")  # fmt: skip
    best = max((n for n in rows if n != "labels_only"), key=lambda n: rows[n]["metric"])
    summary = {
        "benchmark": "distill",
        "dataset": "sst2",
        "quick": args.quick,
        "labelled_examples": labelled,
        "unlabelled_examples": unlabelled,
        "dev_examples": len(examples),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "teacher": teacher_row,
        "students": rows,
        "best": best,
        "retained": rows[best]["retained"],
        "speedup": rows[best]["speedup"],
        "gain_over_labels_only": round(rows[best]["metric"] - rows["labels_only"]["metric"], 4),
    }
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
