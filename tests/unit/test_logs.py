"""Log set-up: card data redacted from every line, tracebacks without locals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from prefsync.logs import configure_logging

SECRET_LOCAL = "canary-local-variable-4471"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Keep these tests' captured streams out of loggers that later tests use."""
    yield
    structlog.reset_defaults()


def _configure(json_output: bool) -> None:
    configure_logging(json_output=json_output)
    # A logger cached now would keep writing to this test's captured stream.
    structlog.configure(cache_logger_on_first_use=False)


def _fail() -> None:
    allergy_note = SECRET_LOCAL  # noqa: F841 - a local that must not be logged
    raise ValueError("lookup failed")


@pytest.mark.parametrize("json_output", [True, False])
def test_traceback_has_no_locals(
    json_output: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception logged in either mode does not show local variables."""
    _configure(json_output)
    try:
        _fail()
    except ValueError:
        structlog.get_logger().exception("consume.error")
    output = capsys.readouterr().err
    assert "lookup failed" in output
    assert SECRET_LOCAL not in output


@pytest.mark.parametrize("json_output", [True, False])
def test_card_data_redacted(
    json_output: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Card numbers and CVVs in any field, nested or in an exception, are masked."""
    _configure(json_output)
    try:
        raise ValueError("bad value 4111 1111 1111 1111")
    except ValueError:
        structlog.get_logger().exception(
            "store.retry", note="cvv: 123", nested={"x": ["5555555555554444"]}
        )
    output = capsys.readouterr().err
    assert "4111 1111 1111 1111" not in output
    assert "5555555555554444" not in output
    assert "cvv: 123" not in output
    assert "[REDACTED-PAN]" in output
