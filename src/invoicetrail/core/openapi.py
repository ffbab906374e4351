"""OpenAPI: the Errors shape on every 4xx/5xx and the real request body schemas.

Bodies are parsed by `core.http` (so the Idempotency-Key is checked before validation), so
routes name their body model here for the document instead of as a FastAPI parameter.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_BODY_MODELS: dict[str, type[BaseModel]] = {}


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    param: str | None
    retryable: bool
    request_id: str
    object: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("Missing, malformed or expired API key"),
    404: _error("No such object in this account (or a malformed id)"),
    429: _error("Rate limited; see Retry-After"),
    500: _error("A bug: never expected"),
    503: _error("Storage unavailable; retryable"),
}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid query parameter"),
    **COMMON_ERRORS,
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid request, named by param; idempotency key missing or invalid"),
    **COMMON_ERRORS,
    409: _error("State transition not allowed, duplicate business key or key in flight"),
    413: _error("Body too large"),
    415: _error("Body is not application/json"),
    422: _error("Idempotency-Key reused with a different request"),
}
IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1–255 characters; a replay returns the first answer byte for byte",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    _BODY_MODELS[model.__name__] = model
    return {
        "parameters": [IDEMPOTENCY_HEADER],
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
    }


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title="invoicetrail",
            version="1",
            openapi_version="3.1.0",
            description="Invoicing as a controlled chain: draft → open → paid → journal → ERP.",
            routes=app.routes,
        )
        _, definitions = models_json_schema(
            [(m, "validation") for m in _BODY_MODELS.values()],
            ref_template="#/components/schemas/{model}",
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in definitions.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        # Query parameters are validated into our 400 shape, never FastAPI's default 422.
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                default_422 = responses.get("422", {}).get("content", {})
                if "HTTPValidationError" in str(default_422):
                    del responses["422"]
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = document
        return document

    app.openapi = build  # type: ignore[method-assign]
