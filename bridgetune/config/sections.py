"""The run-level sections of a training config: data, model, method, augment, fewshot, train,
generate, rules, pretrain, knowledge (task.* and method.* options belong to the tasks and the
methods)."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bridgetune.config.base import TagScheme, _Section


class DataConfig(_Section):
    train: str = Field(
        description="Training data: a CSV/TSV/JSONL/CoNLL file or 'hf:<name>[:<config>]'."
    )
    dev: str | None = Field(None, description="Dev data (same forms); split from train if unset.")
    test: str | None = Field(None, description="Optional test data, evaluated after training.")
    corpus: str | None = Field(
        None,
        description="embedding: more passages (TXT, a passage per line, or the `text` of "
        "CSV/TSV/JSONL rows) ranked with the dev and test candidates when they are evaluated, "
        "so retrieval is measured among a realistic corpus.",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "conll", "parallel"] = Field(
        "auto",
        description="File format; 'auto' picks it from the file extension. 'parallel' "
        "(causal_lm, seq2seq): line-aligned text files <path>.<source> and <path>.<target> "
        "named by data.languages, e.g. train.en + train.de for train: data/train.",
    )
    columns: list[str] | None = Field(
        None,
        description="Column names of CSV/TSV files without a header row (the first line is "
        "then data), e.g. [prompt, completion, attribution].",
    )
    languages: list[str] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="format: parallel: the [source, target] file suffixes, e.g. [en, de].",
    )
    text_column: str = Field("text", description="Column holding the text.")
    text_pair_column: str | None = Field(
        None, description="Column holding the second text (sentence-pair task)."
    )
    label_column: str = Field("label", description="Column holding the label(s).")
    group_column: str | None = Field(
        None,
        description="Ranking: column of the query id that groups candidate rows (default: rows "
        "with the same query text form a group).",
    )
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Rename source columns before use, e.g. {sentence: text, content: text}.",
    )
    labels: list[str] | None = Field(
        None, description="Label set in order; inferred (sorted) from train when unset."
    )
    label_separator: str = Field(
        "|", description="Separator of several labels in one CSV/TSV cell (multilabel)."
    )
    tag_scheme: TagScheme = Field(
        "IOB2",
        description="Tag scheme of token files (NER); span files (JSONL with text + entity "
        "spans, e.g. CLUENER2020) are tagged in it.",
    )
    char_position_digits: bool = Field(
        False,
        description="Token files whose every token is a character followed by a digit (its "
        "position in its word, as Weibo NER's 科0 技1): the digit is dropped.",
    )
    dev_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train held out as dev when no dev file is given."
    )
    split_seed: int = Field(42, description="Seed of the stratified dev split.")
    max_train_examples: int | None = Field(
        None, gt=0, description="Use only the first N training examples (quick runs)."
    )
    max_eval_examples: int | None = Field(
        None, gt=0, description="Use only the first N dev/test examples (quick runs)."
    )
    few_shot_k: int | None = Field(
        None,
        gt=0,
        description="Keep k training examples per label (stratified, seeded; multilabel and NER: "
        "at least k per label). Works with every method.",
    )
    few_shot_seed: int = Field(0, description="Seed of the k-shot sample.")
    invalid_rows: Literal["error", "skip", "repair"] = Field(
        "error",
        description="A row (token files: a sentence) that fails its checks: 'error' stops with "
        "its file and line; 'skip' leaves it out, counted and listed (file:line: why) in a "
        "warning; 'repair' (token files) mends an ill-formed tag sequence by its scheme's rule "
        "(IOB2: a stray I-X is B-X, as conlleval reads it; IOB1: a B-X after no X entity is "
        "I-X; BIOES/BMES: a stray continuation starts an entity, an unclosed one ends at its "
        "last token), counted in a warning.",
    )

    @field_validator("train", "dev", "test")
    @classmethod
    def _home(cls, value: str | None) -> str | None:
        """`~/data/x.csv` means the home folder, as it does for model.name and output_dir."""
        return os.path.expanduser(value) if value and value.startswith("~") else value

    @model_validator(mode="after")
    def _check_generation_options(self) -> DataConfig:
        if self.format == "parallel" and not self.languages:
            raise ValueError(
                "data.format: parallel reads <path>.<source> and <path>.<target>: set "
                "data.languages, e.g. [en, de]"
            )
        return self


class ModelConfig(_Section):
    name: str = Field(
        "minilm",
        description="Base model: 'minilm' (bundled offline default), a local directory, a hub id.",
    )
    max_length: int = Field(128, gt=1, description="Maximum tokens per example (longer truncate).")
    truncation: Literal["cut", "error"] = Field(
        "cut",
        description="Examples longer than max_length: 'cut' (counted and reported) or 'error' "
        "(the first one's file and line). Generation also reports prompts that leave no room "
        "for the answer.",
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Override the model's hidden dropout probability."
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")
    extend_vocab: str | None = Field(
        None,
        description="Add tokens the tokenizer reads badly: 'auto' (CJK characters it maps to "
        "[UNK] or several pieces, words in [UNK] or 4+ pieces, from the training text) or a "
        "file of tokens, one per line; new embeddings start at the mean of their old pieces. "
        "Needs method full (the embeddings train).",
    )
    extend_vocab_min_count: int = Field(
        2, ge=1, description="extend_vocab: auto: least occurrences of a unit in the training text."
    )
    extend_vocab_max_tokens: int = Field(
        5000, ge=1, description="extend_vocab: auto: most tokens added (most frequent first)."
    )
    prune_vocab: Literal["auto"] | int | None = Field(
        None,
        description="Cut a SentencePiece Unigram vocabulary (XLM-R's 250k pieces in "
        "multilingual-e5-small) to the pieces the text of train, dev and test uses, plus "
        "prune_vocab_reserve more, every single CJK character and every special token; the "
        "embeddings are sliced to match and the saved model holds the pruned tokenizer. "
        "'auto': when the tokenizer is Unigram with over 60,000 pieces (else a log line says "
        "why not); a number: at most this many pieces (Unigram only).",
    )
    prune_vocab_reserve: int = Field(
        8000,
        ge=0,
        description="prune_vocab: pieces kept beyond those the data uses, highest Unigram score "
        "first, so unseen text at prediction time still tokenizes sensibly.",
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="Load the base model quantized with bitsandbytes and train LoRA on it "
        "(QLoRA: 4bit NF4, double quantization, bf16 compute); needs a CUDA GPU and "
        "`pip install bitsandbytes`, and method lora.",
    )

    @field_validator("prune_vocab", mode="wrap")
    @classmethod
    def _pieces(cls, value: Any, handler: Any) -> Any:
        """`true` or `0` would read as a vocabulary of 1 or 0 pieces: say what the key takes."""
        pieces = handler(value) if not isinstance(value, bool) else 0  # bools are ints to pydantic
        if isinstance(pieces, int) and pieces < 1:
            raise ValueError("give 'auto' or the most pieces to keep (a positive number)")
        return pieces


class MethodConfig(_Section):
    """Which parameters train. The task head always trains and is always saved.

    Besides `name`, the section holds the chosen method's own options: each method declares them
    as its `Params` model (`bridgetune.methods`, e.g. `method.r` for LoRA), validated with the
    config (`bridgetune.recipes.check`); an option the method does not take is an error.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(
        "full",
        description="A registered method (checked with 'did you mean'): 'full' fine-tuning; "
        "'head_only' (linear probe); 'bitfit' (biases + head); "
        "peft methods 'lora', 'ia3', 'prompt' (prompt tuning), 'ptuning' (P-tuning: prompt "
        "from a small encoder); 'prefix' (prefix tuning). Their options: the method.* rows "
        "below.",
    )

    def options(self) -> dict[str, Any]:
        """The method options set in the config (everything but `name`)."""
        return dict(self.model_extra or {})


