"""The exception tree: every error prefsync raises on purpose is a PrefsyncError."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "DecryptError",
    "ErasureError",
    "KeyUsageExceeded",
    "KeyringMismatch",
    "PrefsyncError",
    "StackError",
    "StoreUnavailable",
    "ValidationError",
]


class PrefsyncError(Exception):
    """Root of prefsync's own errors."""


class ConfigError(PrefsyncError):
    """A setting is missing or invalid."""


class KeyringMismatch(ConfigError):
    """The configured keyring does not match the data in Redis, e.g. a valid key
    file with other keys."""


class StackError(PrefsyncError):
    """The local Kafka and Redis stack could not be started or reached."""


class DecodeError(PrefsyncError):
    """A Kafka message is not a valid prefsync event in the Confluent wire format.

    ``error_class`` is a short, stable name for dead-letter headers and metrics.
    """

    def __init__(self, message: str, *, error_class: str, schema_id: int | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.schema_id = schema_id


class ValidationError(DecodeError):
    """An event decoded but breaks a domain rule (a negative balance, a card number)."""


class DecryptError(PrefsyncError):
    """A stored value failed authentication: tampered, moved or under an unknown key."""


class StoreUnavailable(PrefsyncError):
    """Redis could not be reached or answered with an error."""


class KeyUsageExceeded(PrefsyncError):
    """A key reached its encryption limit; rotate it before it encrypts again."""


class ErasureError(PrefsyncError):
    """A customer's erasure could not be completed; it is safe to run it again."""
