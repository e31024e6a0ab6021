"""Kafka Connect from Sluice: connector files, placeholders, and the worker's REST API.

Connector configurations live in ``connectors/<name>.json`` in the shape Connect's
REST API takes (``{"name": ..., "config": {...}}``). One file has to work on a
laptop, in the tests and in production, so the few values that differ (ports,
paths, passwords) are written as placeholders and filled in at apply time:

* ``${SLUICE_NAME}`` takes the value of ``SLUICE_NAME``, looked up in this order:
  ``--var SLUICE_NAME=...`` on the command line, the environment, then the
  values Sluice derives from its settings (:func:`builtin_values`);
* ``${SLUICE_NAME:-default}`` falls back to ``default``.

Only ``SLUICE_``-prefixed names are placeholders: Connect's own config-provider
references (``${file:/path:key}``, ``${env:NAME}``) pass through untouched and are
resolved by the worker, which keeps secrets out of the config topic.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from streams.errors import SluiceError
from streams.settings import Settings, without_password

# A default may itself hold placeholders: the innermost (no "${" in its default) go first.
PLACEHOLDER = re.compile(r"\$\{(SLUICE_[A-Z0-9_]+)(?::-((?:(?!\$\{)[^}])*))?\}")


class ConnectError(SluiceError):
    """The worker refused a request, cannot be reached, or a connector file is wrong."""


@dataclass(frozen=True)
class Connector:
    """A connector's name and its configuration, ready to send to the worker."""

    name: str
    config: dict[str, str]


def builtin_values(settings: Settings) -> dict[str, str]:
    """Placeholder values Sluice knows from its settings, so files need no local paths."""
    return {
        "SLUICE_PROJECT_ROOT": str(settings.project_root),
        "SLUICE_SCHEMAS_DIR": str(settings.schemas_dir),
        "SLUICE_STATE_DIR": str(settings.stack.root),
        "SLUICE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "SLUICE_REGISTRY_URL": settings.registry.url,
    }


def substitute(text: str, values: Mapping[str, str], source: str) -> str:
    """Fill ``${SLUICE_...}`` placeholders in ``text``; name every one that has no value."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in values:
            return values[name]
        return match.group(0) if default is None else default

    for _ in range(8):  # enough for any sensible nesting of defaults
        expanded = PLACEHOLDER.sub(replace, text)
        if expanded == text:
            break
        text = expanded
    missing = sorted({match.group(1) for match in PLACEHOLDER.finditer(text)})
    if missing:
        raise ConnectError(
            f"{source} needs a value for {', '.join(missing)}: export it, or pass "
            f"--var {missing[0]}=<value> to `sluice connect apply`"
        )
    return text


def load_connector(
    path: Path,
    settings: Settings,
    *,
    variables: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connector:
    """Read a connector file, fill its placeholders, apply ``overrides`` and ``name``.

    ``overrides`` replace single settings of the rendered config (``--set``), e.g.
    another ``topic`` for a test; ``name`` replaces the connector's name, which is
    also what Connect keys a source connector's offsets by.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConnectError(f"cannot read connector file {path}: {exc.strerror}") from exc
    environment = os.environ if environ is None else environ
    values = {
        **builtin_values(settings),
        **{k: v for k, v in environment.items() if k.startswith("SLUICE_")},
        **(variables or {}),
    }
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConnectError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    if not isinstance(document, dict):
        raise ConnectError(f'{path} must hold a JSON object {{"name": ..., "config": {{...}}}}')
    # Connect's REST API accepts both shapes; so do we.
    config = document.get("config", document)
    if not isinstance(config, dict):
        raise ConnectError(f'{path}: "config" must be a JSON object of settings')
    rendered: dict[str, str] = {}
    for key, value in config.items():
        if key == "name":
            continue
        if isinstance(value, (dict, list)):
            raise ConnectError(
                f"{path}: setting {key!r} is a JSON {type(value).__name__}; "
                "Connect settings are strings (write lists as comma-separated strings)"
            )
        plain = value if isinstance(value, str) else json.dumps(value)
        rendered[key] = substitute(plain, values, f"{path} (setting {key!r})")
    rendered.update(overrides or {})
    final = name or document.get("name") or config.get("name")
    if not final or not isinstance(final, str):
        raise ConnectError(f'{path} has no connector name: add "name", or pass --name')
    return Connector(substitute(final, values, f"{path} (name)"), rendered)


@dataclass(frozen=True)
class TaskStatus:
    """One task of a connector."""

    id: int
    state: str
    worker: str
    trace: str = ""


