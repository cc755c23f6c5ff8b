"""Nodes in Python: `@map`, `@filter`, `@flat_map` for one function per message, `@node`
for a class with state (`__init__(config)`, `process(msg, out)`, `end_batch(out)`,
`finish(out)`). One node per component: the app module's `WitWorld` (re-exported by
this package) is what the host calls."""

from __future__ import annotations

import inspect
import json
import re
import traceback
from typing import Any, Callable, Iterable

from . import frame
from .frame import Record, Timer

# What an app registered; one node per component.
_registered: Callable[[dict], Any] | None = None


class NodeError(Exception):
    """A message (or, from `__init__`/`finish`, the node) failed: `kind` is
    `"invalid-input"` (the node's `on_error` policy applies), `"retryable"` (the host
    retries first) or `"fatal"`."""

    KINDS = {"invalid-input": frame.INVALID_INPUT, "retryable": frame.RETRYABLE, "fatal": frame.FATAL}

    def __init__(self, message: str, kind: str = "invalid-input"):
        if kind not in self.KINDS:
            raise ValueError(f"unknown error kind {kind!r}: one of {sorted(self.KINDS)}")
        super().__init__(message)
        self.kind = kind
        self.message = message

    @classmethod
    def retryable(cls, message: str) -> "NodeError":
        return cls(message, "retryable")

    @classmethod
    def fatal(cls, message: str) -> "NodeError":
        return cls(message, "fatal")


class Message:
    """One input message."""

    __slots__ = ("_record", "port")

    def __init__(self, record: Record, port: str = "in"):
        self._record = record
        self.port = port

    @property
    def payload(self) -> bytes:
        return self._record.payload

    @property
    def key(self) -> bytes | None:
        return self._record.key

    @property
    def timestamp(self) -> int | None:
        return self._record.timestamp

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return self._record.headers

    def header(self, name: str) -> bytes | None:
        return next((v for n, v in self._record.headers if n == name), None)

    def text(self) -> str:
        """The payload as UTF-8; invalid-input if it is not."""
        try:
            return self._record.payload.decode()
        except UnicodeDecodeError as e:
            raise NodeError(f"payload is not UTF-8: {e}") from None

    def json(self) -> Any:
        """The payload as JSON; invalid-input if it is not."""
        try:
            return json.loads(self._record.payload)
        except ValueError as e:
            raise NodeError(f"payload is not JSON: {e}") from None


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


