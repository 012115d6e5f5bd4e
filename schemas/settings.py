"""One settings object for every process, read from the environment (prefix ``RIPMAP_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.limits import MAX_FAILURES_PER_BATCH

ReasonerName = Literal["auto", "heuristic", "claude-cli", "anthropic"]


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"RIPMAP_{name.upper()}", *aliases)


class Settings(BaseSettings):
    """Every knob of the service. Unset ``redis_url`` means the embedded default."""

    model_config = SettingsConfigDict(env_prefix="RIPMAP_", extra="ignore")

    redis_url: str | None = Field(None, validation_alias=_env("redis_url", "REDIS_URL"))
    broker_url: str | None = Field(None, description="defaults to redis_url")
    # TLS for rediss:// URLs, broker and state store alike (state/store.py): the CA bundle
    # the server's certificate is verified against (None: the system's), a client
    # certificate and key for servers that ask for one (tls-auth-clients), and how strictly
    # the server's certificate is checked. ssl_* options in a URL's query win over these.
    redis_ssl_ca_certs: str | None = None
    redis_ssl_certfile: str | None = None
    redis_ssl_keyfile: str | None = None
    redis_ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    # Sentinel: the name of the master the sentinels monitor, for sentinel:// URLs
    # (``sentinel://host:port;sentinel://host:port/db``, broker and state store alike).
    sentinel_master: str | None = None
    data_dir: Path = Path(".ripmap")
    reasoner: ReasonerName = "auto"
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=_env("anthropic_api_key", "ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-sonnet-4-6"
    anthropic_max_tokens: Annotated[int, Field(ge=256, le=64_000)] = 4_096
    llm_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    llm_attempts: Annotated[int, Field(ge=1, le=10)] = 4
    llm_backoff_max_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0
    claude_cli_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 90.0
    batch_size: Annotated[int, Field(ge=1, le=MAX_FAILURES_PER_BATCH)] = 5
    episode_concurrency: Annotated[int, Field(ge=1, le=1024)] = 64
    merge_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    episode_log_retention: Annotated[int, Field(ge=10)] = 1_000
    insight_retention: Annotated[int, Field(ge=10)] = 2_000
    dedupe_ttl_seconds: Annotated[int, Field(ge=3_600)] = 14 * 86_400
    distill_interval_seconds: Annotated[float, Field(ge=1)] = 300.0
    distill_top_k: Annotated[int, Field(ge=1, le=200)] = 20
    prompt_top_k: Annotated[int, Field(ge=1, le=50)] = 5
    # Parameter versions: a consensus step is taken when consensus_quorum episodes voted on
    # the current version, or by the beat tick once the oldest vote waited
    # consensus_max_wait_seconds. One step multiplies a parameter by at most max_step_factor.
    consensus_quorum: Annotated[int, Field(ge=1, le=1_000)] = 4
    consensus_max_wait_seconds: Annotated[float, Field(ge=1)] = 120.0
    max_step_factor: Annotated[float, Field(gt=1.0, le=10.0)] = 2.0
    min_eval_cases: Annotated[int, Field(ge=1)] = 20
    rollback_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    # Trust region: the current version moves at most max_unevaluated_steps consensus steps
    # beyond the last version with an evaluation; further steps wait (votes kept) for one.
    max_unevaluated_steps: Annotated[int, Field(ge=1, le=1_000)] = 3
    # The closed loop (state/evaluations.py): each new version is scored on every registered
    # repository; a bounded sample of its failing cases comes back as episodes. An evaluation
    # whose task was lost is sent again after evaluate_redispatch_seconds.
    eval_failures_per_version: Annotated[int, Field(ge=0, le=10_000)] = 40
    evaluate_redispatch_seconds: Annotated[float, Field(ge=1, le=86_400)] = 900.0
    trajectory_length: Annotated[int, Field(ge=1, le=50)] = 8
    # versions kept in full (values, provenance); older ones are dropped, never the best
    version_retention: Annotated[int, Field(ge=10)] = 1_000
    # Streaming push: no failure waits for a full batch longer than push_max_wait_seconds
    # (the flusher runs every half of it and enqueues partial batches at least half of it
    # old); a batch taken but never confirmed sent (its pusher died) is re-sent after
    # push_resend_after_seconds.
    push_max_wait_seconds: Annotated[float, Field(ge=0.2, le=3_600)] = 10.0
    push_resend_after_seconds: Annotated[float, Field(ge=1, le=86_400)] = 60.0
    # The open-batch ledger's sweep (state/ledger.py): a batch sent longer ago than
    # ledger_check_after_seconds and found in no broker queue nor among the unacknowledged
    # messages, on two sweeps, is sent again. The sweep reads the queues only while they
    # hold at most ledger_scan_limit messages (a backlog is not lost, only waiting).
    ledger_check_after_seconds: Annotated[float, Field(ge=1, le=86_400)] = 60.0
    ledger_scan_limit: Annotated[int, Field(ge=100, le=1_000_000)] = 20_000
    # HTTP API. Bearer-token auth is off while api_token is unset or empty: set it in
    # production (any network but loopback).
    api_token: SecretStr | None = None
    api_max_body_bytes: Annotated[int, Field(ge=1_024, le=64 * 1024 * 1024)] = 2 * 1024 * 1024
    api_max_failures_per_request: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    # Anthropic API calls, fleet-wide (state/ratelimit.py, state/budget.py): requests and
    # tokens (input + cache creation + output) per llm_rate_window_seconds across every
    # worker, 0 = unlimited; a daily token budget (UTC day, all four usage counters summed,
    # 0 = no cap) that pauses new calls, queued episodes re-checking every
    # llm_pause_retry_seconds; llm_expected_output_tokens is reserved per call up front.
    llm_requests_per_minute: Annotated[int, Field(ge=0)] = 1_000
    llm_tokens_per_minute: Annotated[int, Field(ge=0)] = 500_000
    llm_rate_window_seconds: Annotated[int, Field(ge=1, le=3_600)] = 60
    llm_expected_output_tokens: Annotated[int, Field(ge=1, le=64_000)] = 1_024
    llm_daily_token_budget: Annotated[int, Field(ge=0)] = 0
    llm_pause_retry_seconds: Annotated[float, Field(ge=0.1, le=3_600)] = 60.0
    # Added to twice the worst-case episode to make the broker's visibility timeout (see
    # ``visibility_timeout``). Lower it only where redelivery must be seen fast (the chaos
    # tests): a timeout below a live episode's duration delivers that episode twice.
    visibility_margin_seconds: Annotated[float, Field(ge=1, le=3_600)] = 300.0

    @property
    def broker(self) -> str:
        """The broker URL: ``broker_url`` if set, else the state store's."""
        url = self.broker_url or self.redis_url
        if url is None:
            raise RuntimeError("no Redis URL: start the embedded service or set RIPMAP_REDIS_URL")
        return url

    @property
    def state_url(self) -> str:
        """The Redis holding the scratchpad, parameters and bookkeeping."""
        if self.redis_url is None:
            raise RuntimeError("no Redis URL: start the embedded service or set RIPMAP_REDIS_URL")
        return self.redis_url

    @property
    def visibility_timeout(self) -> int:
        """Seconds before the broker redelivers an unacknowledged task.

        Above the worst-case episode: every attempt timing out plus every backoff,
        with a margin, so a slow but live episode is never delivered twice.
        """
        worst = self.llm_attempts * (self.llm_timeout_seconds + self.llm_backoff_max_seconds)
        worst = max(worst, self.claude_cli_timeout_seconds)
        return int(worst * 2 + self.visibility_margin_seconds)


def get_settings() -> Settings:
    """Settings from the environment (read fresh each call: cheap, and tests change env)."""
    return Settings()
