"""The batch framing that crosses the host/guest boundary (guest-sdk/FRAMING.md).

One bytes buffer carries a whole batch; all integers little-endian::

    batch  := count:u32 item*
    record := flags:u8 port:u16 [timestamp:i64] [key_len:u32 key] payload_len:u32 payload
              header_count:u16 (name_len:u16 name value_len:u32 value)*
    error  := flags:u8(=0x80) kind:u8 input_index:u32 message_len:u32 message
    timer  := flags:u8(=0x40) op:u8 domain:u8 time:i64 key_len:u32 key
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HAS_KEY = 0x01
HAS_TIMESTAMP = 0x02
TIMER = 0x40
ERROR = 0x80

# Error kinds, as the WIT `error-kind` enum orders them.
INVALID_INPUT, RETRYABLE, FATAL = 0, 1, 2
# Timer ops and domains.
SET, DELETE, FIRED = 0, 1, 2
EVENT_TIME, PROCESSING_TIME = 0, 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


class FrameError(ValueError):
    """A batch that does not follow the framing."""


@dataclass
class Record:
    """A message: payload, optional key and timestamp (ms since the epoch), headers."""

    payload: bytes
    key: bytes | None = None
    timestamp: int | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    port: int = 0


@dataclass
class Timer:
    """A timer: set or deleted (output), or fired (input)."""

    op: int
    domain: int
    time: int
    key: bytes = b""


@dataclass
class Error:
    """Input message `input_index` failed (output batches only)."""

    kind: int
    input_index: int
    message: str


def decode(buf: bytes) -> list[Record | Timer | Error]:
    """The items of a batch, in order."""
    view = memoryview(buf)
    at = 0

    def take(n: int) -> memoryview:
        nonlocal at
        if at + n > len(view):
            raise FrameError(f"the batch ends at byte {len(view)}, {at + n} needed")
        part = view[at : at + n]
        at += n
        return part

    def u8() -> int:
        return take(1)[0]

    def u16() -> int:
        return _U16.unpack(take(2))[0]

    def u32() -> int:
        return _U32.unpack(take(4))[0]

    def i64() -> int:
        return _I64.unpack(take(8))[0]

    items: list[Record | Timer | Error] = []
    for _ in range(u32()):
        flags = u8()
        if flags == ERROR:
            kind, index = u8(), u32()
            items.append(Error(kind, index, bytes(take(u32())).decode()))
        elif flags == TIMER:
            op, domain, time = u8(), u8(), i64()
            items.append(Timer(op, domain, time, bytes(take(u32()))))
        else:
            port = u16()
            timestamp = i64() if flags & HAS_TIMESTAMP else None
            key = bytes(take(u32())) if flags & HAS_KEY else None
            payload = bytes(take(u32()))
            headers = []
            for _ in range(u16()):
                name = bytes(take(u16())).decode()
                headers.append((name, bytes(take(u32()))))
            items.append(Record(payload, key, timestamp, headers, port))
    if at != len(view):
        raise FrameError(f"{len(view) - at} bytes after the batch's last item")
    return items


def encode(items: list[Record | Timer | Error]) -> bytes:
    """A batch of `items`."""
    out = bytearray(_U32.pack(len(items)))
    for item in items:
        if isinstance(item, Error):
            message = item.message.encode()
            out += bytes((ERROR, item.kind)) + _U32.pack(item.input_index)
            out += _U32.pack(len(message)) + message
        elif isinstance(item, Timer):
            out += bytes((TIMER, item.op, item.domain)) + _I64.pack(item.time)
            out += _U32.pack(len(item.key)) + item.key
        else:
            flags = (HAS_KEY if item.key is not None else 0) | (
                HAS_TIMESTAMP if item.timestamp is not None else 0
            )
            out += bytes((flags,)) + _U16.pack(item.port)
            if item.timestamp is not None:
                out += _I64.pack(item.timestamp)
            if item.key is not None:
                out += _U32.pack(len(item.key)) + item.key
            out += _U32.pack(len(item.payload)) + item.payload
            out += _U16.pack(len(item.headers))
            for name, value in item.headers:
                raw = name.encode()
                out += _U16.pack(len(raw)) + raw + _U32.pack(len(value)) + value
    return bytes(out)