class AugmentConfig(_Section):
    """Data augmentation of the training split (never dev or test), seeded."""

    ops: list[str] = Field(
        default_factory=list,
        description="Registered augmentations to draw from: swap, delete, insert (random "
        "words), mask (tokenizer's mask token), synonym (embedding-space neighbours of the "
        "model's own input embeddings), contextual (fill-mask model), backtranslation (two "
        "translation models), mention (NER: replace an entity mention by another of the same "
        "type).",
    )
    copies: int = Field(
        1, ge=1, description="Augmented copies added per training example (each by one op)."
    )
    p: float = Field(0.1, gt=0, le=1, description="Share of words (characters for CJK) changed.")
    seed: int = Field(0, description="Seed of the augmentation.")
    synonym_neighbours: int = Field(
        10, gt=0, description="synonym: candidates among the nearest input embeddings."
    )
    fill_mask_model: str | None = Field(
        None, description="contextual: a fill-mask model (local directory or hub id)."
    )
    translation_models: list[str] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="backtranslation: [source->pivot, pivot->source] translation models.",
    )

    @model_validator(mode="after")
    def _check_models(self) -> AugmentConfig:
        if "contextual" in self.ops and not self.fill_mask_model:
            raise ValueError("augment op 'contextual' needs augment.fill_mask_model")
        if "backtranslation" in self.ops and not self.translation_models:
            raise ValueError(
                "augment op 'backtranslation' needs augment.translation_models: "
                "[source->pivot model, pivot->source model]"
            )
        return self


