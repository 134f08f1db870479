"""`bridgetune serve`'s config: limits, batching, keys, the feedback store, drift monitoring and
the knowledge base searched for chat."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
)

from bridgetune.config.base import ConfigError, _Section
from bridgetune.config.run import _describe, _read_yaml, apply_overrides


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
    model: str | None = Field(
        None,
        description="A fine-tuned retriever (a `task: embedding` model directory; `bridgetune "
        "serve --retriever DIR`) that embeds passages and questions with its own pooling and "
        "prefixes, instead of `encoder`. The passages are embedded again when it changes.",
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
    extract_ner: str | None = Field(
        None,
        description="An NER model directory beside the served relation model: POST /v1/extract "
        "then finds the entities of each sentence with it and the relations between them with "
        "the served model (none: no /v1/extract).",
    )
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    knowledge: RetrievalConfig = Field(default_factory=RetrievalConfig)


def load_serve_config(path: str | Path | None, overrides: list[str] | None = None) -> ServeConfig:
    """A ServeConfig from an optional YAML file plus dotted overrides, validated."""
    raw = _read_yaml(Path(path), "serve config") if path is not None else {}
    source = str(path) if path is not None else "<serve options>"
    raw = apply_overrides(raw, overrides or [])
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, ServeConfig)) from None
