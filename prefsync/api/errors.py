"""Errors the API turns into JSON responses with a status code and a stable code."""

from __future__ import annotations

from typing import Any

from prefsync.errors import PrefsyncError

__all__ = ["ApiError"]


class ApiError(PrefsyncError):
    """A failed request, reported to the terminal as JSON.

    ``code`` is a short stable name (``transaction_confirmed``); ``details`` contains
    structured context such as the item ids that still need acknowledgement.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}
