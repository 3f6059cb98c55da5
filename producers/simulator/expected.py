"""Expected-state files: every customer's expected view as JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from producers.simulator.model import View


class ExpectedWriter:
    """Write expected views as JSON Lines, one ``{"customer_id", "view"}`` per line.

    Lines are written in call order. :class:`CrmSimulator` reports customers in id
    order, so a file written during a pass is sorted by id.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("w", encoding="utf-8")
        self.written = 0

    def write(self, customer_id: str, view: View | None) -> None:
        """Append one customer's expected view (None when nothing is visible)."""
        line = json.dumps(
            {"customer_id": customer_id, "view": view},
            ensure_ascii=False,
            sort_keys=True,
        )
        self._file.write(line + "\n")
        self.written += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __enter__(self) -> ExpectedWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def write_expected(path: Path | str, expected: Mapping[str, View | None]) -> None:
    """Write ``expected`` to ``path`` as JSON Lines sorted by customer id."""
    with ExpectedWriter(path) as writer:
        for customer_id in sorted(expected):
            writer.write(customer_id, expected[customer_id])


def read_expected(path: Path | str) -> dict[str, View | None]:
    """Read a file written by :func:`write_expected` or :class:`ExpectedWriter`.

    Raises:
        ValueError: a line is not a JSON object with ``customer_id`` and ``view``.
    """
    expected: dict[str, View | None] = {}
    with Path(path).open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                expected[item["customer_id"]] = item["view"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"invalid expected-state line {number} in {path}: {exc}. Expected "
                    '{"customer_id": ..., "view": ...}'
                ) from exc
    return expected