class FewShotConfig(_Section):
    """`bridgetune fewshot`: contrastive (SetFit-style) or prompt-based (PET-style) learning."""

    mode: Literal["contrastive", "prompt"] = Field(
        "contrastive",
        description="'contrastive': fine-tune sentence embeddings on pairs, then fit a head; "
        "'prompt': fine-tune a masked LM through a template and a verbalizer.",
    )
    iterations: int = Field(
        20,
        gt=0,
        description="Contrastive: rounds of pair generation; each gives every example one "
        "positive and one negative pair. The body trains for train.epochs over the pairs.",
    )
    head: Literal["logistic", "linear"] = Field(
        "logistic",
        description="Contrastive: head on the embeddings; 'logistic' (fitted, like SetFit) or "
        "'linear' (trained with the loop, body frozen).",
    )
    head_epochs: float = Field(20, gt=0, description="Epochs of the 'linear' head.")
    head_lr: float = Field(1e-2, gt=0, description="Learning rate of the 'linear' head.")
    template: str = Field(
        "{text} It was {mask}.",
        description="Prompt: the template, with {text} and {mask}.",
    )
    verbalizer: dict[str, list[str]] | None = Field(
        None,
        description="Prompt: words per label, each one token, e.g. {positive: [great, good]}.",
    )


