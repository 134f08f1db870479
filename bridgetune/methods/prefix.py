"""Prefix tuning (Li & Liang, 2021; P-Tuning v2 for encoders): trained key and value vectors
in front of every layer's self-attention, the body frozen, the task head trained.

Our own implementation, not peft's: peft hands the prefixes to the model as `past_key_values`,
which transformers' encoders stopped taking (BERT in transformers 5.24 renamed it and builds its
attention mask without it). Here the prefixes enter through transformers' public extension point
for attention, `AttentionInterface`: the model runs the registered attention function
`bridgetune_prefix`, which puts each layer's prefix in front of the keys and values, widens the
padding mask so every token sees the prefix, and hands over to the standard SDPA kernel. A layer's
attention module finds its prefix through a small slot set on it, so a model used without the
wrapper attends as before.

Saved as the prefix plus the head (`prefix_model.safetensors`) and put back on the base model by
`Predictor.load`; a prefix cannot be merged into the weights.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from bridgetune.heads import HEADS
from bridgetune.methods.base import Params, is_head, method, transformer_layers

ATTENTION = "bridgetune_prefix"
WEIGHTS_FILE = "prefix_model.safetensors"
_SLOT = "bridgetune_prefix_slot"


class _LayerSlot:
    """Where one attention module finds the key/value prefix of its layer (a weak reference to
    the wrapper, so the base model does not keep it alive)."""

    def __init__(self, owner: PrefixModel, layer: int) -> None:
        self.owner = weakref.ref(owner)
        self.layer = layer

    def extend(
        self, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        owner = self.owner()
        if owner is None:
            return key, value, mask
        batch, heads, _, head_dim = key.shape
        prefix = owner.prefix[self.layer].to(key.dtype)  # (2, tokens, heads * head_dim)
        tokens = prefix.shape[1]
        if prefix.shape[-1] != heads * head_dim:
            raise RuntimeError(
                f"prefix tuning: layer {self.layer} attends with {heads} heads of {head_dim}, "
                f"the prefix was built for width {prefix.shape[-1]}"
            )
        keys, values = (
            part.view(tokens, heads, head_dim).transpose(0, 1).expand(batch, -1, -1, -1)
            for part in prefix
        )
        key, value = torch.cat([keys, key], dim=2), torch.cat([values, value], dim=2)
        if mask is not None:  # the prefix is visible to every query
            seen = True if mask.dtype == torch.bool else 0.0
            mask = torch.cat([mask.new_full((*mask.shape[:-1], tokens), seen), mask], dim=-1)
        return key, value, mask


def _prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    slot = getattr(module, _SLOT, None)
    if slot is not None:
        key, value, attention_mask = slot.extend(key, value, attention_mask)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _prefix_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the padding mask SDPA takes


def self_attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every transformer block, bottom up.

    Raises:
        ValueError: the model's attention does not go through transformers' AttentionInterface,
            or it is causal (prefix tuning here is for encoders).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    can_set = getattr(model, "_can_set_attn_implementation", None)
    layers = transformer_layers(model)
    found = []
    for block in layers or []:
        attention = next((m for m in block.modules() if hasattr(m, "is_causal")), None)
        if attention is None:
            break
        found.append(attention)
    if not found or len(found) != len(layers or []) or can_set is None or not can_set():
        raise ValueError(
            f"prefix tuning needs a model whose attention goes through transformers' "
            f"AttentionInterface; this {model_type} model's does not. Use method.name=lora "
            "(any model with linear layers) or method.name=prompt"
        )
    if any(module.is_causal for module in found):
        raise ValueError(
            f"prefix tuning is implemented for encoders; this {model_type} model's attention is "
            "causal. Use method.name=lora"
        )
    return found


@HEADS.register("prefix")
class PrefixModel(torch.nn.Module):
    """A transformers classifier with a trained key/value prefix in every layer; the interface
    of `AdapterModel` (`.logits`, `.loss`, `save`, `load`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        num_virtual_tokens: int,
        problem: str,
        base_model: str,
        head: list[str],
    ) -> None:
        super().__init__()
        attention = self_attention_modules(model)
        config = model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.model = model
        # N(0, 1) like peft's prefix encoder (an nn.Embedding without projection), so results
        # stay comparable with the earlier peft-based runs in docs/methods.md.
        self.prefix = torch.nn.Parameter(
            torch.randn(len(attention), 2, num_virtual_tokens, heads * head_dim)
        )
        self.method, self.problem, self.base_model = "prefix", problem, base_model
        self.head, self.export = list(head), "adapter"
        _register_attention()
        model.set_attn_implementation(ATTENTION)
        for layer, module in enumerate(attention):
            object.__setattr__(module, _SLOT, _LayerSlot(self, layer))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(is_head(name, self.head))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        from bridgetune.heads import HeadOutput, output_logits
        from bridgetune.methods.peft import body_inputs

        logits = output_logits(self.model(**body_inputs(input_ids, attention_mask, token_type_ids)))
        return HeadOutput(logits)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def save(self, directory: Path) -> dict[str, Any]:
        """The prefix and the head's weights, and what `load` needs to rebuild them."""
        from safetensors.torch import save_file

        tensors = {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in self.state_dict().items()
            if name == "prefix" or is_head(name.removeprefix("model."), self.head)
        }
        save_file(tensors, str(Path(directory) / WEIGHTS_FILE))
        return {
            "type": "prefix",
            "method": self.method,
            "problem": self.problem,
            "base_model": self.base_model,
            "num_virtual_tokens": int(self.prefix.shape[2]),
            "head_modules": self.head,
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> PrefixModel:
        """The prefix and head saved in `directory` on the base model built with `labels`
        (HeadModel).

        Raises:
            ValueError: the saved weights do not fit the base model (another base model).
        """
        from safetensors.torch import load_file

        from bridgetune.heads import load_base_model

        model = cls(
            load_base_model(head, labels),
            head["num_virtual_tokens"],
            head["problem"],
            head["base_model"],
            head["head_modules"],
        )
        tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
        try:
            result = model.load_state_dict(tensors, strict=False)
        except RuntimeError as error:  # shape mismatch
            raise ValueError(
                f"{directory}: the saved prefix does not fit its base model: {error}"
            ) from error
        if result.unexpected_keys:
            raise ValueError(
                f"{directory}/{WEIGHTS_FILE}: weights the base model {head['base_model']!r} does "
                f"not have: {sorted(result.unexpected_keys)[:5]}"
            )
        return model


class PrefixParams(Params):
    num_virtual_tokens: int = Field(20, gt=0, description="Trained key/value vectors per layer.")


@method("prefix", PrefixParams)
def prefix(
    model: torch.nn.Module, cfg: PrefixParams, head: list[str], problem: str
) -> torch.nn.Module:
    """Prefix tuning: `cfg.num_virtual_tokens` key/value vectors per layer, and the head."""
    return PrefixModel(model, cfg.num_virtual_tokens, problem, model.config.name_or_path, head)
