"""Every error leaves the API as ``{"code": ..., "message": ...}`` with a 4xx/5xx status.

The OpenAPI document lists, for each operation, the statuses it answers: routers declare
theirs with ``documented`` (401 where a credential is needed, 404 where a lookup can miss),
and ``install`` documents the 400 ``invalid_request`` every malformed parameter gets, in
place of the 422 FastAPI would document.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from momently.engine.log_service import WriterUnavailable
from momently.engine.log_writer import WriterStopped

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


class ErrorBody(BaseModel):
    """A machine-readable code and a sentence for people; some errors add fields (details[])."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


def documented(statuses: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each described by the codes it carries."""
    return {status: {"model": ErrorBody, "description": codes} for status, codes in statuses.items()}


ADMIN_TOKEN = documented({401: "missing_admin_token or invalid_admin_token"})
WRITE_KEY = documented({401: "missing_write_key or invalid_write_key"})
LINK_PAGES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"text/html": {}}}
    for status, text in {
        400: "the link is not valid (cut short, tampered with)",
        404: "no such workspace",
        410: "the link has expired",
        503: "the answer could not be recorded now; try again",
    }.items()
}
INVALID_REQUEST = (
    "invalid_request: a parameter or a body field is missing or malformed (details[] says which)"
)


def storage_unavailable(what: str, exc: BaseException) -> ApiError:
    """A 503 for a database or log writer failure. The exception is logged here, not
    returned: its text names tables, hosts and queries, and says nothing a client can act
    on. What the client can do is retry."""
    log.warning("%s: answered 503: %s: %s", what, type(exc).__name__, exc)
    return ApiError(
        503,
        "storage_unavailable",
        "the database is unavailable right now; retry in a moment",
        headers={"Retry-After": "1"},
    )


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body = {"code": code, "message": message, **(extra or {})}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def install(app: FastAPI) -> None:
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_invalid_requests(default_openapi())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        details = [{"loc": list(e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()]
        return error_response(
            400, "invalid_request", "the request parameters are invalid", extra={"details": details}
        )

    async def _storage(request: Request, exc: Exception) -> Response:
        err = storage_unavailable(f"{request.method} {request.url.path}", exc)
        return error_response(err.status, err.code, err.message, err.headers)

    # the database unreachable, locked past its timeout, out of connections, or the log
    # writer stopped or restarting: a client may retry, so 503 rather than a 500 and a traceback
    for unavailable in (OperationalError, PoolTimeout, WriterStopped, WriterUnavailable):
        app.add_exception_handler(unavailable, _storage)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))


def _document_invalid_requests(doc: dict[str, Any]) -> None:
    """Malformed parameters answer 400 ``invalid_request`` (the handler above), not the 422 FastAPI
    documents for every operation that has parameters."""
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is None:
                continue
            if "400" in responses:
                responses["400"]["description"] += f"; or {INVALID_REQUEST}"
            else:
                responses["400"] = {
                    "description": INVALID_REQUEST,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