@dataclass(frozen=True)
class ConnectorStatus:
    """A connector as the worker reports it."""

    name: str
    type: str
    state: str
    worker: str
    tasks: list[TaskStatus] = field(default_factory=list)
    trace: str = ""

    @property
    def healthy(self) -> bool:
        """Running, with every task running."""
        return (
            self.state == "RUNNING"
            and bool(self.tasks)
            and all(t.state == "RUNNING" for t in self.tasks)
        )

    @property
    def failed(self) -> bool:
        """The connector or one of its tasks failed (the trace says why)."""
        return self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks)


def parse_status(body: Mapping[str, Any]) -> ConnectorStatus:
    """A ``/connectors/<name>/status`` document as a ConnectorStatus."""
    connector = body.get("connector", {})
    return ConnectorStatus(
        name=str(body.get("name", "")),
        type=str(body.get("type", "?")),
        state=str(connector.get("state", "UNKNOWN")),
        worker=str(connector.get("worker_id", "")),
        trace=str(connector.get("trace", "")),
        tasks=[
            TaskStatus(
                id=int(task.get("id", 0)),
                state=str(task.get("state", "UNKNOWN")),
                worker=str(task.get("worker_id", "")),
                trace=str(task.get("trace", "")),
            )
            for task in body.get("tasks", [])
        ],
    )


class ConnectClient:
    """The REST API of a Connect cluster (any worker forwards to the leader)."""

    def __init__(
        self, url: str, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        #: The URL as messages show it: without a password.
        self.shown_url = without_password(self.url)
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectClient:
        """The worker the settings point at (the local stack's by default)."""
        return cls(settings.connect.url, settings.connect.timeout_s)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ConnectError(
                f"no Kafka Connect worker answers at {self.shown_url}: start the local stack with "
                "`sluice up`, or point SLUICE_CONNECT__URL at your Connect cluster"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ConnectError(
                f"Kafka Connect at {self.shown_url} did not answer within {self.timeout:.0f}s "
                "(it may be rebalancing; try again, or see its log)"
            ) from exc

    def _raise_if_missing(self, response: httpx.Response, name: str) -> None:
        if response.status_code == 404:
            raise ConnectError(
                f"no connector named {name!r} on {self.shown_url}; "
                "`sluice connect status` lists them"
            )

    def apply(self, connector: Connector) -> bool:
        """Create or update a connector (PUT is idempotent); True if it was created."""
        response = self._request(
            "PUT", f"/connectors/{_segment(connector.name)}/config", json=connector.config
        )
        if response.status_code in (200, 201):
            return response.status_code == 201
        raise ConnectError(
            f"Kafka Connect refused connector {connector.name!r}: {worker_message(response)}"
        )

    def status(self, name: str) -> ConnectorStatus:
        """Status of one connector and its tasks."""
        response = self._request("GET", f"/connectors/{_segment(name)}/status")
        self._raise_if_missing(response, name)
        _raise_for(response, f"status of {name!r}")
        body: dict[str, Any] = response.json()
        return parse_status(body)

    def statuses(self) -> list[ConnectorStatus]:
        """Every connector with its tasks, sorted by name."""
        response = self._request("GET", "/connectors", params={"expand": "status"})
        _raise_for(response, "listing connectors")
        body: dict[str, Any] = response.json()
        return sorted(
            (parse_status(entry["status"]) for entry in body.values() if "status" in entry),
            key=lambda s: s.name,
        )

    def delete(self, name: str) -> None:
        """Delete a connector (its source offsets stay in the offsets topic, keyed by name)."""
        response = self._request("DELETE", f"/connectors/{_segment(name)}")
        self._raise_if_missing(response, name)
        _raise_for(response, f"deleting {name!r}")

    def restart(self, name: str) -> None:
        """Restart a connector and its failed tasks (after fixing what the trace said)."""
        response = self._request(
            "POST",
            f"/connectors/{_segment(name)}/restart",
            params={"includeTasks": "true", "onlyFailed": "true"},
        )
        self._raise_if_missing(response, name)
        _raise_for(response, f"restarting {name!r}")


def _segment(name: str) -> str:
    return quote(name, safe="")


def worker_message(response: httpx.Response) -> str:
    """The worker's own explanation of a failed call (its JSON ``message``)."""
    try:
        body: Any = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text.strip()[:500]}"
    if isinstance(body, dict) and "message" in body:
        return f"HTTP {response.status_code}: {str(body['message']).strip()}"
    return f"HTTP {response.status_code}: {body}"


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise ConnectError(f"Kafka Connect failed {what}: {worker_message(response)}")
