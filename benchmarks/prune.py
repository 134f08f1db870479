"""Whole-layer pruning of the SST-2 classifier: layers removed by importance on dev data, each cut
measured before and after a short recovery distillation, against the teacher, in one run.

The teacher (6-layer MiniLM, trained on the first `--train_examples` SST-2 sentences for 1 epoch
as benchmarks/inference.py does, or `--teacher DIR`) loses one layer at a time: the layer whose
removal costs the least dev accuracy (`bridgetune.models.layers.greedy_layers`, scored on the
first 500 dev sentences, no training in between: what `distill.layer_selection: importance`
does). Every cut from 5 layers down to 1 is then measured as it is ("pruned") and after
`bridgetune distill` with `distill.student_layers` = those layers for `--epochs` on the labelled
sentences ("recovered"): dev accuracy over all dev sentences and PyTorch fp32 texts/s in
length-sorted batches of 32.

Prints a table, draws the trade-off curve (`--plot`, default OUTPUT_DIR/prune.png: layers
removed against dev accuracy before and after recovery, and against speed) and ONE JSON object
last: {"benchmark": "prune", "teacher": {...}, "cuts": [{layers, removed, pruned_metric,
recovered_metric, texts_per_second_b32, speedup}, ...]}.

    python benchmarks/prune.py --quick             # 1,000 sentences, 300 dev, 0.5 epoch
    python benchmarks/prune.py --plot docs/prune.png --output prune.json
"""

from __future__ import annotations

import argparse
import copy
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


def plot(teacher: dict, cuts: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    removed = [0] + [c["removed"] for c in cuts]
    figure, accuracy = plt.subplots(figsize=(6.5, 4))
    accuracy.plot(removed, [teacher["metric"]] + [c["pruned_metric"] for c in cuts], "o--",
                  color="tab:red", label="pruned, no training")  # fmt: skip
    accuracy.plot(removed, [teacher["metric"]] + [c["recovered_metric"] for c in cuts], "o-",
                  color="tab:blue", label="pruned + recovery distillation")  # fmt: skip
    accuracy.set_xlabel("transformer layers removed (of 6)")
    accuracy.set_ylabel("SST-2 dev accuracy")
    speed = accuracy.twinx()
    speeds = [teacher["texts_per_second_b32"]] + [c["texts_per_second_b32"] for c in cuts]
    speed.plot(removed, speeds, "s:", color="tab:gray", label="texts/s (batch 32, fp32)")
    speed.set_ylabel("texts/s")
    lines = accuracy.get_legend_handles_labels()[0] + speed.get_legend_handles_labels()[0]
    accuracy.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize=8)
    accuracy.set_title("Whole-layer pruning by importance (MiniLM, SST-2)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, "/tmp/bridgetune-prune-benchmark")
    parser.add_argument("--epochs", type=float, help="recovery epochs (1; quick 0.5)")
    parser.add_argument("--plot", type=Path, help="the curve's PNG (default: in output_dir)")
    args = parser.parse_args()
    runs = setup(args, "prune")
    if runs is None:
        return
    import torch
    from inference import measure

    import bridgetune
    from bridgetune.data.io import read_file
    from bridgetune.inference.predictor import Predictor, infer
    from bridgetune.models.layers import greedy_layers, keep_layers, layer_stack, with_layers
    from bridgetune.recipes.check import as_config
    from bridgetune.tasks import reader_of

    out, labelled, dev_limit, common = runs.out, runs.labelled, runs.dev_limit, runs.common
    epochs = args.epochs or (0.5 if args.quick else 1.0)
    config, dev_file = CONFIG, runs.dev_file
    teacher_dir = sst2_teacher(args, runs)
    teacher = Predictor.load(teacher_dir, device="cpu")
    task, pad_id = teacher.task, teacher.tokenizer.pad_token_id
    # read as a run of sst2.yaml reads it (its column map), whatever the teacher was trained on
    data = as_config(config, common).data
    examples = read_file(dev_file, data, reader_of("classification", {}))[:dev_limit]
    features = task.encode(examples, teacher.tokenizer, teacher.max_length)
    metric = task.default_metric

    def accuracy(model, subset=slice(None)) -> float:
        chosen = features[subset]
        predictions = infer(model, task, chosen, examples[subset], pad_id, torch.device("cpu"))
        return float(task.metrics(predictions, examples[subset])[metric])

    def score(layers: list[int]) -> float:  # the importance of a cut: the first 500 dev
        with with_layers(teacher.model, layers):
            return accuracy(teacher.model, slice(0, 500))

    total = len(layer_stack(teacher.model)[1])
    started = time.perf_counter()
    _, path = greedy_layers(total, 1, score)
    search_seconds = round(time.perf_counter() - started, 1)
    base = measure(teacher.model, task, features, examples, pad_id, "fp32", args.repeats)
    print("teacher", base, flush=True)
    cuts = []
    for step in path:
        layers = step["layers"]
        pruned = copy.deepcopy(teacher.model)
        keep_layers(pruned, layers)
        pruned_metric = accuracy(pruned)
        speed = measure(pruned, task, features, examples, pad_id, "fp32", args.repeats)
        started = time.perf_counter()
        recovered = bridgetune.distill(config, [*common, f"train.epochs={epochs}",
                                       f"distill.teacher={teacher_dir}",
                                       f"distill.student_layers={json.dumps(layers)}",
                                       f"name=pruned-{len(layers)}"], overwrite=True)  # fmt: skip
        recovered_model = Predictor.load(recovered.model_dir, device="cpu").model
        cut = {
            "layers": layers,
            "removed": total - len(layers),
            "pruned_metric": round(pruned_metric, 4),
            "recovered_metric": round(accuracy(recovered_model), 4),
            "texts_per_second_b32": speed["texts_per_second_b32"],
            "speedup": round(speed["texts_per_second_b32"] / base["texts_per_second_b32"], 2),
            "recovery_seconds": round(time.perf_counter() - started, 1),
        }
        cuts.append(cut)
        print(cut, flush=True)
    print(f"\n{'layers kept':24s}{'removed':>8s}{'pruned':>9s}{'recovered':>11s}{'texts/s':>9s}"
          f"{'speed':>7s}")  # fmt: skip
    print(f"{'teacher (all 6)':24s}{0:8d}{base['metric']:9.4f}{base['metric']:11.4f}"
          f"{base['texts_per_second_b32']:9.1f}{1:7.2f}")  # fmt: skip
    for cut in cuts:
        print(f"{str(cut['layers']):24s}{cut['removed']:8d}{cut['pruned_metric']:9.4f}"
              f"{cut['recovered_metric']:11.4f}{cut['texts_per_second_b32']:9.1f}"
              f"{cut['speedup']:7.2f}")  # fmt: skip
    figure = args.plot or out / "prune.png"
    plot(base, cuts, figure)
    summary = {
        "benchmark": "prune",
        "dataset": "sst2",
        "quick": args.quick,
        "labelled_examples": labelled,
        "recovery_epochs": epochs,
        "dev_examples": len(examples),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "importance_search_seconds": search_seconds,
        "teacher": {
            "metric": base["metric"],
            "texts_per_second_b32": base["texts_per_second_b32"],
            "layers": total,
        },  # fmt: skip
        "cuts": cuts,
        "plot": str(figure),
    }
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
