"""How the service answers errors: a RequestError with its status, a validation error as 422
with every problem named, and anything unexpected as a 500 with a request id the client can
quote (the traceback goes to the server log, not to the client)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bridgetune.serve.service import RequestError

log = logging.getLogger("bridgetune.serve")


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [_problem(item) for item in error.errors()]
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


def _problem(item: dict[str, Any]) -> str:
    """One validation error as "where: what" (a body that is not JSON: where it breaks)."""
    if item.get("type") == "json_invalid":
        position = item["loc"][-1] if len(item["loc"]) > 1 else 0
        reason = (item.get("ctx") or {}).get("error", item["msg"])
        return f"body: not valid JSON at character {position}: {reason}"
    where = ".".join(str(part) for part in item["loc"] if part != "body") or "body"
    return f"{where}: {item['msg']}"


def _plain(errors: Any) -> Any:
    """Validation errors as JSON: exceptions in ctx and non-JSON inputs (bytes, surrogates)
    become strings."""
    return [
        {k: (v if k in ("type", "msg") else _json_safe(v)) for k, v in item.items()}
        for item in errors
    ]


def _json_safe(value: Any) -> Any:
    """`value` when the response can carry it (NaN and infinities cannot: strict JSON)."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return repr(value)[:200]
    return value
