"""Typed errors raised by services; `core.http` maps them once to the SPEC error shape."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    code = "parameter_invalid"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        object_name: str | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.message = message
        self.param = param
        self.object_name = object_name
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": self.error_type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "retryable": self.retryable,
            "request_id": request_id,
        }
        if self.object_name is not None:
            error["object"] = self.object_name
        error.update(self.extra)
        return {"error": error}


class ValidationFailed(ApiError):
    status_code = 400


class ParameterMissing(ValidationFailed):
    code = "parameter_missing"


class NotFound(ApiError):
    status_code = 404
    code = "resource_missing"

    def __init__(self, object_name: str, object_id: str, *, param: str | None = None) -> None:
        super().__init__(
            f"No such {object_name}: '{object_id}'", param=param, object_name=object_name
        )


class Unauthorized(ApiError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Conflict(ApiError):
    status_code = 409


class InvalidTransition(Conflict):
    code = "invalid_state_transition"

    def __init__(self, object_name: str, object_id: str, current: str, action: str, needs: str):
        super().__init__(
            f"{object_name} {object_id} is {current}; {action} needs {needs}",
            object_name=object_name,
            extra={"current_status": current, "requested_action": action},
        )


class DuplicateExternalReference(Conflict):
    code = "duplicate_external_reference"

    def __init__(self, object_name: str, existing_id: str, external_reference: str) -> None:
        super().__init__(
            f"A {object_name} with external_reference '{external_reference}' already exists: "
            f"{existing_id}",
            param="external_reference",
            object_name=object_name,
            extra={"existing_id": existing_id},
        )


class IdempotencyError(ApiError):
    error_type = "idempotency_error"


class InternalError(ApiError):
    """Always a bug; the handler logs it."""

    status_code = 500
    error_type = "api_error"
    code = "internal_error"
    retryable = True


class StorageUnavailable(ApiError):
    status_code = 503
    error_type = "api_error"
    code = "storage_unavailable"
    retryable = True


def invariant(condition: bool, message: str) -> None:
    """Unlike `assert`, survives `python -O`: money invariants are never optional."""
    if not condition:
        raise AssertionError(f"invariant violated: {message}")