class Output:
    """Where a node writes: records on its output ports, timers."""

    def __init__(self, outputs: list[str]):
        self._ports = {name: i for i, name in enumerate(outputs)}
        self._items: list[Record | Timer | frame.Error] = []
        self._key: bytes | None = None
        self._timestamp: int | None = None

    def emit(
        self,
        value: Any,
        *,
        port: str = "out",
        key: bytes | str | None = None,
        timestamp: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Writes `value` (bytes, str, or anything JSON) on `port`; by default with the
        input message's key and timestamp. A port nothing is connected to drops it."""
        at = self._ports.get(port)
        if at is None:
            return
        if isinstance(key, str):
            key = key.encode()
        self._items.append(
            Record(
                _payload(value),
                self._key if key is None else key,
                self._timestamp if timestamp is None else timestamp,
                list(headers or []),
                at,
            )
        )

    def set_timer(self, time: int, key: bytes = b"", *, processing_time: bool = False) -> None:
        domain = frame.PROCESSING_TIME if processing_time else frame.EVENT_TIME
        self._items.append(Timer(frame.SET, domain, time, key))

    def delete_timer(self, time: int, key: bytes = b"", *, processing_time: bool = False) -> None:
        domain = frame.PROCESSING_TIME if processing_time else frame.EVENT_TIME
        self._items.append(Timer(frame.DELETE, domain, time, key))


def _register(make: Callable[[dict], Any]) -> None:
    global _registered
    if _registered is not None:
        raise RuntimeError("one node per component: a second one was registered")
    _registered = make


class _Each:
    """A node of one function per message."""

    def __init__(self, each: Callable[[Message, Output], None]):
        self._each = each

    def process(self, msg: Message, out: Output) -> None:
        self._each(msg, out)


def _arg(fn: Callable) -> Callable[[Message], Any]:
    """`fn` takes the message, or, annotated `dict`/`list`/`str`/`bytes`, its JSON,
    text or payload."""
    first = next(iter(inspect.signature(fn).parameters.values()), None)
    wants = None if first is None or first.annotation is inspect.Parameter.empty else first.annotation
    return {
        dict: lambda m: fn(m.json()),
        list: lambda m: fn(m.json()),
        "dict": lambda m: fn(m.json()),
        "list": lambda m: fn(m.json()),
        str: lambda m: fn(m.text()),
        "str": lambda m: fn(m.text()),
        bytes: lambda m: fn(m.payload),
        "bytes": lambda m: fn(m.payload),
    }.get(wants, fn)


def map(fn: Callable) -> Callable:  # noqa: A001 (as the Rust SDK names it)
    """Each message becomes one: what `fn` returns (bytes, str, or JSON)."""
    call = _arg(fn)
    _register(lambda _config: _Each(lambda m, out: out.emit(call(m))))
    return fn


def filter(fn: Callable) -> Callable:  # noqa: A001
    """A message goes on unchanged when `fn` returns true."""
    call = _arg(fn)
    _register(lambda _config: _Each(lambda m, out: call(m) and out.emit(m.payload, headers=m.headers)))
    return fn


def flat_map(fn: Callable) -> Callable:
    """Each message becomes what `fn` yields, zero or more."""
    call = _arg(fn)

    def each(m: Message, out: Output) -> None:
        for value in call(m) or ():
            out.emit(value)

    _register(lambda _config: _Each(each))
    return fn


def node(cls: type) -> type:
    """A class node: `cls(config)` per instance (config: the manifest's table as a dict;
    a class whose `__init__` takes no parameter gets none), then `process(msg, out)` per
    message and, if it has them, `end_batch(out)` after each batch and `finish(out)`
    when every input has ended."""
    takes = len(inspect.signature(cls).parameters)
    _register(lambda config: cls(config) if takes else cls())
    return cls


def _failure(e: BaseException) -> tuple[int, str]:
    """An exception as an error item's kind and text."""
    if isinstance(e, NodeError):
        return NodeError.KINDS[e.kind], e.message
    where = traceback.extract_tb(e.__traceback__)[-1:]
    # (componentize-py mounts each source folder at /0, /1, …: the path within it.)
    at = f" at {re.sub(r'^/[0-9]+/', '', where[0].filename)}:{where[0].lineno}" if where else ""
    return frame.INVALID_INPUT, f"{type(e).__name__}: {e}{at}"


class Instance:
    """A registered node, instantiated: what `WitWorld` and the test harness drive."""

    def __init__(self, config: dict, inputs: list[str], outputs: list[str]):
        if _registered is None:
            raise NodeError.fatal("no node registered: decorate one with @map, @filter, @flat_map or @node")
        self.inputs = inputs
        self.outputs = outputs
        self.node = _registered(config)

    def process(self, batch: bytes) -> bytes:
        out = Output(self.outputs)
        for index, item in enumerate(frame.decode(batch)):
            mark = len(out._items)
            try:
                if isinstance(item, Timer):
                    on_timer = getattr(self.node, "on_timer", None)
                    if on_timer is not None:
                        out._key, out._timestamp = item.key, item.time
                        on_timer(item, out)
                    continue
                port = self.inputs[item.port] if item.port < len(self.inputs) else "in"
                out._key, out._timestamp = item.key, item.timestamp
                self.node.process(Message(item, port), out)
            except Exception as e:  # noqa: BLE001 (any guest exception fails its message)
                # A failing message's records are withdrawn with it (FRAMING.md).
                del out._items[mark:]
                kind, text = _failure(e)
                out._items.append(frame.Error(kind, index, text))
        out._key = out._timestamp = None
        end_batch = getattr(self.node, "end_batch", None)
        if end_batch is not None:
            end_batch(out)
        return frame.encode(out._items)

    def finish(self) -> bytes:
        out = Output(self.outputs)
        finish = getattr(self.node, "finish", None)
        if finish is not None:
            finish(out)
        return frame.encode([i for i in out._items if not isinstance(i, frame.Error)])
