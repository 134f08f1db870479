"""THE training loop: one process or many (accelerate/DDP), any task, resumable.

Design notes (see DESIGN.md "Performance design"): batches are length-bucketed and padded to a
multiple of 8; the loss stays on the device and is read every `log_every` steps only; bf16
autocast on GPUs that support it; fused AdamW; on the CPU, dropout drawn by its dropped positions
(methods/dropout.py). Ctrl-C is turned into a flag that the loop checks at optimizer-step
boundaries, so the checkpoint it writes resumes to the exact same run.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridgetune.config import DistillConfig, TrainConfig
from bridgetune.data.batching import feature_length, shard, train_batches
from bridgetune.data.schema import Example
from bridgetune.inference.predictor import infer
from bridgetune.lifecycle.reports import headline
from bridgetune.methods.dropout import sparse_dropouts
from bridgetune.runtime.hardware import native_bf16
from bridgetune.runtime.processes import shared
from bridgetune.tasks import Task
from bridgetune.training import compiled, sharding
from bridgetune.training.adversarial import EmbeddingAttack
from bridgetune.training.checkpoint import (
    LoopState,
    filled,
    has_checkpoint,
    load_best,
    load_checkpoint,
    rng_state,
    save_best,
    save_checkpoint,
)
from bridgetune.training.distill import SoftTargets
from bridgetune.training.objective import Objective
from bridgetune.training.optim import build_optimizer, build_scheduler
from bridgetune.training.progress import TrainProgress


class TrainingInterrupted(RuntimeError):
    """Training stopped by Ctrl-C: after saving a checkpoint (resume with --resume), or, for
    a loop that cannot resume (`checkpoint` None), with nothing saved."""

    def __init__(self, checkpoint: Path | None, step: int) -> None:
        if checkpoint is None:
            message = f"interrupted at step {step}; nothing was saved: run the command again."
        else:
            message = (
                f"interrupted at step {step}; checkpoint saved in {checkpoint}. "
                "Run the same command with --resume to continue."
            )
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step


@dataclass
class EvalData:
    features: list[dict]
    examples: list[Example]


@dataclass
class FitResult:
    state: LoopState
    metric_name: str
    best_metric: float | None
    stopped_early: bool


def resolve_precision(cfg: TrainConfig, generative: bool = False) -> tuple[bool, str]:
    """(train on CPU?, fp32|bf16|fp16) from train.device and train.precision.

    `auto` is bf16 autocast where the processor computes bf16 natively (a GPU that supports
    it; a CPU with AMX-BF16 or AVX512-BF16, bridgetune.runtime.hardware), else fp32. The weights
    and the optimizer's state stay fp32 either way: autocast computes in bf16, AdamW updates
    fp32 master weights. Except `generative` tasks on a CPU: there `auto` stays fp32 (SmolLM2
    LoRA SFT on an AMX CPU, 3 seeds: dev loss 0.378 in bf16 against 0.332 in fp32, TRL the same
    gap, for 1.15x the speed; docs/benchmarks.md); `bf16` can still be asked for."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA GPU is visible; use train.device=auto")
    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    precision = cfg.precision
    if precision == "auto":
        device = torch.device("cpu" if on_cpu else "cuda")
        precision = "bf16" if native_bf16(device) and not (on_cpu and generative) else "fp32"
    if precision == "fp16" and on_cpu:
        raise ValueError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    return on_cpu, precision


def make_accelerator(on_cpu: bool, precision: str) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = "no" if precision == "fp32" else precision
    if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        # one process may train runs of different precisions (tests, benchmarks, a notebook):
        # accelerate keeps the first run's in a process-wide state and refuses another. The
        # processes' state (PartialState: ranks, process group) stays; the Trainer does the same.
        AcceleratorState._reset_state()
    with sharding.accelerate_fsdp_hidden():  # the loop shards (training.sharding)
        return Accelerator(cpu=on_cpu, mixed_precision=mixed)


