"""Reading a request body the way tracking SDKs send it.

JSON whatever the Content-Type (analytics.js posts ``text/plain`` to avoid a CORS
preflight), optionally gzip-compressed, and never more than a limit: the raw body is cut
off as soon as it passes the limit, and decompression stops there too, so neither a
10 MB upload nor a gzip bomb costs more than the limit in memory.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from starlette.requests import Request

from momently.api.errors import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(400, "request_too_large", f"the request body may be at most {limit // 1024} KB")


async def read_json(request: Request, *, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        raw = _gunzip(raw, limit)
    elif encoding not in ("identity", ""):
        raise ApiError(
            400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    if not raw:
        raise ApiError(400, "invalid_json", "the request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _gunzip(raw: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, "invalid_gzip", f"the body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise _too_large(limit)
    if not inflater.eof:
        raise ApiError(400, "invalid_gzip", "the gzip body is truncated")
    return out
