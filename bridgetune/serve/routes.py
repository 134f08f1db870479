"""The service's routes, by group: status (health, readiness, metrics), model (info, predict,
rank), feedback, admin (reload) and the playground page; the OpenAI-compatible chat routes are
in chat.py, relation extraction (/v1/extract) in extract.py. `add_routes` puts them all on an
app (bridgetune.serve.app builds the app)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from bridgetune.data.schema import Example
from bridgetune.serve import schemas
from bridgetune.serve.chat import add_chat_routes, generation_feedback
from bridgetune.serve.embeddings import add_embeddings_route
from bridgetune.serve.extract import add_extract_route
from bridgetune.serve.middleware import key_matches, presented_key
from bridgetune.serve.service import RequestError, feedback_label, serving_precision
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
    "/v1/extract",
    "/v1/generate",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/feedback",
    "/admin/reload",
)
JSON_BODIES = (
    "/v1/predict",
    "/v1/rank",
    "/v1/extract",
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
    503: {
        "description": "The model is still loading, or could not be loaded (the detail says why)."
    },
}
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)

Guard = Callable[..., None]


def add_routes(app: FastAPI, service: Service) -> None:
    """Every route of the service on `app`, behind the keys `service` holds."""
    user, admin = guards(service)
    add_status_routes(app, service, user)
    add_model_routes(app, service, user)
    add_extract_route(app, service, user, ERRORS)
    add_embeddings_route(app, service, user, ERRORS)
    add_feedback_route(app, service, user)
    add_admin_routes(app, service, admin)
    add_chat_routes(app, service, user, ERRORS)
    add_playground(app)


def guards(service: Service) -> tuple[Guard, Guard]:
    """The dependencies that check the API key of predict/feedback and the admin key."""

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

    return user, admin


def add_status_routes(app: FastAPI, service: Service, user: Guard) -> None:
    config = service.config

    @app.get("/health", tags=["status"], summary="Liveness: the process answers.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["status"],
        summary="Readiness: a model is loaded (else `error` says why loading failed).",
    )
    async def ready() -> JSONResponse:
        if service.slot is None or (config.knowledge.documents and service.knowledge is None):
            error = service.load_error or service.knowledge_error
            body = {"ready": False, **({"error": error} if error else {"loading": True})}
            return JSONResponse(body, status_code=503)
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


def add_model_routes(app: FastAPI, service: Service, user: Guard) -> None:
    config = service.config
    prediction_response = schemas.predict_response_model()  # the tasks registered now

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
            if service.knowledge_error:
                raise HTTPException(503, f"no knowledge base: {service.knowledge_error}")
            raise HTTPException(503, "the knowledge base is still loading; retry in a moment")
        return model_info(service, slot)

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
        predictions = await served(service, slot, slot.examples(body.texts, body.text_pairs))
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
            route = "chat/completions" if slot.predictor.task.generative else "predict"
            raise RequestError(
                422, f"this {slot.task} model does not rank candidates; it answers POST /v1/{route}"
            )
        examples = [Example(text=body.query, candidates=body.candidates)]
        predictions = await served(service, slot, examples)
        ranked = predictions[0]["ranking"][: body.top_k]
        return {
            "model_version": slot.version,
            "task": slot.task,
            "ranking": [{**entry, "text": body.candidates[entry["index"]]} for entry in ranked],
            "truncated": predictions[0]["truncated"],
        }


async def served(service: Service, slot: Any, examples: list[Example]) -> list[dict[str, Any]]:
    """Predictions of `examples` through the micro-batcher, recorded for metrics/monitor."""
    features = slot.encode(examples, service.config.truncation)
    predictions = await service.batcher.submit(slot.predictor, features, examples)
    service.observer.record(slot, predictions)
    return predictions


def model_info(service: Service, slot: Any) -> schemas.Info:
    """/v1/info: what is served, how, and the limits of a request."""
    config, meta = service.config, slot.predictor.meta
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
        precision=info_precision(service, slot),
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


def info_precision(service: Service, slot: Any) -> str:
    precision = service.config.precision
    if not slot.predictor.task.generative or precision in ("bf16", "fp16"):
        return serving_precision(precision, slot.predictor.device)
    # generation keeps the model's dtype under 'auto' (bridgetune.serve.chat.engine_for)
    dtype = next(slot.predictor.model.parameters()).dtype
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), "fp32")


def add_feedback_route(app: FastAPI, service: Service, user: Guard) -> None:
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
        text, label = corrected(slot, body)
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


def corrected(slot: Any, body: schemas.FeedbackRequest) -> tuple[Any, Any]:
    """The text and the checked label a correction stores (the task checks the label)."""
    if slot.predictor.task.generative:
        return generation_feedback(slot, body)
    if body.text is None or body.messages is not None or body.rating is not None:
        raise RequestError(
            422, f"this {slot.task} model takes `text` and `label`; messages and rating are "
            "for generative models",
        )  # fmt: skip
    entities = None
    if body.entities is not None:
        entities = [e.model_dump(exclude_none=True) for e in body.entities]
    return body.text, feedback_label(slot, body.text, body.text_pair, body.label, entities)


def add_admin_routes(app: FastAPI, service: Service, admin: Guard) -> None:
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


def add_playground(app: FastAPI) -> None:
    page = resources.files("bridgetune.serve").joinpath("static/index.html").read_text("utf-8")

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)
