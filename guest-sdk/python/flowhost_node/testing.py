"""Native unit tests of a node (pytest), like the Rust SDK's harness: in-memory stores,
the batch framing run for real.

    from flowhost_node.testing import Harness
    h = Harness(config={"factor": 2}, stores=["counts"])
    assert h.run([b"hello"]) == [b"HELLO"]
"""

from __future__ import annotations

from typing import Any, Iterable

from . import frame
from .api import Instance, _payload

_stores: dict[str, "MemoryStore"] = {}
_granted: set[str] | None = None


class MemoryStore:
    """A store in memory with the host's semantics."""

    def __init__(self):
        self.data: dict[bytes, bytes] = {}

    def get(self, key):
        return self.data.get(key)

    def get_many(self, keys):
        return [self.data.get(k) for k in keys]

    def set(self, key, value):
        self.data[key] = value

    def set_many(self, entries):
        self.data.update(entries)

    def delete(self, key):
        return self.data.pop(key, None) is not None

    def incr(self, key, delta):
        raw = self.data.get(key)
        value = (int.from_bytes(raw, "little", signed=True) if raw else 0) + delta
        self.data[key] = value.to_bytes(8, "little", signed=True)
        return value

    def incr_many(self, keys, lengths, deltas):
        out, at = [], 0
        for n, d in zip(lengths, deltas):
            out.append(self.incr(keys[at : at + n], d))
            at += n
        return out

    def compare_and_swap(self, key, expected, replacement):
        if self.data.get(key) != expected:
            return False
        if replacement is None:
            self.data.pop(key, None)
        else:
            self.data[key] = replacement
        return True

    def scan(self, prefix, limit):
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))[:limit]


def memory_store(name: str) -> MemoryStore:
    from .api import NodeError

    if _granted is not None and name not in _granted:
        raise NodeError.fatal(f"store `{name}` is not granted to this node")
    return _stores.setdefault(name, MemoryStore())


def reset() -> None:
    """Forgets the registered node (a test module that defines several, one per test)."""
    from . import api

    api._registered = None


class Harness:
    """The registered node, instantiated as the host would, with `stores` granted."""

    def __init__(
        self,
        config: dict | None = None,
        stores: Iterable[str] = (),
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
    ):
        global _granted
        _stores.clear()
        _granted = set(stores)
        self.outputs = outputs or ["out"]
        self.instance = Instance(config or {}, inputs or ["in"], self.outputs)

    def store(self, name: str) -> MemoryStore:
        return memory_store(name)

    def batch(self, messages: Iterable[Any]) -> list[frame.Record | frame.Timer | frame.Error]:
        """Every item the node wrote for one batch of `messages` (bytes, str, JSON, or
        `frame.Record`s)."""
        records = [
            m if isinstance(m, frame.Record) else frame.Record(_payload(m)) for m in messages
        ]
        return frame.decode(self.instance.process(frame.encode(records)))

    def run(self, messages: Iterable[Any]) -> list[bytes]:
        """The payloads the node wrote for one batch; a failed message raises."""
        items = self.batch(messages)
        errors = [i for i in items if isinstance(i, frame.Error)]
        if errors:
            raise AssertionError(f"messages failed: {errors}")
        return [i.payload for i in items if isinstance(i, frame.Record)]

    def finish(self) -> list[bytes]:
        return [i.payload for i in frame.decode(self.instance.finish()) if isinstance(i, frame.Record)]

