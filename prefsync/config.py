"""Settings from ``PREFSYNC_*`` environment variables, defaulting to the local stack.

Secrets (encryption keys) are not settings: they come from :mod:`prefsync.crypto`'s key
sources, so printing a Settings object never reveals one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from prefsync.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "TopicNames"]

ENV_PREFIX = "PREFSYNC_"


@dataclass(frozen=True)
class TopicNames:
    """Kafka topic names. Every input topic is keyed by customer id."""

    profile: str = "crm.customer-profile"
    loyalty: str = "crm.loyalty"
    terminal_updates: str = "pos.preference-updates"
    dead_letter: str = "prefsync.dlq"
    snapshots: str = "prefsync.snapshots"
    applied: str = "prefsync.applied"
    defaults: str = "prefsync.defaults"
    keys: str = "prefsync.keys"
    erasures: str = "prefsync.erasures"
    audit: str = "prefsync.audit"

    def inputs(self) -> list[str]:
        """Return the topics the worker consumes."""
        return [self.profile, self.loyalty, self.terminal_updates]


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Build it with :meth:`from_env`."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    consumer_group: str = "prefsync-worker"
    topics: TopicNames = field(default_factory=TopicNames)
    topic_partitions: int = 6
    batch_max_messages: int = 2000
    poll_timeout_s: float = 0.5
    redis_retry_max_delay_s: float = 5.0
    max_message_bytes: int = 64 * 1024
    max_crm_version: int = 2**53 - 1
    max_future_skew_ms: int = 24 * 3600 * 1000
    schema_registry_url: str | None = None
    key_file: Path | None = None
    key_warn_at: int = 2**28
    key_hard_limit: int = 2**30
    data_key_cache_entries: int = 100_000
    keys_max_compaction_lag_ms: int = 24 * 3600 * 1000
    stack_dir: Path = Path(".stack")
    log_level: str = "info"
    worker_http_port: int = 9400
    worker_http_host: str = "127.0.0.1"
    readiness_max_pause_s: float = 30.0
    watermark_check_interval_s: float = 5.0
    group_instance_id: str | None = None
    max_poll_interval_ms: int = 300_000
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_rate_per_s: float = 20.0
    api_rate_burst: int = 40
    terminals_file: Path | None = None
    pseudonym_key_file: Path | None = None

    def __post_init__(self) -> None:
        for name, (low, high) in _BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(
                    f"invalid {ENV_PREFIX}{name.upper()} {value}: "
                    f"expected a value from {low} to {high}"
                )
        if self.log_level.lower() not in _LOG_LEVELS:
            raise ConfigError(
                f"invalid {ENV_PREFIX}LOG_LEVEL {self.log_level!r}: "
                f"expected one of {', '.join(_LOG_LEVELS)}"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read every ``PREFSYNC_<FIELD>`` variable, e.g. ``PREFSYNC_REDIS_URL``.

        Topic names use ``PREFSYNC_TOPIC_<NAME>``, e.g. ``PREFSYNC_TOPIC_PROFILE``.

        Raises:
            ConfigError: a variable holds a value of the wrong type or out of range.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name == "topics":
                continue
            raw = env.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _parse(item.name, raw, item.type)
        topic_values = {
            item.name: env[ENV_PREFIX + "TOPIC_" + item.name.upper()]
            for item in fields(TopicNames)
            if ENV_PREFIX + "TOPIC_" + item.name.upper() in env
        }
        return cls(topics=TopicNames(**topic_values), **values)

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"

    @property
    def key_path(self) -> Path:
        """Return ``key_file`` if set, else ``keys.json`` in the stack folder."""
        return self.key_file or self.stack_dir / "keys.json"

    @property
    def terminals_path(self) -> Path:
        """Return the terminals file: ``terminals_file``, else in the stack folder."""
        return self.terminals_file or self.stack_dir / "terminals.json"

    @property
    def pseudonym_key_path(self) -> Path:
        """Return the pseudonym key file: ``pseudonym_key_file``, else in the stack
        folder."""
        return self.pseudonym_key_file or self.stack_dir / "pseudonym.key"

    def redacted(self) -> dict[str, Any]:
        """Return the settings as a dict that is safe to log (no URL credentials)."""
        data = asdict(self)
        data["redis_url"] = _strip_password(self.redis_url)
        data["key_file"] = str(self.key_path)
        data["terminals_file"] = str(self.terminals_path)
        data["pseudonym_key_file"] = str(self.pseudonym_key_path)
        data["stack_dir"] = str(self.stack_dir)
        return data


# Inclusive ranges of numeric settings; values outside them are configuration errors.
_BOUNDS: dict[str, tuple[float, float]] = {
    "topic_partitions": (1, 1_000),
    "batch_max_messages": (1, 100_000),
    "poll_timeout_s": (0.001, 60),
    "redis_retry_max_delay_s": (0.01, 300),
    "max_message_bytes": (1_024, 16 * 1024 * 1024),
    # Below the largest Avro long, which `prefsync erase` uses to retire an id.
    "max_crm_version": (1, 2**63 - 2),
    "max_future_skew_ms": (0, 366 * 24 * 3600 * 1000),
    "api_port": (0, 65_535),
    "worker_http_port": (0, 65_535),
    "readiness_max_pause_s": (0.1, 86_400),
    "watermark_check_interval_s": (0.1, 3_600),
    # librdkafka's own limits for max.poll.interval.ms.
    "max_poll_interval_ms": (1, 86_400_000),
    "api_rate_per_s": (0.001, 1_000_000),
    "api_rate_burst": (1, 1_000_000),
}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _parse(name: str, raw: str, type_name: Any) -> Any:
    type_text = str(type_name)
    try:
        if type_text.startswith("bool"):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if type_text.startswith("int"):
            return int(raw)
        if type_text.startswith("float"):
            return float(raw)
        if "Path" in type_text:
            return Path(raw) if raw else None
        if type_text.startswith("str | None"):
            return raw or None
    except ValueError as exc:
        raise ConfigError(
            f"invalid value {raw!r} for {ENV_PREFIX}{name.upper()}: "
            f"expected {type_text}"
        ) from exc
    return raw


def _strip_password(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    _, _, host = rest.rpartition("@")
    return f"{scheme}://***@{host}"
