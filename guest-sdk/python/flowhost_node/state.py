"""Stores the manifest grants a node (`state = { counts = "rw" }`), held by the host: they
outlive an instance's trap and a module swap, and every replica sees a write at once.
Keys and values are bytes (a str key is taken as UTF-8); counters are 8-byte
little-endian signed integers. As in the Rust SDK, batch: `get_many`, `set_many` and
`incr_many` cross into the host once for many keys.

Run natively (tests), a store is an in-memory one of `flowhost_node.testing`."""

from __future__ import annotations

from typing import Iterable

from .api import NodeError


def _bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


# The host's `state` interface inside a component; none natively. (Imported here, when
# componentize-py snapshots the app: a component imports nothing new at run time.)
try:
    from wit_world.imports import state as _wit_state  # type: ignore[import-not-found]
except ImportError:
    _wit_state = None


def _call(fn, *args):
    """A host call; its `node-error` as a NodeError."""
    try:
        return fn(*args)
    except Exception as e:  # componentize_py_types.Err(NodeError)
        value = getattr(e, "value", None)
        if value is None or not hasattr(value, "kind"):
            raise
        kind = {0: "invalid-input", 1: "retryable", 2: "fatal"}.get(
            getattr(value.kind, "value", value.kind), "fatal"
        )
        raise NodeError(value.message, kind) from None


class Store:
    """A granted store, opened by name; an ungranted one fails `open` (fatal)."""

    def __init__(self, name: str):
        host = _wit_state
        if host is None:
            from .testing import memory_store

            self._backend = memory_store(name)
            self._handle = None
        else:
            self._backend = host
            self._handle = _call(host.open, name)

    def _do(self, op: str, *args):
        fn = getattr(self._backend, op)
        return _call(fn, self._handle, *args) if self._handle is not None else fn(*args)

    def get(self, key: bytes | str) -> bytes | None:
        return self._do("get", _bytes(key))

    def get_many(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        return self._do("get_many", [_bytes(k) for k in keys])

    def set(self, key: bytes | str, value: bytes | str) -> None:
        self._do("set", _bytes(key), _bytes(value))

    def set_many(self, entries: Iterable[tuple[bytes | str, bytes | str]]) -> None:
        self._do("set_many", [(_bytes(k), _bytes(v)) for k, v in entries])

    def delete(self, key: bytes | str) -> bool:
        return self._do("delete", _bytes(key))

    def incr(self, key: bytes | str, delta: int = 1) -> int:
        return self._do("incr", _bytes(key), delta)

    def incr_many(self, deltas: Iterable[tuple[bytes | str, int]]) -> list[int]:
        keys, lengths, amounts = bytearray(), [], []
        for key, delta in deltas:
            raw = _bytes(key)
            keys += raw
            lengths.append(len(raw))
            amounts.append(delta)
        return self._do("incr_many", bytes(keys), lengths, amounts)

    def compare_and_swap(
        self, key: bytes | str, expected: bytes | None, replacement: bytes | None
    ) -> bool:
        return self._do("compare_and_swap", _bytes(key), expected, replacement)

    def scan(self, prefix: bytes | str = b"", limit: int = 1000) -> list[tuple[bytes, bytes]]:
        return self._do("scan", _bytes(prefix), limit)

    def counter(self, key: bytes | str) -> int:
        """A counter's value (0 if absent)."""
        raw = self.get(key)
        return int.from_bytes(raw, "little", signed=True) if raw else 0
