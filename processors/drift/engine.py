"""The drift engine: signal monitors for a batch of records, alerts and checkpoints out.

Pure, no Kafka: the processor feeds it decoded records and produces what it
returns; unit tests and the benchmark drive it directly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from processors.drift.monitor import STATE_VERSION, MonitorParams, Position, SignalId, SignalMonitor
from processors.drift.online import RIVER_VERSION, StateVersionError
from processors.drift.reference import (
    CategoricalReference,
    NumericReference,
    RateReference,
    Reference,
)
from processors.drift.signals import Centroid, Observation
from streams.profiling.profiles import Profile, profile_key

log = logging.getLogger(__name__)
CENTROID_SUFFIX = ":embedding_centroid"


@dataclass(frozen=True)
class Checkpoint:
    """One record for ``drift.state``: the key and the Avro-ready value."""

    key: str
    value: dict[str, Any]


class DriftEngine:
    """Every watched signal of one processor instance."""

    def __init__(
        self,
        params: MonitorParams,
        profiles: Mapping[str, Profile] | None = None,
        states: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.params = params
        self.profiles = dict(profiles or {})
        self.monitors: dict[str, SignalMonitor] = {}
        self.centroids: dict[str, Centroid] = {}
        self._dirty: set[str] = set()
        # Each signal's state as of the last commit (the JSON its checkpoint carried), so
        # that an aborted batch can be undone: ``rollback`` restores what it touched.
        self._committed: dict[str, str] = {}
        # Checkpoints handed out for the batch in hand: committed with it, or dropped.
        self._pending: dict[str, str] = {}
        for key, value in (states or {}).items():
            self._restore(key, value)

    # -- restore ---------------------------------------------------------------------
    def _restore(self, key: str, value: Mapping[str, Any]) -> None:
        if value["format_version"] != STATE_VERSION:
            raise StateVersionError(
                f"drift.state for {key} has layout version {value['format_version']}; this drift "
                f"reads {STATE_VERSION}. Run the version that wrote it, or `sluice drift reset`."
            )
        # Keys are <subject_kind>:<subject>:<name>; names have no colon, subjects may.
        subject_key = key.rsplit(":", 1)[0]
        if self._profile_changed(subject_key, value):
            return
        self._committed[key] = value["state"]
        self._load(key, value["state"])

    def _load(self, key: str, state_json: str) -> None:
        state = json.loads(state_json)
        if key.endswith(CENTROID_SUFFIX):
            self.centroids[_centroid_model(key)] = Centroid.from_state(state)
            return
        self.monitors[key] = SignalMonitor.from_state(self.params, state)

    def _profile_changed(self, subject_key: str, value: Mapping[str, Any]) -> bool:
        profile = self.profiles.get(subject_key)
        current = profile.profile_id if profile is not None else None
        written = value.get("profile_id")
        if profile is not None and written != current:
            log.info(
                "%s: a new profile (%s) replaces the reference of %s; its detectors restart",
                subject_key,
                current,
                value["signal"],
            )
            return True
        return False

    # -- the hot path ----------------------------------------------------------------
    def cosine(self, model: str, vector: NDArray[np.float64]) -> float | None:
        """Cosine similarity of an embedding to the model's reference centroid."""
        centroid = self.centroids.get(model)
        if centroid is None:
            profile = self.profiles.get(profile_key("model", model))
            if profile is not None and profile.embedding is not None:
                centroid = Centroid(
                    self.params.warmup, profile.embedding.centroid, f"profile:{profile.profile_id}"
                )
            else:
                centroid = Centroid(self.params.warmup)
            self.centroids[model] = centroid
        if centroid.centroid is None:
            self._dirty.add(f"model:{model}{CENTROID_SUFFIX}")
        return centroid.cosine(vector)

    def observe(self, observations: Iterable[tuple[Observation, Position]]) -> list[dict[str, Any]]:
        """Feed (signal, value) pairs in stream order; returns the alerts, Avro-ready."""
        grouped: dict[SignalId, tuple[list[Any], list[Position]]] = {}
        for (signal, value), position in observations:
            bucket = grouped.get(signal)
            if bucket is None:
                bucket = grouped[signal] = ([], [])
            bucket[0].append(value)
            bucket[1].append(position)
        alerts: list[dict[str, Any]] = []
        now = int(time.time() * 1000)
        for signal, (values, positions) in grouped.items():
            monitor = self.monitors.get(signal.key)
            if monitor is None:
                monitor = self.monitors[signal.key] = SignalMonitor(
                    signal, self.params, self._reference(signal)
                )
            for alert in monitor.observe(values, positions):
                alert["detected_at"] = now
                alerts.append(alert)
            self._dirty.add(signal.key)
        return alerts

    def _reference(self, signal: SignalId) -> Reference | None:
        """The signal's reference from its subject's profile, if the profile covers it."""
        profile = self.profiles.get(profile_key(signal.subject_kind, signal.subject))
        if profile is None:
            return None
        source = f"profile:{profile.profile_id}"
        if signal.kind == "numeric":
            numeric = profile.numeric_field(signal.name)
            return NumericReference.from_profile(numeric, source) if numeric else None
        if signal.kind == "categorical":
            categorical = profile.categorical_field(signal.name)
            return CategoricalReference.from_profile(categorical, source) if categorical else None
        return self._rate_reference(profile, signal.name, source)

    @staticmethod
    def _rate_reference(profile: Profile, name: str, source: str) -> RateReference | None:
        if name == "error_rate":
            errors = profile.numeric_field("error")
            if errors is None or errors.count == 0:
                return None
            return RateReference(float(errors.mean or 0.0), errors.count, source)
        field = name.removesuffix(".null_rate")
        found = profile.numeric_field(field) or profile.categorical_field(field)
        if found is None:
            return None
        total = found.count + found.null_count
        return RateReference(found.null_count / total, total, source) if total else None

    # -- checkpoints -----------------------------------------------------------------
    def committed(self) -> None:
        """The checkpoints handed out so far are committed: start a new change set."""
        self._committed.update(self._pending)
        self._pending.clear()
        self._dirty.clear()

    def rollback(self) -> None:
        """Undo everything since the last ``committed()``: the batch will be processed again.

        Every signal touched since then gets back the state of its last committed
        checkpoint; a signal first seen since then is forgotten.
        """
        for key in self._dirty:
            committed = self._committed.get(key)
            if committed is not None:
                self._load(key, committed)
            elif key.endswith(CENTROID_SUFFIX):
                self.centroids.pop(_centroid_model(key), None)
            else:
                self.monitors.pop(key, None)
        self._pending.clear()
        self._dirty.clear()

    def checkpoints(self) -> list[Checkpoint]:
        """State records of every signal that changed since the last ``committed()``."""
        out: list[Checkpoint] = []
        now = int(time.time() * 1000)
        for key in sorted(self._dirty):
            if key.endswith(CENTROID_SUFFIX):
                model = _centroid_model(key)
                centroid = self.centroids[model]
                out.append(self._checkpoint(key, "model", model, centroid.n, centroid.state(), now))
                continue
            monitor = self.monitors[key]
            signal = monitor.signal
            out.append(
                self._checkpoint(
                    key, signal.subject_kind, signal.subject, monitor.seen, monitor.state(), now
                )
            )
        return out

    def _checkpoint(  # noqa: PLR0917 (private)
        self, key: str, kind: str, subject: str, seen: int, state: dict[str, Any], now: int
    ) -> Checkpoint:
        profile = self.profiles.get(profile_key(kind, subject))
        state_json = json.dumps(state, separators=(",", ":"))
        self._pending[key] = state_json
        return Checkpoint(
            key,
            {
                "signal": key,
                "format_version": STATE_VERSION,
                "river_version": RIVER_VERSION,
                "values_seen": seen,
                "profile_id": profile.profile_id if profile is not None else None,
                "state": state_json,
                "updated_at": now,
            },
        )


def _centroid_model(key: str) -> str:
    """The model of a centroid's state key (``model:<name>:embedding_centroid``)."""
    return key.removesuffix(CENTROID_SUFFIX).split(":", 1)[1]
