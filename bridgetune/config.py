"""Run configuration: pydantic models validated before any work starts.

A config is YAML with four sections (`data`, `model`, `train`, `method`) plus `task`, `name` and
`output_dir`. Unknown keys are errors with a "did you mean" hint; dotted overrides such as
`train.lr=3e-5` are applied before validation.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

TagScheme = Literal["IOB1", "IOB2", "BIOES", "BMES"]


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says what and where."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    train: str = Field(
        description="Training data: a CSV/TSV/JSONL/CoNLL file or 'hf:<name>[:<config>]'."
    )
    dev: str | None = Field(None, description="Dev data (same forms); split from train if unset.")
    test: str | None = Field(None, description="Optional test data, evaluated after training.")
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
        "warning; 'repair' (IOB2 token files) reads an I-X that continues no X entity as B-X, "
        "as conlleval does, counted in a warning.",
    )
    prompt_template: str | None = Field(
        None,
        description="causal_lm, seq2seq: the prompt made from each row's prompt text, "
        "e.g. 'Translate English to German: {prompt}' ({prompt} is the row's prompt).",
    )
    as_chat: bool = Field(
        False,
        description="causal_lm: train prompt/completion rows as a user turn and an assistant "
        "turn in the model's chat template (instruction-tuned models answer best so).",
    )
    role_map: dict[str, str] = Field(
        default_factory=dict,
        description="causal_lm: speaker names of `messages` mapped to system/user/assistant, "
        "e.g. {customer: user, agent: assistant}.",
    )

    @model_validator(mode="after")
    def _check_generation_options(self) -> DataConfig:
        if self.format == "parallel" and not self.languages:
            raise ValueError(
                "data.format: parallel reads <path>.<source> and <path>.<target>: set "
                "data.languages, e.g. [en, de]"
            )
        if self.prompt_template is not None and "{prompt}" not in self.prompt_template:
            raise ValueError(
                "data.prompt_template must contain {prompt} (where the row's prompt goes)"
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
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="Load the base model quantized with bitsandbytes and train LoRA on it "
        "(QLoRA: 4bit NF4, double quantization, bf16 compute); needs a CUDA GPU and "
        "`pip install bitsandbytes`, and method lora.",
    )


class MethodConfig(_Section):
    """Which parameters train. The task head always trains and is always saved.

    Besides `name`, the section holds the chosen method's own options: each method declares them
    as its `Params` model (`bridgetune.methods`, e.g. `method.r` for LoRA), validated with the
    config (`api.check_registered`); an option the method does not take is an error.
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
        "auto", description="'auto': bf16 on GPUs that support it, else fp32."
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


