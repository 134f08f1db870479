"""Generating text with a fine-tuned generative model, and scoring what it wrote.

One generation path for every generative task (causal_lm, seq2seq) and every caller: the
Predictor, the end-of-training evaluation and the samples at evaluations. Decoding options come
from the model's generation config (written from the run's `generate:` section, so plain
transformers decodes the same way) unless a call overrides them.

Scores (`text_metrics`): ROUGE-1/2/L F1 (rouge-score), sacreBLEU and chrF (sacrebleu), exact
match. Chinese references are scored by characters: ROUGE over characters (rouge-score's own
tokenizer keeps only ASCII letters and digits, which would leave a Chinese text empty) and
sacreBLEU's `zh` tokenizer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from bridgetune.config import RunConfig
from bridgetune.data.schema import Example
from bridgetune.runtime.processes import is_sharded
from bridgetune.tasks.base import Task
from bridgetune.tasks.prompts import encode_marked, marked_chat, marked_prompt

Prompt = str | list[dict[str, str]]

DECODING_KEYS = ("max_new_tokens", "num_beams", "do_sample", "temperature", "top_p",
                 "repetition_penalty")  # fmt: skip


def prompt_text(tokenizer: Any, prompt: Prompt, chat: bool) -> str:
    """The text a prompt becomes: as is for a plain model; through the chat template (with the
    generation prompt) for a model trained on conversations or a [{role, content}] prompt."""
    if isinstance(prompt, str) and not chat:
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompts_ids(
    tokenizer: Any, prompts: Sequence[Prompt], chat: bool, template: str | None = None
) -> list[list[int]]:
    """The token ids of prompts as `generate_texts` encodes them, in one batch. The chat
    template (or a plain prompt's `template`, `task.prompt_template`) writes the control
    tokens; the content (messages of every role, retrieved passages, the prompt) is encoded as
    text, also where it types a control token (bridgetune.tasks.prompts)."""
    chat = chat or any(not isinstance(p, str) for p in prompts)
    marked = []
    for prompt in prompts:
        if chat:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            marked.append(marked_chat(tokenizer, messages, generation_prompt=True))
        else:
            marked.append(marked_prompt(tokenizer, prompt, template))
    # a chat template writes its own special tokens
    return [e.ids for e in encode_marked(tokenizer, marked, add_special_tokens=not chat)]


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    chat: bool,
    max_length: int,
    device: torch.device,
    batch_size: int = 8,
    template: str | None = None,
    **decoding: Any,
) -> list[dict[str, Any]]:
    """{"text", "tokens", "finished" (EOS came before the token limit), "truncated" (the
    prompt was longer than max_length)} for each prompt, in order (`template`: the prompt
    template plain prompts were filled in, see `prompts_ids`).

    A decoder-only model gets left-padded batches (new tokens follow every prompt directly)
    and loses a long prompt's beginning, never the end that asks for the answer; an
    encoder-decoder model reads right-padded sources cut at max_length. Each prompt is
    tokenized once; `decoding` overrides the model's generation config."""
    model = getattr(model, "peft_model", model)  # adapters generate through peft
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    ids = prompts_ids(tokenizer, prompts, chat, template)
    stops = [tokenizer.eos_token_id]
    decoding = {k: v for k, v in decoding.items() if v is not None}
    if "max_new_tokens" not in decoding:
        decoding["max_new_tokens"] = default_new_tokens(model)
    if is_sharded(model):  # FSDP: every process decodes until all of them are done
        decoding["synced_gpus"] = True
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        kept = [row[:max_length] if encoder_decoder else row[-max_length:] for row in chunk]
        encoded = tokenizer.pad(
            {"input_ids": kept},
            padding=True,
            padding_side="right" if encoder_decoder else "left",
            return_tensors="pt",
        ).to(device)
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stops,
                use_cache=True,  # training builds models without the cache
                **decoding,
            )
        # a decoder-only output repeats the prompt; an encoder-decoder's starts with the
        # decoder start token
        skip = 1 if encoder_decoder else encoded["input_ids"].shape[1]
        for row, prompt_ids in zip(output, chunk):
            new = row[skip:].tolist()
            finished = any(token in stops for token in new)
            if finished:
                new = new[: min(new.index(t) for t in stops if t in new)]
            results.append(
                {
                    "text": tokenizer.decode(new, skip_special_tokens=True).strip(),
                    "tokens": len(new),
                    "finished": finished,
                    "truncated": len(prompt_ids) > max_length,
                }
            )
    model.train(was_training)
    return results


