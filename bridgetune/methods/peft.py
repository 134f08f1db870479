"""Parameter-efficient methods through the `peft` library: LoRA, IA3, prompt tuning and
P-tuning (prefix tuning is ours: methods/prefix.py). The task head is always in
`modules_to_save`, so it trains and is saved with the adapter.

`AdapterModel` wraps the peft model so the loop, `infer` and the service see the same interface
as for any other model (`.logits`, `.loss`), including token tasks under prompt methods, whose
logits peft returns with the virtual tokens in front. Saving writes either the adapter merged into
plain transformers weights (LoRA, IA3) or the adapter and head (`adapter_config.json`,
`adapter_model.safetensors`) that `Predictor.load` puts back on the base model.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from bridgetune.heads import HEADS, output_logits
from bridgetune.methods.base import Params, method

MERGEABLE = ("lora", "ia3")
PROMPT_METHODS = ("prompt", "ptuning")
# models whose linear layers are transformers' Conv1D (weights stored transposed)
CONV1D_MODELS = ("gpt2", "openai-gpt", "decision_transformer")


class _Export(Params):
    export: Literal["merged", "adapter"] = Field(
        "merged",
        description="Save the adapter merged into plain transformers weights, or the adapter "
        "(plus the head) next to the base model name.",
    )


class LoraParams(_Export):
    r: int = Field(8, gt=0, description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, description="Scaling numerator (update x alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names (or name suffixes) to adapt; unset: every linear layer of "
        "the body.",
    )


class IA3Params(_Export):
    target_modules: list[str] | None = Field(
        None, description="Module names (or suffixes) to scale; unset: peft's per architecture."
    )


class PromptParams(Params):
    num_virtual_tokens: int = Field(20, gt=0, description="Trained virtual tokens.")


PARAMS: dict[str, type[Params]] = {
    "lora": LoraParams,
    "ia3": IA3Params,
    "prompt": PromptParams,
    "ptuning": PromptParams,
}


def peft_config(
    name: str,
    cfg: Any,
    head: list[str],
    problem: str,
    model_type: str = "",
    model: torch.nn.Module | None = None,
) -> Any:
    """The peft config of method `name` with options `cfg` for a model whose head learns
    `problem` (classifier, tagger, span model)."""
    import peft

    # span (question answering): no task type, so the plain PeftModel passes every input on;
    # peft 0.21's PeftModelForQuestionAnswering drops token_type_ids, and the merged model
    # (which gets them) then answers differently from the trained one
    task_types = {
        "token": peft.TaskType.TOKEN_CLS,
        "span": None,
        "lm": peft.TaskType.CAUSAL_LM,
        "seq2seq": peft.TaskType.SEQ_2_SEQ_LM,
    }
    task_type = task_types.get(problem, peft.TaskType.SEQ_CLS)
    common = {"task_type": task_type}
    if name == "lora":
        # default: every linear layer of the body (peft's "all-linear"; the head is saved whole).
        # Only query/value (the LoRA paper's and peft's per-architecture default) was 1.95 points
        # of SST-2 accuracy behind it at the same cost (docs/methods.md).
        return peft.LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules or body_linear_layers(model, head),
            modules_to_save=head,
            fan_in_fan_out=model_type in CONV1D_MODELS,
            **common,
        )
    if name == "ia3":
        feedforward = None if cfg.target_modules is None else []
        return peft.IA3Config(
            target_modules=cfg.target_modules,
            feedforward_modules=feedforward,
            modules_to_save=head,
            **common,
        )
    virtual = {"num_virtual_tokens": cfg.num_virtual_tokens, "modules_to_save": head, **common}
    if name == "prompt":
        return peft.PromptTuningConfig(**virtual)
    return peft.PromptEncoderConfig(**virtual)


def body_linear_layers(model: torch.nn.Module | None, head: list[str]) -> str | list[str]:
    """LoRA's default targets: every linear layer of the body. peft's "all-linear" finds them
    in a transformers model; a model of ours around one (the relation classifier) gets their
    full names, its head left out (the head is trained and saved whole)."""
    from transformers import PreTrainedModel

    if model is None or isinstance(model, PreTrainedModel):
        return "all-linear"
    from bridgetune.methods.base import is_head

    return sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not is_head(name + ".x", head)
    )


def body_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | None]:
    """The keyword arguments of a wrapped transformers model (token types and positions only
    when given: packed causal-LM batches bring positions and no attention mask)."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    return inputs


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 calls `is_gradient_checkpointing`, which transformers 5.24 deprecated: a
    FutureWarning for every adapter built or loaded that users can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        yield


