"""Errors as JSON in the spec's shape, never a traceback.

``{"object": "error", "message": ..., "type": "BadRequestError", "param": null, "code": 400}``
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

# OpenAI / vLLM error type names by status code.
_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: "RequestTooLargeError",
    499: "ClientClosedRequest",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class APIError(Exception):
    """An error answered to the client as JSON.

    Args:
        message: what went wrong, for the client.
        code: the HTTP status code.
        param: the request field at fault, when there is one.
    """

    def __init__(self, message: str, code: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; its pending work was dropped."""


def error_response(message: str, code: int = 400, param: str | None = None) -> JSONResponse:
    """The spec's error body with status ``code``."""
    try:
        err_type = _TYPES.get(code) or HTTPStatus(code).phrase.replace(" ", "") + "Error"
    except ValueError:
        err_type = "Error"
    body = {"object": "error", "message": message, "type": err_type, "param": param, "code": code}
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    return JSONResponse(body, status_code=code, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """One line per bad field; a union's failed branches become one "should be A or B"."""
    by_field: dict[str, list[dict]] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return f"Invalid JSON body: {ctx.get('error', err.get('msg', 'JSON decode error'))}"
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        by_field.setdefault(loc[0] if loc else "body", []).append({**err, "loc": loc})
    parts = []
    for name, errs in by_field.items():
        union = all(len(e["loc"]) > 1 and not e["loc"][1].isdigit() for e in errs)
        if len(errs) > 1 and union:  # a union: one error per branch
            branches = list(dict.fromkeys(e["loc"][1] for e in errs))
            parts.append(f"{name}: Input should be {' or '.join(branches)}")
        else:
            parts += [f"{'.'.join(e['loc']) or name}: {e.get('msg', 'invalid value')}{_got(e)}" for e in errs]
    return "; ".join(parts) or "Invalid request"


def _got(err: dict) -> str:
    """Pydantic's ``[type=literal_error, input_value=...]`` tail for a bad choice (vLLM's
    messages carry it), for short scalar inputs only."""
    value = err.get("input")
    if err.get("type") != "literal_error" or not isinstance(value, (str, int, float)):
        return ""
    if len(repr(value)) > 80:
        return ""
    return f" [type=literal_error, input_value={value!r}]"


def exception_response(exc: Exception, path: str) -> JSONResponse:
    """The answer to an exception an endpoint raised: an :class:`APIError` as it says, any
    other exception a logged 500 that names only its type."""
    if isinstance(exc, APIError):
        return error_response(exc.message, exc.code, exc.param)
    if isinstance(exc, StarletteHTTPException):
        return error_response(str(exc.detail), exc.status_code)
    logger.error("Internal error on %s", path, exc_info=exc)
    return error_response(f"Internal server error: {type(exc).__name__}", 500)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the spec's JSON shape."""

    @app.exception_handler(APIError)
    @app.exception_handler(StarletteHTTPException)
    @app.exception_handler(Exception)
    async def _raised(request: Request, exc: Exception) -> JSONResponse:
        return exception_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_message(exc), 400)