class TrainConfig(_Section):
    epochs: float = Field(3, gt=0, description="Number of passes over the training data.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay (never on biases and LayerNorm)."
    )
    warmup_ratio: float = Field(
        0.06, ge=0, lt=1, description="Share of optimizer steps with linear warmup."
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate decay after warmup."
    )
    batch_size: int = Field(32, gt=0, description="Maximum examples per batch.")
    batch_tokens: int | None = Field(
        None,
        gt=0,
        description="Token budget per batch (padded length x examples); unset: batch_size only.",
    )
    grad_accum: int = Field(1, ge=1, description="Batches accumulated per optimizer step.")
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping norm; null disables.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="'auto': bf16 autocast where the processor computes bf16 natively (GPUs "
        "that support it; CPUs with AMX-BF16 or AVX512-BF16), else fp32; generative tasks stay "
        "fp32 on CPUs (bf16 cost dev loss there); weights and optimizer state stay fp32.",
    )
    compile: Literal["off", "on", "trace"] = Field(
        "off",
        description="torch.compile the training forward over a few fixed batch widths (powers "
        "of two): 'on' is inductor, with CUDA graphs (mode reduce-overhead) on GPUs; 'trace' "
        "traces only (eager backend: graph breaks and shapes, no speed-up); encoder tasks, "
        "one process, without batch_tokens. Not yet measured on a GPU (docs/benchmarks.md).",
    )
    eval_steps: int | None = Field(
        None, gt=0, description="Evaluate every N optimizer steps; unset: every epoch."
    )
    metric: str | None = Field(
        None,
        description="Dev metric for best model and early stopping; default per task "
        "(accuracy, micro F1, entity F1).",
    )
    patience: int | None = Field(
        None, ge=1, description="Early stopping: evaluations without improvement before stop."
    )
    seed: int = Field(42, description="Seed of weights init, data order and dropout.")
    log_every: int = Field(20, gt=0, description="Read the loss from the device every N steps.")
    checkpoint_steps: int | None = Field(
        None, gt=0, description="Also checkpoint every N optimizer steps (always at epoch end)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="'auto' (CUDA when present), 'cpu' or 'cuda'; pick GPUs with "
        "CUDA_VISIBLE_DEVICES or accelerate launch.",
    )
    eval_batch_size: int = Field(64, gt=0, description="Examples per evaluation batch.")
    head_lr: float | None = Field(
        None, gt=0, description="Learning rate of the task head; unset: train.lr."
    )
    layer_lr_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Layer-wise learning-rate decay: layer k of L trains at "
        "lr x decay^(L-k) (k = 0 lowest), the embeddings at lr x decay^(L+1); unset: one lr.",
    )
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None,
        description="Loss weight per class: 'balanced' (inverse frequency in train) or "
        "{label: weight}; multilabel: weight of each label's positives; NER: per tag.",
    )
    length_bucketing: bool | None = Field(
        None,
        description="Batch examples of similar length together (less padding, faster); null: "
        "on for encoder tasks, off for causal_lm and seq2seq (batches of alike examples "
        "slowed their learning: docs/benchmarks.md) and with task.packing (no padding to save).",
    )
    loss: str | None = Field(
        None,
        description="The task's loss; null is its default. regression: mse, huber; ranking: "
        "listwise, pairwise, pointwise; classification, ner, qa: their cross-entropy; ner "
        "with task.crf: crf.",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy (not multilabel)."
    )
    rdrop: float = Field(
        0.0,
        ge=0,
        description="R-Drop: weight of the symmetric KL between two dropout passes; 0 is off.",
    )
    adversarial: Literal["none", "fgm", "pgd"] = Field(
        "none", description="Adversarial training on the input embeddings: FGM or PGD."
    )
    adv_epsilon: float = Field(
        0.1,
        gt=0,
        description="FGM/PGD: norm of the perturbation of one example's word embeddings "
        "(MiniLM's word vectors have norms near 1; 1.0 stopped learning on SST-2).",
    )
    adv_alpha: float = Field(0.03, gt=0, description="PGD: norm of each ascent step.")
    adv_steps: int = Field(3, ge=1, description="PGD: ascent steps per batch.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: "
        "much less memory for long sequences and large models, about a third more time.",
    )
    fsdp: bool = Field(
        False,
        description="Shard weights, gradients and optimizer state over the processes of "
        "`accelerate launch` (FSDP2) to train a model larger than one GPU; accelerate's "
        "--use_fsdp turns it on too (docs/generation.md).",
    )


