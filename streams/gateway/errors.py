"""Errors in OpenAI's format: ``{"error": {"message", "type", "param", "code"}}``.

OpenAI's clients read ``type`` and ``code`` to decide what to raise and whether to
retry (429 and 5xx are retried; 4xx are not), so each refusal keeps OpenAI's
meaning. Messages say what to do next and never quote a key, a prompt or any other
value from the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from streams.errors import SluiceError

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
INSUFFICIENT_QUOTA = "insufficient_quota"
SERVER = "server_error"
TIMEOUT = "timeout"
# A name worth echoing back: an identifier, never free text (which could be anything).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")


class OpenAIError(SluiceError):
    """An HTTP error answered in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI's clients parse."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None, code: str | None = None) -> OpenAIError:
    """400: the body is not a request this gateway can serve; ``param`` names the field."""
    return OpenAIError(400, message, param=param, code=code)


def unauthorized(message: str) -> OpenAIError:
    """401: no key, or not a live one."""
    return OpenAIError(401, message, type=AUTHENTICATION, code="invalid_api_key")


def model_not_found(model: str) -> OpenAIError:
    """404: the model is not in the catalog (named only when it is a plausible name)."""
    shown = model if _MODEL_NAME.fullmatch(model) else "asked for"
    return OpenAIError(
        404,
        f"The model `{shown}` does not exist; GET /v1/models lists the models you can use.",
        type=INVALID_REQUEST,
        param="model",
        code="model_not_found",
    )
