"""Compact MessagePack encoding of a snapshot: the plaintext that gets encrypted.

Layout: ``[format, customer_id, erased, stamps, scalars, maps]``. Stamps are stored
once in a table and fields refer to them by index, because one event usually sets
several fields and a stamp is the largest part of a small snapshot.
"""

from __future__ import annotations

from typing import Any

import msgpack

from prefsync.domain.snapshot import (
    MAP_FIELDS,
    SCALAR_FIELDS,
    MapField,
    Snapshot,
    Stamp,
)
from prefsync.domain.view import build_view

__all__ = ["decode_snapshot", "decode_view", "encode_snapshot"]

FORMAT = 1
_SCALAR_IDS = {name: index for index, name in enumerate(SCALAR_FIELDS)}
_MAP_IDS = {name: index for index, name in enumerate(MAP_FIELDS)}


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """Serialize ``snapshot`` to bytes."""
    table: dict[Stamp, int] = {}

    def ref(stamp: Stamp) -> int:
        index = table.get(stamp)
        if index is None:
            index = table[stamp] = len(table)
        return index

    scalars = {_SCALAR_IDS[k]: [ref(s), v] for k, (s, v) in snapshot.scalars.items()}
    maps = {
        _MAP_IDS[name]: [
            None if m.cleared is None else ref(m.cleared),
            {key: [ref(s), v] for key, (s, v) in m.entries.items()},
        ]
        for name, m in snapshot.maps.items()
    }
    erased = None if snapshot.erased is None else list(snapshot.erased)
    stamps = [list(stamp) for stamp in table]
    body = [FORMAT, snapshot.customer_id, erased, stamps, scalars, maps]
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def decode_snapshot(data: bytes) -> Snapshot:
    """Parse bytes written by :func:`encode_snapshot`.

    Raises:
        ValueError: the bytes are not a snapshot of a known format.
    """
    body: list[Any] = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(body, list) or body[0] != FORMAT:
        raise ValueError("unknown snapshot format")
    _, customer_id, erased, stamp_list, scalars, maps = body
    stamps: list[Stamp] = [tuple(s) for s in stamp_list]
    snapshot = Snapshot(customer_id, None if erased is None else tuple(erased))
    snapshot.scalars = {
        SCALAR_FIELDS[field_id]: (stamps[index], value)
        for field_id, (index, value) in scalars.items()
    }
    snapshot.maps = {
        MAP_FIELDS[field_id]: MapField(
            None if cleared is None else stamps[cleared],
            {key: (stamps[index], value) for key, (index, value) in entries.items()},
        )
        for field_id, (cleared, entries) in maps.items()
    }
    return snapshot


def decode_view(data: bytes, customer_id: str) -> dict[str, Any] | None:
    """Return the view (:func:`prefsync.domain.view.to_view`) of the snapshot in
    ``data`` directly, without building the :class:`Snapshot` and its stamps.

    The terminal's read path: the same result as ``to_view(decode_snapshot(data))``
    in about half the time.

    Raises:
        ValueError: the bytes are not a snapshot of a known format, or belong to
            another customer than ``customer_id``.
    """
    body: list[Any] = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(body, list) or body[0] != FORMAT:
        raise ValueError("unknown snapshot format")
    _, stored_id, _erased, _stamps, scalars, maps = body
    if stored_id != customer_id:
        raise ValueError("snapshot of another customer")
    return build_view(
        customer_id,
        {
            SCALAR_FIELDS[field_id]: value
            for field_id, (_index, value) in scalars.items()
            if value is not None
        },
        {
            MAP_FIELDS[field_id]: {
                key: value
                for key, (_index, value) in entries.items()
                if value is not None
            }
            for field_id, (_cleared, entries) in maps.items()
        },
    )