class TaskConfig(_Section):
    """What to learn. Besides `name`, the section holds the task's own options: each task
    declares them as its `Options` model (bridgetune.tasks, e.g. `task.crf` for ner,
    `task.packing` for causal_lm), validated with the config; an option the task does not take
    is an error. `task: ner` is short for `task: {name: ner}`.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(
        "classification",
        description="A registered task (checked with 'did you mean'): classification, "
        "multilabel, pair, ner, regression, ranking, qa, causal_lm, seq2seq, mlm (masked-LM "
        "pre-training: bridgetune pretrain). Its options: the task.* rows below.",
    )

    def options(self) -> dict[str, Any]:
        """The task options set in the config (everything but `name`)."""
        return dict(self.model_extra or {})


class RunConfig(_Section):
    name: str = Field("run", description="Run name; outputs go to <output_dir>/<name>.")
    output_dir: str = Field("runs", description="Parent directory of run directories.")
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    fewshot: FewShotConfig = Field(default_factory=FewShotConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    rules: list[RuleConfig] = Field(
        default_factory=list,
        description="ner, classification, pair: rules applied to every prediction, top to "
        "bottom (regex or words that add, override or veto; docs/chinese.md).",
    )

    @field_validator("task", mode="before")
    @classmethod
    def _task_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _crf_loss(self) -> RunConfig:
        """task.crf trains with the CRF's loss unless train.loss says otherwise (an error the
        task reports)."""
        if self.task.options().get("crf") and self.train.loss is None:
            self.train.loss = "crf"
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


class MonitorConfig(_Section):
    """Drift monitoring of predictions against the training label distribution."""

    window: int = Field(
        500, gt=0, description="Predictions in the service's rolling window (labels per text)."
    )
    min_samples: int = Field(
        50, gt=0, description="Predictions a window needs before it can raise an alert."
    )
    max_share_shift: float | None = Field(
        0.2,
        gt=0,
        le=1,
        description="Alert when a label's share moves this far (absolute) from its training "
        "share; null disables.",
    )
    label_share_max: dict[str, float] = Field(
        default_factory=dict,
        description="Alert when a label's share exceeds this, e.g. {negative: 0.4}.",
    )
    min_mean_confidence: float | None = Field(
        None, gt=0, le=1, description="Alert when the window's mean confidence falls below this."
    )
    clear_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="An active service alert clears only once the window is back inside its "
        "threshold by this much (share or confidence), so a value hovering at a threshold "
        "does not raise it again and again; 0 clears at the threshold.",
    )
    webhook_url: str | None = Field(
        None, description="POST each alert as JSON to this URL (in the background)."
    )


class RetrievalConfig(_Section):
    """`serve.knowledge`: a knowledge base searched for every chat request (retrieval)."""

    documents: str | None = Field(
        None,
        description="A folder of .txt/.md files, a .txt/.md file, or a .jsonl/.csv of records "
        "with `text` (documents) or `answer` (+ `question`: past answers) and optionally "
        "`source`/`title`/`id`; none: no retrieval.",
    )
    encoder: str = Field(
        "minilm", description="Encoder that embeds passages and questions (a model name or dir)."
    )
    top_k: int = Field(3, ge=1, description="Most passages put into a prompt.")
    min_score: float = Field(
        0.2, ge=-1, le=1, description="Least cosine similarity of a passage to the question."
    )
    chunk_chars: int = Field(
        300, ge=50, description="Longest passage in characters (paragraphs joined up to it)."
    )
    instruction: str = Field(
        "Answer with the help of these passages when they are relevant.",
        description="Text before the numbered passages in the system turn.",
    )


class ServeConfig(_Section):
    """`bridgetune serve`: limits, batching, keys, feedback store and monitoring."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, lt=65536, description="TCP port.")
    workers: int = Field(1, ge=1, description="Server processes (each loads the model).")
    threads: int | None = Field(
        None, ge=1, description="torch threads for inference; default: the machine's cores."
    )
    max_texts: int = Field(256, gt=0, description="Most texts in one request (more: 413).")
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest request body in bytes (more: 413)."
    )
    truncation: Literal["flag", "reject"] = Field(
        "flag",
        description="Texts over the model's max_length: 'flag' truncates and says so, "
        "'reject' answers 422.",
    )
    max_batch_texts: int = Field(
        256, gt=0, description="Most texts the inference thread takes from the queue at once."
    )
    batch_tokens: int = Field(
        512,
        gt=0,
        description="Token budget of one forward pass (padded length x texts): a micro-batch is "
        "sorted by length and cut into passes of similar lengths.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Inference precision; 'auto': bf16 where the hardware computes it natively "
        "(CPUs with AVX512-BF16 or AMX, GPUs with bf16), else fp32.",
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long the first queued text waits for others to join it."
    )
    api_keys: list[str] = Field(
        default_factory=list,
        description="Keys accepted for predict and feedback (empty: open); also from "
        "BRIDGETUNE_API_KEYS.",
    )
    admin_keys: list[str] = Field(
        default_factory=list,
        description="Keys for /admin endpoints (none: admin disabled); also from "
        "BRIDGETUNE_ADMIN_KEYS.",
    )
    metrics_public: bool = Field(
        False,
        description="Serve /metrics without a key when api_keys are set (it shows label names "
        "and the training label distribution; off: it asks for a key like predict).",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (empty: CORS off)."
    )
    max_new_tokens: int = Field(
        512, gt=0, description="Generative models: the most tokens one request may ask for."
    )
    max_batch_generations: int = Field(
        32,
        ge=1,
        description="Generative models: the most generations run together as one batch "
        "(continuous batching: requests join and leave between tokens; 1: one at a time).",
    )
    generation_timeout_s: float = Field(
        120,
        gt=0,
        description="Generative models: a generation running longer ends there (finish_reason "
        "'length').",
    )
    feedback_db: str | None = Field(
        None, description="SQLite file of feedback; default <model_dir>/../feedback.db."
    )
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    knowledge: RetrievalConfig = Field(default_factory=RetrievalConfig)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.lr=3e-5)")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys (``train.lr=3e-5``) in a raw config dict; values are parsed as YAML."""
    for item in overrides:
        path, value = _parse_override(item)
        if path[0] == "task" and len(path) > 1 and isinstance(raw.get("task"), str):
            raw["task"] = {"name": raw["task"]}  # `task: ner` is short for `task: {name: ner}`
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return raw


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section that `loc` points into (for "did you mean")."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        loc = item["loc"]
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(root or RunConfig, loc), n=1)
            hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
            lines.append(f"  - {where}: unknown key{hint}")
        elif item["type"] == "literal_error" and isinstance(item.get("input"), str):
            choices = str(item.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
            options = [c.strip(" '") for c in choices.split(",") if c.strip(" '")]
            close = difflib.get_close_matches(item["input"], options, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"  - {where}: unknown value {item['input']!r}{hint} ({item['msg']})")
        else:
            lines.append(f"  - {where}: {item['msg']}")
    lines.append("Run `bridgetune config --schema` to list every key.")
    return "\n".join(lines)


# options that were run-level keys before they became the task's own (task.*): configs that
# spell them the old way keep working
MOVED_TO_TASK = {("model", "crf"): "crf", ("train", "packing"): "packing"}


def _move_task_options(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with the old spellings of task options (model.crf, train.packing) under task.*."""
    moved = {}
    for (section, key), option in MOVED_TO_TASK.items():
        if isinstance(raw.get(section), dict) and key in raw[section]:
            moved[option] = raw[section].pop(key)
    if moved:
        task = raw.get("task", "classification")
        raw["task"] = {**({"name": task} if isinstance(task, str) else task), **moved}
    return raw


def build_config(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a raw dict into a RunConfig, raising ConfigError with readable messages."""
    try:
        return RunConfig.model_validate(_move_task_options(raw))
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply dotted overrides and validate it.

    Relative data paths (and gazetteer files) are resolved against the config file's directory
    when they exist there.
    """
    path = Path(path)
    raw = apply_overrides(_read_yaml(path, "config"), overrides or [])
    _resolve_data_paths(raw, path.parent)
    return build_config(raw, str(path))


def _resolve_data_paths(raw: dict[str, Any], base: Path) -> None:
    knowledge = raw.get("knowledge")
    gazetteers = knowledge.get("gazetteers") if isinstance(knowledge, dict) else None
    if isinstance(gazetteers, dict):  # files of names, like data files
        for kind, value in gazetteers.items():
            if isinstance(value, str) and not value.startswith("jieba:"):
                if not Path(value).exists() and (base / value).exists():
                    gazetteers[kind] = str(base / value)
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    # parallel files are named by a path prefix: <prefix>.<first language> must exist
    suffix = ""
    if data.get("format") == "parallel" and isinstance(data.get("languages"), list):
        suffix = f".{data['languages'][0]}" if data["languages"] else ""
    for key in ("train", "dev", "test"):
        value = data.get(key)
        if isinstance(value, str) and not value.startswith("hf:") and not Path(value).is_absolute():
            candidate = base / value
            if not Path(value + suffix).exists() and Path(str(candidate) + suffix).exists():
                data[key] = str(candidate)


def schema_lines(root: type[BaseModel] | None = None) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field of `root` (default: RunConfig)."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            default = (
                "required"
                if field.is_required()
                else repr(field.get_default(call_default_factory=True))
            )
            rows.append((f"{prefix}{name}", default, field.description or ""))

    walk(root or RunConfig, "")
    return rows


def schema_markdown(
    method_rows: list[tuple[str, str, str]], task_rows: list[tuple[str, str, str]]
) -> str:
    """docs/config.md: the config reference as Markdown tables (kept in sync by a test);
    `method_rows` and `task_rows` are the registered methods' and tasks' options
    (bridgetune.recipes.reference: config imports nothing of ours)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `bridgetune/config.py`, the tasks' `Options` and the methods' `Params` "
        "(`bridgetune config --schema` prints the same; regenerate: `python -m "
        "bridgetune.recipes.reference`).",
        "",
        "## Training (`bridgetune train CONFIG`)",
        "",
        *_markdown_table(schema_lines(RunConfig)),
        "",
        "### Task options (`task.*`, by `task.name`)",
        "",
        "Each task takes only its own options (its `Options` model in `bridgetune/tasks`); "
        "`task: ner` is short for `task: {name: ner}`. The spellings `model.crf` and "
        "`train.packing` of older configs are read as `task.crf` and `task.packing`.",
        "",
        *_markdown_table(task_rows),
        "",
        "### Method options (`method.*`, by `method.name`)",
        "",
        "Each method takes only its own options (its `Params` model in `bridgetune/methods`).",
        "",
        *_markdown_table(method_rows),
        "",
        "## Serving (`bridgetune serve MODEL_DIR --config SERVE.yaml`)",
        "",
        "Command-line options override these; `monitor.*` also applies to `bridgetune monitor`.",
        "",
        *_markdown_table(schema_lines(ServeConfig)),
    ]
    return "\n".join(lines) + "\n"


def _markdown_table(rows: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, default, text in rows:
        escaped = text.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {escaped} |")
    return lines


def load_serve_config(path: str | Path | None, overrides: list[str] | None = None) -> ServeConfig:
    """A ServeConfig from an optional YAML file plus dotted overrides, validated."""
    raw = _read_yaml(Path(path), "serve config") if path is not None else {}
    source = str(path) if path is not None else "<serve options>"
    raw = apply_overrides(raw, overrides or [])
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, ServeConfig)) from None