def default_new_tokens(model: Any) -> int:
    """The model's generation config's max_new_tokens, else 128 (transformers' fallback is a
    total length of 20 tokens, which a prompt alone may pass)."""
    return getattr(getattr(model, "generation_config", None), "max_new_tokens", None) or 128


def prompt_and_references(example: Example) -> tuple[Prompt, list[str]]:
    """What a generative model is asked for a labelled example, and the texts it should write:
    a conversation up to its last assistant turn and that turn; a prompt and its completion
    (or all its references, when the data gives several)."""
    target = example.label if isinstance(example.label, dict) else {}
    messages = target.get("messages")
    if messages:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return messages[:last], list(target.get("references") or [messages[last]["content"]])
    references = target.get("references") or [target.get("completion", "")]
    return example.text, list(references)


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


def is_chinese(texts: Sequence[str]) -> bool:
    """Whether most texts are Chinese (a third or more of their characters are CJK)."""
    counted = [t for t in texts if t.strip()]
    chinese = sum(
        1 for t in counted if len(_CJK.findall(t)) * 3 >= len(re.sub(r"\s", "", t))
    )  # fmt: skip
    return bool(counted) and chinese * 2 > len(counted)


class _Characters:
    """rouge-score tokenizer for Chinese: every non-space character is a token (Latin words
    in a Chinese text stay whole)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"[A-Za-z0-9]+|\S", text.lower())


def normalized(text: str) -> str:
    return " ".join(text.lower().split())


def text_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]], language: str = "auto"
) -> dict[str, Any]:
    """ROUGE-1/2/L F1 (best over each example's references; x100 like sacreBLEU), corpus
    sacreBLEU and chrF, exact match (after lower-casing and joining whitespace), in %.
    `language`: "zh" scores characters, "en" words, "auto" looks at the references."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {}
    chinese = language == "zh" or (
        language == "auto" and is_chinese([r[0] for r in references if r])
    )
    scorer = rouge_scorer.RougeScorer(
        ["rouge1", "rouge2", "rougeL"], tokenizer=_Characters() if chinese else None
    )
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    exact = 0
    for prediction, refs in zip(predictions, references):
        scores = [scorer.score(ref, prediction) for ref in refs]
        for key in sums:
            sums[key] += max(s[key].fmeasure for s in scores)
        exact += any(normalized(prediction) == normalized(ref) for ref in refs)
    # sacrebleu wants one stream per reference position; shorter lists repeat their first
    width = max(len(r) for r in references)
    streams = [[r[i] if i < len(r) else r[0] for r in references] for i in range(width)]
    bleu = BLEU(tokenize="zh" if chinese else "13a").corpus_score(list(predictions), streams)
    chrf = CHRF().corpus_score(list(predictions), streams)
    count = len(predictions)
    return {
        **{key: 100 * value / count for key, value in sums.items()},
        "bleu": bleu.score,
        "chrf": chrf.score,
        "exact_match": 100 * exact / count,
        "scored_by": "characters" if chinese else "words",
    }


def generation_report(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    chat: bool,
    max_length: int,
    device: torch.device,
    batch_size: int = 8,
    language: str = "auto",
    samples: int = 10,
    template: str | None = None,
    **decoding: Any,
) -> dict[str, Any]:
    """Generate for labelled `examples` and score against their references: `text_metrics`,
    the share that ended with EOS (`finished`, %), mean generated tokens, and the first
    `samples` (prompt, reference, generated) for the report's table (`template`: the task's
    prompt template, see `prompts_ids`)."""
    asked = [prompt_and_references(e) for e in examples]
    generated = generate_texts(
        model,
        tokenizer,
        [prompt for prompt, _ in asked],
        chat=chat,
        max_length=max_length,
        device=device,
        batch_size=batch_size,
        template=template,
        **decoding,
    )
    texts = [g["text"] for g in generated]
    metrics = text_metrics(texts, [refs for _, refs in asked], language)
    metrics["finished"] = 100 * sum(g["finished"] for g in generated) / max(len(generated), 1)
    metrics["generated_tokens"] = sum(g["tokens"] for g in generated) / max(len(generated), 1)
    metrics["generated"] = len(generated)
    metrics["samples"] = [
        {"prompt": shown_prompt(prompt), "reference": refs[0], "generated": text}
        for (prompt, refs), text in list(zip(asked, texts))[:samples]
    ]
    return metrics


def shown_prompt(prompt: Prompt) -> str:
    """A prompt as one line of a report: a conversation's last user turn."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else ""


def sampled_generations(
    cfg: RunConfig, task: Task, tokenizer: Any, dev: list[Example]
) -> Callable[[Any], dict] | None:
    """With generate.eval_sample, the generation metrics of the first that many dev examples
    for every evaluation (Loop's extra_metrics); else None."""
    if not task.generative or not cfg.generate.eval_sample or not dev:
        return None

    def scores(model: Any) -> dict:
        found = scored_generations(
            model, tokenizer, task, cfg, dev, limit=cfg.generate.eval_sample, samples=0
        )
        return {k: v for k, v in found.items() if k not in ("samples", "generated")}

    return scores


def configure_generation(model: Any, tokenizer: Any, settings: Any) -> None:
    """The run's decoding options (`generate:`) as the model's generation config, saved with
    it: `bridgetune generate`, the service and plain transformers decode alike."""
    model = getattr(model, "peft_model", model)  # an adapter: its base model's configs
    base = getattr(model, "get_base_model", lambda: model)()
    config = base.generation_config
    if not settings.do_sample:  # a base model's sampling defaults (Qwen's, say) go with it
        from transformers import GenerationConfig

        default = GenerationConfig()
        for key in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
            if hasattr(config, key):
                setattr(config, key, getattr(default, key, None))
    for key, value in settings.decoding().items():
        setattr(config, key, value)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    base.config.use_cache = True  # training turned it off; generation wants it


def scored_generations(
    model: Any,
    tokenizer: Any,
    task: Task,
    cfg: RunConfig,
    examples: list[Example],
    limit: int | None | Literal["config"] = "config",
    samples: int = 10,
) -> dict[str, Any]:
    """Generation metrics of `model` on the first `limit` (default: generate.eval_examples)
    of `examples` (bridgetune.inference.generation.generation_report); {} when there are none.
    `samples`: how many (prompt, reference, generated) rows to keep for the report."""
    from rich.console import Console

    from bridgetune.inference.generation import generation_report

    settings = cfg.generate
    count = settings.eval_examples if limit == "config" else limit
    chosen = examples if count is None else examples[:count]
    if not chosen:
        return {}
    status = (
        Console(stderr=True).status(f"generating for {len(chosen)} dev examples")
        if samples
        else contextlib.nullcontext()
    )
    with status:
        return generation_report(
            model,
            tokenizer,
            chosen,
            chat=task.chat,
            max_length=cfg.model.max_length,
            device=next(model.parameters()).device,
            batch_size=settings.batch_size,
            language=settings.language,
            samples=samples,
            template=getattr(task, "prompt_template", None),
            **settings.decoding(),
        )
