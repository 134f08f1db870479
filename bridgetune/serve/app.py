"""The HTTP service: `create_app(model_dir)` returns a FastAPI app with its OpenAPI document.

Endpoints: POST /v1/predict, POST /v1/rank (ranking models), POST /v1/generate and OpenAI's
POST /v1/chat/completions and GET /v1/models (generative models; bridgetune.serve.chat),
POST /v1/feedback, GET /v1/info, GET /health, GET /ready, GET /metrics, POST /admin/reload, and
the playground page at /.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from bridgetune.config import ServeConfig
from bridgetune.data.schema import Example
from bridgetune.inference.predictor import Predictor
from bridgetune.serve import schemas
from bridgetune.serve.batching import MicroBatcher
from bridgetune.serve.chat import add_chat_routes, generation_feedback
from bridgetune.serve.metrics import ServiceMetrics
from bridgetune.serve.middleware import (
    BodyLimit,
    RequestMetrics,
    RequireJSON,
    key_matches,
    presented_key,
)
from bridgetune.serve.service import (
    RequestError,
    feedback_label,
    run_batch,
    serving_precision,
)
from bridgetune.serve.state import Service

log = logging.getLogger("bridgetune.serve")

ENDPOINTS = (
    "/",
    "/health",
    "/ready",
    "/metrics",
    "/v1/info",
    "/v1/predict",
    "/v1/rank",
    "/v1/generate",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/feedback",
    "/admin/reload",
)
JSON_BODIES = (
    "/v1/predict",
    "/v1/rank",
    "/v1/generate",
    "/v1/chat/completions",
    "/v1/feedback",
    "/admin/reload",
)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong API key."},
    413: {"description": "Too many texts or too large a body."},
    415: {"description": "The body is not sent as application/json."},
    422: {"description": "The request does not fit the schema or the model."},
    503: {"description": "The model is still loading."},
}
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def create_app(model: str | Path | Predictor, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving `model` (a model directory, or a loaded Predictor).

    A directory is loaded in the background at start-up: `/health` answers at once and `/ready`
    says when predictions can be served.
    """
    config = config or ServeConfig()
    service = Service(config, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _set_threads(config)
        service.batcher = MicroBatcher(
            lambda p, f, e: run_batch(config, p, f, e),
            config.max_batch_texts,
            config.max_wait_ms,
            on_batch=_batch_metrics(service.metrics),
        )
        service.batcher.start()
        loading = []
        if service.slot is None:
            loading.append(asyncio.create_task(_load_initial(service)))
        if config.knowledge.documents:
            loading.append(asyncio.create_task(_load_knowledge(service)))
        yield
        for task in loading:
            task.cancel()
        await service.batcher.stop()
        if service.slot is not None and service.slot.engine:
            service.slot.engine.close()
        if service.store is not None:
            service.store.close()

    app = FastAPI(
        title="bridgetune",
        summary="Predictions, feedback and monitoring for a fine-tuned transformer.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(RequireJSON, paths=JSON_BODIES)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=service.metrics, endpoints=ENDPOINTS)
    return app


def _version() -> str:
    from bridgetune._version import __version__

    return __version__


def _set_threads(config: ServeConfig) -> None:
    import torch

    cores = os.cpu_count() or 1
    torch.set_num_threads(config.threads or max(1, cores // config.workers))


def _batch_metrics(metrics: ServiceMetrics):
    def record(texts: int, seconds: float) -> None:
        metrics.batch_texts.observe(texts)
        metrics.batch_seconds.observe(seconds)

    return record


async def _load_initial(service: Service) -> None:
    try:
        predictor = await run_in_threadpool(service.load, service.source)
    except Exception:
        log.exception("could not load the model from %s", service.source)
        raise
    service.install(predictor)
    log.info("serving %s (%s)", service.slot.version, service.slot.task)


async def _load_knowledge(service: Service) -> None:
    from bridgetune.inference.retrieval import KnowledgeBase

    settings = service.config.knowledge
    try:
        service.knowledge = await run_in_threadpool(
            KnowledgeBase.load, settings.documents, settings.encoder, settings.chunk_chars
        )
    except Exception:
        log.exception("could not load the knowledge base %s", settings.documents)
        raise


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"] if part != "body") or "body"
            problems.append(f"{where}: {item['msg']}")
        return JSONResponse(
            {"detail": "; ".join(problems), "errors": _plain(error.errors())}, status_code=422
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        """A bug, not the client's mistake: logged with an id the client can quote."""
        request_id = uuid.uuid4().hex[:16]
        log.error(
            "request %s: %s %s failed", request_id, request.method, request.url.path,
            exc_info=error,
        )  # fmt: skip
        return JSONResponse(
            {
                "detail": "internal error; the server log has the details under this request id",
                "request_id": request_id,
            },
            status_code=500,
            headers={"X-Request-ID": request_id},
        )


def _plain(errors: Any) -> Any:
    """Validation errors as JSON: exceptions in ctx and non-JSON inputs (bytes, surrogates)
    become strings."""
    return [
        {k: (v if k in ("type", "msg") else _json_safe(v)) for k, v in item.items()}
        for item in errors
    ]


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return repr(value)[:200]
    return value


def _add_routes(app: FastAPI, service: Service) -> None:
    config = service.config
    prediction_response = schemas.predict_response_model()  # the tasks registered now

    async def served(slot: Any, examples: list[Example]) -> list[dict[str, Any]]:
        """Predictions of `examples` through the micro-batcher, recorded for metrics/monitor."""
        features = slot.encode(examples, config.truncation)
        predictions = await service.batcher.submit(slot.predictor, features, examples)
        service.observer.record(slot, predictions)
        return predictions

    def user(
        api_key: Annotated[str | None, Depends(_api_key)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if not service.api_keys:
            return
        given = presented_key(f"Bearer {bearer.credentials}" if bearer else None, api_key)
        if not key_matches(given, service.api_keys):
            raise HTTPException(
                401, "missing or wrong API key: send X-API-Key or Authorization: Bearer <key>"
            )

    def admin(
        api_key: Annotated[str | None, Depends(_api_key)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if not service.admin_keys:
            raise HTTPException(403, "admin endpoints are off: start the server with --admin-key")
        given = presented_key(f"Bearer {bearer.credentials}" if bearer else None, api_key)
        if not key_matches(given, service.admin_keys):
            raise HTTPException(401, "missing or wrong admin key")

    @app.get("/health", tags=["status"], summary="Liveness: the process answers.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["status"], summary="Readiness: a model is loaded.")
    async def ready() -> JSONResponse:
        if service.slot is None or (config.knowledge.documents and service.knowledge is None):
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "model_version": service.slot.version})

    @app.get(
        "/metrics",
        tags=["status"],
        summary="Prometheus metrics (behind the API key when keys are set, unless metrics_public).",
        dependencies=[] if config.metrics_public else [Depends(user)],
    )
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @app.get(
        "/v1/info",
        tags=["model"],
        response_model=schemas.Info,
        responses=ERRORS,
        dependencies=[Depends(user)],
    )
    async def info() -> schemas.Info:
        slot = service.ready_slot()
        if config.knowledge.documents and service.knowledge is None:
            raise HTTPException(503, "the knowledge base is still loading; retry in a moment")
        meta = slot.predictor.meta
        return schemas.Info(
            model_version=slot.version,
            model_dir=str(slot.predictor.directory or ""),
            task=slot.task,
            output=slot.predictor.task.output,
            takes_pairs=slot.predictor.task.takes_pairs,
            chat=slot.predictor.task.chat,
            knowledge_passages=len(service.knowledge.passages) if service.knowledge else None,
            labels=list(slot.predictor.task.labels),
            tag_scheme=meta.get("tag_scheme"),
            max_length=slot.predictor.max_length,
            precision=info_precision(slot),
            base_model=meta.get("base_model"),
            method=meta.get("method"),
            metrics=meta.get("metrics") or {},
            label_distribution=meta.get("label_distribution") or {},
            created=meta.get("created"),
            bridgetune_version=meta.get("bridgetune_version"),
            limits={
                "max_texts": config.max_texts,
                "max_body_bytes": config.max_body_bytes,
                "truncation": config.truncation,
            },
        )

    def info_precision(slot: Any) -> str:
        if not slot.predictor.task.generative or config.precision in ("bf16", "fp16"):
            return serving_precision(config.precision, slot.predictor.device)
        # generation keeps the model's dtype under 'auto' (bridgetune.serve.chat.engine_for)
        dtype = next(slot.predictor.model.parameters()).dtype
        return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), "fp32")

    @app.post(
        "/v1/predict",
        tags=["model"],
        response_model=prediction_response,
        response_model_exclude_none=True,
        responses=ERRORS,
        dependencies=[Depends(user)],
    )
    async def predict(body: schemas.PredictRequest) -> dict[str, Any]:
        """Labels and scores (classification) or entities with offsets (NER) for each text."""
        if len(body.texts) > config.max_texts:
            raise RequestError(
                413, f"{len(body.texts)} texts in one request; at most {config.max_texts}"
            )
        service.follow()
        slot = service.ready_slot()
        if slot.predictor.task.ranks:
            raise RequestError(422, "this ranking model answers POST /v1/rank (query, candidates)")
        if slot.predictor.task.generative:
            raise RequestError(
                422, "this generative model answers POST /v1/chat/completions and /v1/generate"
            )
        predictions = await served(slot, slot.examples(body.texts, body.text_pairs))
        return {"model_version": slot.version, "task": slot.task, "predictions": predictions}

    @app.post(
        "/v1/rank",
        tags=["model"],
        response_model=schemas.RankResponse,
        responses=ERRORS,
        dependencies=[Depends(user)],
    )
    async def rank(body: schemas.RankRequest) -> dict[str, Any]:
        """The candidates sorted by their score against the query, best first (ranking
        models: recommendation, search)."""
        if len(body.candidates) > config.max_texts:
            raise RequestError(
                413, f"{len(body.candidates)} candidates in one request; at most {config.max_texts}"
            )
        service.follow()
        slot = service.ready_slot()
        if not slot.predictor.task.ranks:
            raise RequestError(
                422, f"this {slot.task} model answers POST /v1/predict, not /v1/rank"
            )
        examples = [Example(text=body.query, candidates=body.candidates)]
        predictions = await served(slot, examples)
        ranked = predictions[0]["ranking"][: body.top_k]
        return {
            "model_version": slot.version,
            "task": slot.task,
            "ranking": [{**entry, "text": body.candidates[entry["index"]]} for entry in ranked],
            "truncated": predictions[0]["truncated"],
        }

    @app.post(
        "/v1/feedback",
        tags=["feedback"],
        status_code=201,
        response_model=schemas.FeedbackResponse,
        responses=ERRORS,
        dependencies=[Depends(user)],
    )
    def feedback(body: schemas.FeedbackRequest) -> schemas.FeedbackResponse:
        """Store a correction durably (acknowledged rows survive a crash)."""
        slot = service.ready_slot()
        if service.store is None:
            raise HTTPException(503, "no feedback store: start the server with feedback_db set")
        text = body.text
        if slot.predictor.task.generative:
            text, label = generation_feedback(slot, body)
        elif text is None or body.messages is not None or body.rating is not None:
            raise RequestError(
                422, f"this {slot.task} model takes `text` and `label`; messages and rating are "
                "for generative models",
            )  # fmt: skip
        else:
            entities = None
            if body.entities is not None:
                entities = [e.model_dump(exclude_none=True) for e in body.entities]
            label = feedback_label(slot, body.label, entities, text)
        predicted = body.predicted
        if isinstance(predicted, list) and predicted and not isinstance(predicted[0], str):
            predicted = [e.model_dump(exclude_none=True) for e in predicted]
        row, created = service.store.add(
            text=text,
            text_pair=body.text_pair,
            predicted=predicted,
            label=label,
            task=slot.task,
            model_version=slot.version,
            feedback_id=body.id,
        )
        if created:
            service.metrics.feedback.inc()
        return schemas.FeedbackResponse(
            id=row.id, created=row.created, stored=created, model_version=row.model_version
        )

    @app.post(
        "/admin/reload",
        tags=["admin"],
        response_model=schemas.ReloadResponse,
        responses={**ERRORS, 403: {"description": "Admin endpoints are off."}},
        dependencies=[Depends(admin)],
    )
    async def reload(body: schemas.ReloadRequest) -> schemas.ReloadResponse:
        """Load another model directory and switch to it; requests in flight finish on the old."""
        if service.reloading.locked():
            raise HTTPException(409, "a reload is already running")
        async with service.reloading:
            previous = service.slot.version if service.slot else ""
            slot = await service.reload(body.model_dir)
            service.publish()
        log.info("reloaded: now serving %s (was %s)", slot.version, previous)
        return schemas.ReloadResponse(
            model_version=slot.version, previous_version=previous, task=slot.task
        )

    add_chat_routes(app, service, user, ERRORS)
    page = _playground()

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)


def _playground() -> str:
    return resources.files("bridgetune.serve").joinpath("static/index.html").read_text("utf-8")