@contextlib.contextmanager
def interrupt_flag() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag (checked at step boundaries); a second one aborts."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: Any) -> None:
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Loop:
    """Holds the pieces of one fit; `run` is the loop itself."""

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        train_features: list[dict],
        dev: EvalData,
        cfg: TrainConfig,
        pad_id: int,
        checkpoint_dir: Path,
        bucket_by_length: bool = True,
        head: list[str] | None = None,
        weights: torch.Tensor | None = None,
        resumable: bool = True,
        extra_metrics: Callable[[torch.nn.Module], dict] | None = None,
        distill: tuple[DistillConfig, SoftTargets] | None = None,
    ) -> None:
        """`head`: the task head's module names (train.head_lr); `weights`: class weights (the
        loss is the task's: `Task.loss`). `resumable=False` (stages of a command without
        --resume, e.g. few-shot): no checkpoints, and `checkpoint_dir` (which then only holds
        the best weights while the loop runs) is removed at the end. `extra_metrics(model)`:
        more dev metrics at every evaluation (generated samples' ROUGE), merged into the task's.
        `distill`: its settings and the teacher's soft targets, carried by batches as "teacher"."""
        self.extra_metrics = extra_metrics
        self.resumable = resumable
        self.cfg, self.task, self.dev, self.pad_id = cfg, task, dev, pad_id
        self.features = train_features
        self.checkpoint_dir = Path(checkpoint_dir)
        on_cpu, self.precision = resolve_precision(cfg, task.generative)
        self.accelerator = make_accelerator(on_cpu, self.precision)
        # equal lengths make the batches plain shuffled ones (no length buckets)
        if hasattr(train_features, "lengths"):  # windows of a corpus on disk: from its index
            self.lengths = (
                train_features.lengths() if bucket_by_length else [0] * len(train_features)
            )
        else:
            self.lengths = [feature_length(f) if bucket_by_length else 0 for f in train_features]
        batches = self.epoch_batches(0)
        if not batches:
            raise ValueError(
                "no training batches: the training split is smaller than the number of processes"
            )
        self.steps_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
        self.total_steps = max(1, math.ceil(self.steps_per_epoch * cfg.epochs))
        self.metric_name = cfg.metric or task.default_metric
        plan = sharding.requested(cfg)
        if plan is not None:
            model = sharding.shard(model, plan, self.accelerator.device, self.precision)
        self.sharded = plan is not None
        if on_cpu and cfg.compile != "on":
            # the same dropout, drawn by its dropped positions (methods/dropout.py); inductor
            # fuses plain dropout itself, and the sparse one would break its graphs
            sparse_dropouts(model)
        self.model = model
        self.forward: Any = model  # what trains: the model, or its compiled wrapper (run)
        # causal LMs: the output layer runs on scored tokens only
        settings, self.targets = distill or (None, None)
        self.objective = Objective(task, cfg, weights, task.output_layer(model), settings)
        # a task may batch training examples its own way (causal_lm packing); evaluation
        # always uses `collate`, one row per example
        self.collate_train = task.collate_train
        self.attack = None
        if cfg.adversarial != "none":
            self.attack = EmbeddingAttack(model.get_input_embeddings(), cfg)
        self.widths = self.check_compile()
        self.optimizer = build_optimizer(model, cfg, self.accelerator.device, head)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.state = LoopState()
        self.stopped_early = False

    def check_compile(self) -> list[int]:
        """The batch widths of a compiled run (`train.compile`; none when off), after refusing
        what it cannot compile: each refusal says what to change."""
        how = self.cfg.compile
        if how == "off":
            return []
        reasons = {
            "a generative task (its batches are packed or shaped by the task)": (
                self.task.generative
            ),
            "train.batch_tokens (rows per batch would vary: one compiled shape each)": (
                self.cfg.batch_tokens is not None
            ),
            "several processes or FSDP": self.accelerator.num_processes > 1 or self.sharded,
            "train.adversarial (it perturbs the embeddings between passes)": (
                self.attack is not None
            ),
        }
        refused = [reason for reason, applies in reasons.items() if applies]
        if refused:
            raise ValueError(
                f"train.compile={how} does not support {'; '.join(refused)}: set train.compile: off"
            )
        return compiled.widths(max(self.lengths, default=1))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        batches = train_batches(
            self.lengths, self.cfg.batch_size, self.cfg.batch_tokens, self.cfg.seed, epoch
        )
        return shard(batches, self.accelerator.process_index, self.accelerator.num_processes)

    def resume(self) -> None:
        if not has_checkpoint(self.checkpoint_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        self.state = load_checkpoint(
            self.checkpoint_dir, self.model, self.optimizer, self.scheduler
        )
        patience = self.cfg.patience
        self.stopped_early = bool(patience and self.state.bad_evals >= patience)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def run(self, on_step: Callable[[LoopState], None] | None = None) -> FitResult:
        if self.sharded:  # FSDP places, casts and synchronizes the model itself
            self.optimizer = self.accelerator.prepare(self.optimizer)
        else:
            self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.model.train()
        # the forward that trains: compiled (train.compile) or the module itself
        self.forward = self.model
        if self.widths:
            shapes = 2 * len(self.widths)  # full batches and an epoch's last, at every width
            self.forward = compiled.compiled(
                self.model, self.cfg.compile, self.accelerator.device, shapes
            )
        main = self.accelerator.is_main_process
        n_epochs = math.ceil(self.cfg.epochs)
        with interrupt_flag() as flag, TrainProgress(self.total_steps, enabled=main) as progress:
            progress.advance_to(self.state.global_step)
            while self.state.epoch < n_epochs and not self.finished:
                progress.describe(f"epoch {self.state.epoch + 1}/{n_epochs}")
                if self.run_epoch(progress, flag, on_step):
                    self.state.epoch += 1
                    self.state.batches_done = 0
                    if self.cfg.eval_steps is None:
                        self.evaluate(progress)
                self.save_checkpoint()
            evaluated = [h["step"] for h in self.state.history if "metric" in h]
            if not evaluated or evaluated[-1] != self.state.global_step:
                self.evaluate(progress)  # a run that ends between evaluations
        if self.state.best_metric is not None:
            load_best(self.checkpoint_dir, self.unwrapped)
        if not self.resumable:
            self.remove_best()
        return FitResult(self.state, self.metric_name, self.state.best_metric, self.stopped_early)

    @property
    def finished(self) -> bool:
        return self.stopped_early or self.state.global_step >= self.total_steps

    def run_epoch(
        self,
        progress: TrainProgress,
        flag: dict[str, bool],
        on_step: Callable[[LoopState], None] | None,
    ) -> bool:
        """Train on the rest of the current epoch; True when it was consumed to its end."""
        batches = self.epoch_batches(self.state.epoch)
        accum = self.cfg.grad_accum
        device = self.accelerator.device
        running = torch.zeros((), device=device)
        counted, seen, started = 0, 0, time.perf_counter()
        pin = device.type == "cuda"  # pinned host memory lets the copy overlap with compute
        for index in range(self.state.batches_done, len(batches)):
            batch = self.collate_train([self.features[i] for i in batches[index]], self.pad_id)
            if self.widths:
                batch = compiled.to_width(batch, self.widths, self.pad_id)
            if self.targets is not None:
                batch["teacher"] = self.targets.batch(batches[index], batch["input_ids"].shape[-1])
            batch = {
                k: (v.pin_memory() if pin else v).to(device, non_blocking=True)
                for k, v in batch.items()
            }
            update = (index + 1) % accum == 0 or index + 1 == len(batches)
            loss = self.forward_backward(batch, update)
            running += loss.detach()
            counted += 1
            seen += len(batches[index])
            if not update:
                continue
            self.optimizer_step()
            self.state.batches_done = index + 1
            progress.step(seen / (time.perf_counter() - started))
            if self.state.global_step % self.cfg.log_every == 0:
                self.log_loss(running, counted, progress)
                running.zero_()
                counted = 0
            if self.cfg.eval_steps and self.state.global_step % self.cfg.eval_steps == 0:
                self.evaluate(progress)
            if (
                self.cfg.checkpoint_steps
                and self.state.global_step % self.cfg.checkpoint_steps == 0
            ):
                self.save_checkpoint()
            if on_step:
                on_step(self.state)
            if self.interrupted(flag):
                if not self.resumable:
                    self.remove_best()
                    raise TrainingInterrupted(None, self.state.global_step)
                self.save_checkpoint()
                raise TrainingInterrupted(self.checkpoint_dir, self.state.global_step)
            if self.finished:
                break
        return self.state.batches_done == len(batches)

    def forward_backward(self, batch: dict[str, torch.Tensor], update: bool) -> torch.Tensor:
        """Loss and gradients of one batch (gradients synchronised across processes on update)."""
        accum = self.cfg.grad_accum

        def no_sync() -> contextlib.AbstractContextManager:
            if self.sharded:
                return sharding.no_gradient_sync(self.model)
            return self.accelerator.no_sync(self.model)

        with contextlib.nullcontext() if update else no_sync():
            if self.attack is not None:
                return self.attack.step(
                    lambda: self.objective(self.forward, batch),
                    lambda loss: self.accelerator.backward(loss / accum),
                    no_sync,
                )
            loss = self.objective(self.forward, batch)
            self.accelerator.backward(loss / accum)
            return loss

    def optimizer_step(self) -> None:
        if self.cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1

    def interrupted(self, flag: dict[str, bool]) -> bool:
        """The Ctrl-C flag; with several processes agreed on (at log steps) so all stop together."""
        if self.accelerator.num_processes == 1:
            return flag["set"]
        if self.state.global_step % self.cfg.log_every:
            return False
        raised = torch.tensor(float(flag["set"]), device=self.accelerator.device)
        return bool(self.accelerator.reduce(raised, reduction="sum").item() > 0)

    def log_loss(self, running: torch.Tensor, counted: int, progress: TrainProgress) -> None:
        loss = (running / max(counted, 1)).item()  # the one host sync every log_every steps
        lr = self.scheduler.get_last_lr()[0]
        self.state.history.append(
            {
                "step": self.state.global_step,
                "epoch": self.state.epoch,
                "loss": round(loss, 6),
                "lr": lr,
            }
        )
        progress.show_loss(loss)

    def predict(self, data: EvalData) -> list[dict]:
        """Predictions of the current weights, at the run's precision, in `data`'s order.

        With several processes each predicts every n-th example and all of them receive all
        predictions (so every process computes the same metrics and early-stopping decision);
        sharded by FSDP, every process runs every batch (their forwards gather weights together).
        """

        def predict_part(part: slice) -> list[dict]:
            return infer(
                self.unwrapped,
                self.task,
                data.features[part],
                data.examples[part],
                self.pad_id,
                self.accelerator.device,
                self.cfg.eval_batch_size,
                self.precision,
            )

        if self.sharded:
            return predict_part(slice(None))
        return shared(len(data.features), predict_part)

    def evaluate(self, progress: TrainProgress | None = None) -> dict:
        """Dev metrics now; tracks the best weights and early stopping (nothing without dev)."""
        if not self.dev.features:
            return {}
        predictions = self.task.calibrate(self.predict(self.dev), self.dev.examples)
        metrics = self.task.metrics(predictions, self.dev.examples)
        if self.extra_metrics is not None:
            metrics.update(self.extra_metrics(self.unwrapped))
        metrics = headline(metrics)
        if self.metric_name not in metrics:
            raise ValueError(
                f"train.metric={self.metric_name!r} is not a dev metric of task "
                f"{self.task.name}; choose one of: {', '.join(metrics)}"
            )
        value = metrics[self.metric_name]
        self.state.history.append(
            {
                "step": self.state.global_step,
                "epoch": self.state.epoch,
                "metric_name": self.metric_name,
                "metric": value,
                **metrics,
            }
        )
        if self.state.best_metric is None or self.improves(value, self.state.best_metric):
            self.state.best_metric, self.state.best_step, self.state.bad_evals = (
                value,
                self.state.global_step,
                0,
            )
            if self.accelerator.is_main_process or self.sharded:  # sharded: all gather
                save_best(self.checkpoint_dir, self.unwrapped)
        else:
            self.state.bad_evals += 1
            self.stopped_early = bool(
                self.cfg.patience and self.state.bad_evals >= self.cfg.patience
            )
        self.accelerator.wait_for_everyone()
        if progress:
            progress.note(
                f"step {self.state.global_step}: dev {self.metric_name}={value:.4f}"
                + (" (early stop)" if self.stopped_early else "")
            )
        return metrics

    def improves(self, value: float, best: float) -> bool:
        """Whether dev metric `value` beats `best` (the task says which way its metrics go)."""
        if self.metric_name in self.task.lower_is_better:
            return value < best
        return value > best

    def remove_best(self) -> None:
        """A loop that cannot resume keeps nothing in its checkpoint directory."""
        if self.accelerator.is_main_process:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def save_checkpoint(self) -> None:
        if not self.resumable:
            return
        if self.accelerator.is_main_process or self.sharded:  # sharded: all gather
            save_checkpoint(
                self.checkpoint_dir,
                self.unwrapped,
                self.optimizer,
                self.scheduler,
                self.state,
                rng_state(),
            )
        self.accelerator.wait_for_everyone()

    def unsharded(self, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
        """The trained model as an ordinary one, to save: the model itself, or, sharded by FSDP,
        a copy the first process builds with `build()` (the model as it was before training)
        and fills with the gathered weights (None on the other processes, which must call
        this too)."""
        if not self.sharded:
            return self.unwrapped
        tensors = sharding.saved_tensors(self.unwrapped)  # gathered by every process
        return filled(build(), tensors) if self.accelerator.is_main_process else None
