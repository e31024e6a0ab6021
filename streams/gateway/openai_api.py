"""The request bodies the gateway accepts, checked field by field, in OpenAI's terms.

Only what the pipeline can honour is accepted. A parameter that would change the
answer and that Sluice cannot apply (``n`` > 1, ``stop``, ``logprobs``, tools,
images, ``seed``, penalties, ...) is refused with 400 and its name, rather than
silently ignored: a client must not believe it got what it asked for. OpenAI's
``user`` field is accepted and ignored: the end-user id comes from the API key.

Errors name the parameter (``messages[2].content``) and what it must be, never the
value that was sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.gateway.errors import OpenAIError, invalid

# A parameter name worth echoing back; anything else is "a parameter".
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# pydantic names the member of a union that failed after the field: not a parameter.
_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
_VALUE_ERROR = "Value error, "
B = TypeVar("B", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=256)
    user: str | None = Field(None, max_length=256)


def _texts(value: Any, what: str) -> list[str]:
    """A string or a non-empty list of strings, as a list; ``ValueError`` otherwise."""
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = list(value)
    else:
        raise ValueError(
            f"{what} must be a string or a non-empty array of strings (token arrays are not "
            "supported)"
        )
    if any(not text for text in texts):
        raise ValueError(f"{what} must not be an empty string")
    return texts


class EmbeddingsBody(_Body):
    """``POST /v1/embeddings``."""

    input: list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> list[str]:
        return _texts(value, "input")


class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    include_usage: bool = False


class _Generation(_Body):
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=1, le=1, description="Only 1 (no nucleus sampling).")
    n: int | None = Field(None, ge=1, le=1, description="Only one choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _no_stop(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("stop sequences are not supported by this server")


class CompletionsBody(_Generation):
    """``POST /v1/completions``."""

    prompt: list[str]

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> list[str]:
        return _texts(value, "prompt")


class TextPart(BaseModel):
    """One text part of a message's content (images and audio are not supported)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a conversation (tool calls are not supported)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise ValueError("content must be a string or a non-empty array of text parts")
        if not all(isinstance(part, dict) and part.get("type") == "text" for part in value):
            raise ValueError("only text parts are supported (no images, audio or files)")
        return value

    @property
    def text(self) -> str:
        """The message's text, its parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatBody(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_limit(self) -> int | None:
        """The completion's limit: ``max_completion_tokens``, or the older ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


def parse_body(model: type[B], data: Any) -> B:
    """``data`` as a ``model``, or a 400 naming the first bad parameter."""
    if not isinstance(data, dict):
        raise invalid("The request body must be a JSON object.", None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _first_problem(exc.errors()) from None


def _first_problem(errors: Sequence[Any]) -> OpenAIError:
    error = errors[0]
    param = _param(error["loc"])
    if error["type"] == "extra_forbidden":
        return invalid(
            f"Unsupported parameter: {param or 'a parameter'} is not supported by this server.",
            param,
            code="unsupported_parameter",
        )
    if error["type"] == "missing":
        return invalid(f"Missing required parameter: {param}.", param, code="missing_parameter")
    message = str(error["msg"]).removeprefix(_VALUE_ERROR)
    return invalid(f"Invalid value for {param or 'a parameter'}: {message}.", param)


def _param(loc: Sequence[int | str]) -> str | None:
    """``messages[2].content`` from pydantic's location, stopping at union member names."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part not in _UNION_MEMBERS and _PARAM.fullmatch(part):
            text += f".{part}" if text else part
        else:
            break  # a union member ("list[TextPart]") or a name not worth echoing
    return text or None