@HEADS.register("adapter")
class AdapterModel(torch.nn.Module):
    """A peft model with the interface of a transformers classifier; see the module docstring."""

    def __init__(
        self, peft_model: torch.nn.Module, method: str, problem: str, base_model: str, export: str
    ) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.method, self.problem, self.base_model = method, problem, base_model
        self.export = export if method in MERGEABLE else "adapter"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **decoder: torch.Tensor,
    ) -> Any:
        """`decoder`: an encoder-decoder's decoder_input_ids and decoder_attention_mask."""
        from bridgetune.heads import HeadOutput

        inputs = {**body_inputs(input_ids, attention_mask, token_type_ids, position_ids), **decoder}
        logits = output_logits(self.peft_model(**inputs))
        if not decoder and logits.dim() == 3 and logits.shape[1] > input_ids.shape[1]:
            # per-token logits (tagging, spans) longer than the input: prompt methods' virtual
            # tokens come first; drop their rows (a decoder's logits follow its own length)
            logits = logits[:, -input_ids.shape[1] :]
        return HeadOutput(logits)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.peft_model.get_input_embeddings()

    def get_output_embeddings(self) -> torch.nn.Module | None:
        return self.peft_model.get_output_embeddings()

    def merged(self) -> torch.nn.Module:
        """A plain transformers model with the adapter folded into its weights (a copy)."""
        return copy.deepcopy(self.peft_model).merge_and_unload()

    def save(self, directory: Path) -> dict[str, Any] | None:
        """Merged transformers weights (no head entry; a head model of ours, such as the
        relation classifier, saves itself with its own entry), or the adapter and its
        description."""
        if self.export == "merged":
            merged = self.merged()
            if not hasattr(merged, "save_pretrained"):  # a HeadModel around the body
                return merged.save(directory)
            merged.save_pretrained(directory)
            return None
        self.peft_model.save_pretrained(directory)
        base = self.peft_model.get_base_model()
        if getattr(base, "can_generate", lambda: False)():  # the run's decoding options
            base.generation_config.save_pretrained(directory)
        return {
            "type": "adapter",
            "method": self.method,
            "problem": self.problem,
            "base_model": self.base_model,
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> AdapterModel:
        """The adapter saved in `directory` on its base model built with `labels` (HeadModel)."""
        from peft import PeftModel

        from bridgetune.heads import load_base_model

        with quiet_peft():
            peft_model = PeftModel.from_pretrained(load_base_model(head, labels), str(directory))
        if (Path(directory) / "generation_config.json").is_file():
            from transformers import GenerationConfig

            config = GenerationConfig.from_pretrained(directory)
            peft_model.get_base_model().generation_config = config
        return cls(peft_model, head["method"], head["problem"], head["base_model"], "adapter")


def _register(name: str) -> None:
    @method(name, PARAMS[name])
    def apply(model: torch.nn.Module, cfg: Any, head: list[str], problem: str) -> torch.nn.Module:
        from peft import get_peft_model

        model_type = getattr(model.config, "model_type", "")
        config = peft_config(name, cfg, head, problem, model_type, model)
        with quiet_peft():
            peft_model = get_peft_model(model, config)
        export = getattr(cfg, "export", "adapter")
        return AdapterModel(peft_model, name, problem, model.config.name_or_path, export)


for _name in PARAMS:
    _register(_name)
