"""The local stack without Docker: ``sluice up``, ``sluice status``, ``sluice down``.

Everything lives in one state directory (``.sluice/`` by default): downloads in
``dist/``, data in ``data/``, logs in ``logs/``, pid files in ``run/``.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from streams.runtime.waiting import wait_until
from streams.settings import Settings
from streams.stack.components import Component, ComponentError, Kafka, SchemaRegistry
from streams.stack.connect_worker import Connect
from streams.stack.kafka_security import (
    client_environment,
    ensure_kafka_secrets,
    local_principal,
    secrets_dir,
)
from streams.stack.secrets import (
    budget_key_paths,
    dead_letter_key_path,
    ensure_budget_keys,
    ensure_dead_letter_key,
    ensure_verdict_keys,
    local_budget_keys,
    local_dead_letter_key,
    local_verdict_keys,
    verdict_key_paths,
)
from streams.stack.tenant_keys import (
    configured_tenants,
    ensure_tenants,
    local_tenant_registry,
    tenant_registry_path,
)
from streams.stack.triton import Triton

Report = Callable[[str], None]

#: Start order; ``down`` stops in reverse. Connect needs the broker (its state is in topics).
COMPONENTS: list[type[Component]] = [Kafka, SchemaRegistry, Connect, Triton]


def component_names() -> list[str]:
    """Every component the stack knows, in start order."""
    return [cls.name for cls in COMPONENTS]


def local_processor_environment(settings: Settings, processor: str = "") -> dict[str, str]:
    """Settings of ``processor`` that only the local stack knows, as environment variables.

    Processors never import the stack; ``sluice run`` adds these (without
    overriding anything set explicitly) so that, say, infer labels its results
    with the device the local Triton runs on, processors of prompt topics
    encrypt dead letters with the key ``sluice up`` made, guard signs its
    verdicts with the stack's private key and infer checks them with its public key,
    meter signs budgets with its own private key and guard checks them with its public key,
    and guard authenticates requests with the stack's tenant registry.

    Kafka credentials too, when the processor talks to the local broker (its bootstrap
    servers were not set to another cluster) and ``sluice up`` made them: its own
    principal when ``SLUICE_STACK__PROCESSOR_PRINCIPALS`` is true (the default), else the
    operator's.
    """
    device = Triton(settings).device()
    return {
        **_local_kafka_credentials(settings, processor),
        **local_dead_letter_key(settings),
        **local_verdict_keys(settings, processor),
        **local_tenant_registry(settings, processor),
        **local_budget_keys(settings, processor),
        **({"SLUICE_INFER__DEVICE": device} if device else {}),
    }


def _local_kafka_credentials(settings: Settings, processor: str) -> dict[str, str]:
    local_broker = f"127.0.0.1:{settings.stack.kafka_port}"
    if settings.kafka.bootstrap_servers != local_broker:
        return {}
    if not (secrets_dir(settings) / "passwords").is_dir():
        return {}
    return client_environment(settings, local_principal(settings, processor))


def _prefixed(report: Report, title: str, message: str) -> None:
    report(f"{title}: {message}")


@dataclass(frozen=True)
class ComponentStatus:
    """What ``sluice status`` shows for one component."""

    name: str
    title: str
    state: str  # healthy, starting, dead, stopped
    address: str
    pid: int | None
    detail: str


class Stack:
    """The local stack's components under one state directory."""

    def __init__(self, settings: Settings, only: list[str] | None = None) -> None:
        """Select ``only`` these components; by default those in ``SLUICE_STACK__COMPONENTS``."""
        self.settings = settings
        components = [cls(settings) for cls in COMPONENTS]
        selected = only if only is not None else settings.stack.components
        unknown = set(selected) - {c.name for c in components}
        if unknown:
            known = ", ".join(c.name for c in components)
            source = "--only" if only is not None else "SLUICE_STACK__COMPONENTS"
            raise ComponentError(
                f"unknown component(s) {', '.join(sorted(unknown))} in {source}; known: {known}"
            )
        self.components = [c for c in components if c.name in selected]

    def up(self, report: Report) -> None:
        """Fetch (once), configure and start each component that is not running; wait for health.

        Also makes the dead-letter encryption key of the local processors, guard's
        verdict keypair, meter's budget keypair, a signing keypair for each tenant the
        shipped configuration names, and the local broker's CA, certificate and passwords,
        once.
        """
        if ensure_dead_letter_key(self.settings):
            report(f"dead-letter encryption key: made {dead_letter_key_path(self.settings)} (0600)")
        if ensure_verdict_keys(self.settings):
            report(
                f"guard's verdict signing key: made {verdict_key_paths(self.settings)[0]} (0600)"
            )
        if ensure_budget_keys(self.settings):
            report(f"meter's budget signing key: made {budget_key_paths(self.settings)[0]} (0600)")
        made = ensure_tenants(self.settings, configured_tenants(self.settings))
        if made:
            report(
                f"tenants {', '.join(made)}: registered in "
                f"{tenant_registry_path(self.settings)} (0600), private keys beside it"
            )
        made = ensure_kafka_secrets(self.settings)
        if made:
            report(
                f"Kafka credentials: made {len(made)} files in {secrets_dir(self.settings)} (0600)"
            )
        for component in self.components:
            if component.process.is_running():
                try:
                    detail = component.probe()
                except Exception as exc:  # any failure means "not ready yet"
                    report(f"{component.title}: running, not answering yet ({exc}); waiting")
                    self._wait_healthy(component, report)
                else:
                    report(
                        f"{component.title}: already running at {component.address()} ({detail})"
                    )
                component.after_start(report)
                continue
            component.fetch(functools.partial(_prefixed, report, component.title))
            component.prepare()
            component.before_start(report)
            component.process.start(component.command(), env=component.environment())
            report(f"{component.title}: starting (log: {component.process.log_file})")
            self._wait_healthy(component, report)
            component.after_start(report)

    def _wait_healthy(self, component: Component, report: Report) -> None:
        last_error = detail = ""

        def healthy() -> bool:
            nonlocal last_error, detail
            if not component.process.is_running():
                raise ComponentError(
                    f"{component.title} exited during start-up. Last lines of "
                    f"{component.process.log_file}:\n{component.process.log_tail(30)}"
                )
            try:
                detail = component.probe()
            except Exception as exc:  # any failure means "not ready yet"
                last_error = str(exc)
                return False
            return True

        if wait_until(healthy, component.start_timeout_s, interval=0.5):
            report(f"{component.title}: healthy at {component.address()} ({detail})")
            return
        raise ComponentError(
            f"{component.title} did not become healthy within "
            f"{component.start_timeout_s:.0f}s ({last_error}). Last lines of "
            f"{component.process.log_file}:\n{component.process.log_tail(30)}"
        )

    def down(self, report: Report, purge: bool = False) -> None:
        """Stop what ``up`` started (by pid), in reverse order; ``purge`` deletes data and logs."""
        for component in reversed(self.components):
            if component.process.stop():
                report(f"{component.title}: stopped")
            else:
                report(f"{component.title}: not running")
        if purge:
            root = self.settings.stack.root
            for sub in ("data", "logs", "config", "run"):
                shutil.rmtree(root / sub, ignore_errors=True)
            report(f"purged data and logs under {root} (downloads in {root / 'dist'} kept)")

    def status(self) -> list[ComponentStatus]:
        """State of every component, probing the running ones."""
        result = []
        for component in self.components:
            pid = component.process.pid()
            if pid is None:
                dead = component.process.pid_file.exists()
                state = "dead" if dead else "stopped"
                detail = component.process.log_tail(8) if dead else ""
            else:
                try:
                    state, detail = "healthy", component.probe()
                except Exception as exc:
                    state, detail = "starting", f"not answering: {exc}"
            result.append(
                ComponentStatus(
                    component.name, component.title, state, component.address(), pid, detail
                )
            )
        return result