class GenerateConfig(_Section):
    """Generative tasks (causal_lm, seq2seq): decoding, saved as the model's generation config
    (so `bridgetune generate` and plain transformers decode alike), and the generation metrics
    scored on dev at the end of training."""

    max_new_tokens: int = Field(128, gt=0, description="Most tokens generated per prompt.")
    num_beams: int = Field(1, ge=1, description="Beam search width; 1 is greedy or sampling.")
    do_sample: bool = Field(
        False, description="Sample instead of greedy decoding (scores stop being reproducible)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Sampling: nucleus probability mass.")
    repetition_penalty: float = Field(
        1.0, gt=0, description="Above 1 discourages repeating tokens already in the text."
    )
    eval_examples: int | None = Field(
        200,
        ge=0,
        description="Dev examples generated and scored (ROUGE, BLEU, chrF, exact match, EOS "
        "share) at the end of training, with a table of samples in the report; 0: none; "
        "null: all.",
    )
    eval_sample: int = Field(
        0,
        ge=0,
        description="Also generate this many dev examples at every evaluation: their ROUGE, "
        "BLEU and chrF join the dev metrics (so train.metric may be rougeL or chrf); 0: off.",
    )
    language: Literal["auto", "en", "zh"] = Field(
        "auto",
        description="How texts are scored: 'zh' by characters (ROUGE) and sacreBLEU's zh "
        "tokenizer, 'en' by words; 'auto' looks at the references.",
    )
    batch_size: int = Field(8, gt=0, description="Prompts generated together.")

    def decoding(self) -> dict[str, Any]:
        """The options model.generate takes (a generation config's fields); sampling options
        only when sampling (a greedy generation config with them fails validation)."""
        keys = {"max_new_tokens", "num_beams", "do_sample", "repetition_penalty"}
        if self.do_sample:
            keys |= {"temperature", "top_p"}
        return self.model_dump(include=keys)


class RuleConfig(_Section):
    """One rule applied at prediction time (bridgetune.knowledge.rules; ner, classification,
    pair)."""

    action: Literal["add", "override", "veto"] = Field(
        description="add (ner: where the model found nothing), override (replace the model's "
        "answer), veto (remove the model's entity / label where the rule matches)."
    )
    type: str | None = Field(None, description="ner: the entity type.")
    label: str | None = Field(None, description="classification: the class.")
    pattern: str | None = Field(None, description="A regular expression (Python syntax).")
    words: list[str] | None = Field(None, description="Words or phrases to find.")
    words_file: str | None = Field(None, description="A file of words, one per line.")
    name: str | None = Field(None, description="Shown in predictions as `rule`.")

    @model_validator(mode="after")
    def _complete(self) -> RuleConfig:
        if not (self.pattern or self.words or self.words_file):
            raise ValueError("a rule needs a pattern, words or a words_file to match")
        if self.pattern:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(
                    f"pattern {self.pattern!r} is not a valid regex: {error}"
                ) from None
        return self


class PretrainConfig(_Section):
    """`bridgetune pretrain` (task mlm): how the masked-LM pre-training masks its text."""

    masking: Literal["token", "whole_word", "knowledge"] = Field(
        "whole_word",
        description="Tokens masked together: 'token' alone; 'whole_word' a word's tokens "
        "(Chinese words by jieba); 'knowledge' also every dictionary phrase as one unit.",
    )
    mask_prob: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked.")
    phrases: str | None = Field(
        None,
        description="A file of phrases (entities, terms), one per line: kept whole by jieba, "
        "masked as units by 'knowledge' masking.",
    )


class KnowledgeConfig(_Section):
    """Dictionaries as model inputs (bridgetune.knowledge.gazetteer; ner, classification, pair)."""

    gazetteers: dict[str, list[str] | str] = Field(
        default_factory=dict,
        description="Type -> names: a list, a file (one name per line) or jieba:<tags> (names "
        "from jieba's dictionary: nr persons, ns places, nt organizations, nz other). Matches "
        "become features of the classifier (ner: B/M/E/S flags per word; classification: counts).",
    )
    min_chars: int = Field(
        2, ge=1, description="Names shorter than this many characters are not matched."
    )
