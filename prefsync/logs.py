"""structlog set-up: JSON lines off a terminal, readable lines on one.

Tracebacks are rendered without local variables in both modes, because locals of the
hot path hold decrypted preferences and key material. Every string in an event is
passed through card-data redaction, a safety net behind the rule that log calls never
carry preference values.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from prefsync.domain.cards import redact_card_numbers

__all__ = ["configure_logging", "redact_card_data"]


def redact_card_data(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace card numbers and labelled CVVs in every (nested) string of ``event``."""
    for key, value in event.items():
        event[key] = _redact(value)
    return event


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_card_numbers(value)
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def configure_logging(level: str = "info", *, json_output: bool | None = None) -> None:
    """Configure structlog for the process. ``json_output`` defaults to "not a TTY"."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor
    tracebacks: list[structlog.typing.Processor]
    if json_output:
        renderer = structlog.processors.JSONRenderer()
        tracebacks = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    else:
        # plain_traceback never shows locals; the default (rich, when installed) does.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        tracebacks = [structlog.processors.format_exc_info]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tracebacks,
            redact_card_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
