"""Creating the pseudonym key file while other processes start at the same time."""

from __future__ import annotations

import threading
from pathlib import Path

from prefsync.api.pseudonym import Pseudonymizer

LOADERS = 8


def _race(path: Path) -> tuple[list[str], list[Exception]]:
    """Let LOADERS threads load ``path`` with ``create`` at the same moment."""
    results: list[str] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(LOADERS)

    def load() -> None:
        barrier.wait()
        try:
            loader = Pseudonymizer.load(path, create=True, environ={})
            results.append(loader.pseudonym("C1"))
        except Exception as exc:  # collected for the caller's asserts
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(LOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_concurrent_create_same_key(tmp_path: Path) -> None:
    """Loaders racing to create one key file all load the same, complete key."""
    for round_number in range(40):
        path = tmp_path / f"round-{round_number}" / "pseudonym.key"

        results, errors = _race(path)

        assert errors == [], round_number
        assert len(set(results)) == 1, round_number
        assert sorted(p.name for p in path.parent.iterdir()) == ["pseudonym.key"]
