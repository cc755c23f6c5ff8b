"""What the host calls: the `node` world's exports, over the registered node. An app
module re-exports `WitWorld` (`from flowhost_node import WitWorld`) and componentize-py
makes the component of it."""

from __future__ import annotations

import json

from .api import Instance, NodeError, _failure

# The bindings exist when componentize-py snapshots the app (a component imports nothing
# new at run time); natively there are none, and nothing here is called.
try:
    from componentize_py_types import Err  # type: ignore[import-not-found]
    from wit_world.imports import types  # type: ignore[import-not-found]
except ImportError:
    Err = types = None


def _err(e: BaseException):
    """`e` as the `node-error` the WIT result carries."""
    kind, text = _failure(e)
    return Err(types.NodeError(types.ErrorKind(kind), text))


class WitWorld:
    _instance: Instance | None = None

    def init(self, info) -> None:
        try:
            config = json.loads(info.config) if info.config else {}
            WitWorld._instance = Instance(config, list(info.inputs), list(info.outputs))
        except Exception as e:  # noqa: BLE001
            if not isinstance(e, NodeError):
                e = NodeError.fatal(f"init failed: {_failure(e)[1]}")
            raise _err(e) from None

    def process(self, input: bytes) -> bytes:
        if WitWorld._instance is None:
            raise _err(NodeError.fatal("process before init"))
        try:
            return WitWorld._instance.process(input)
        except Exception as e:  # noqa: BLE001 (end_batch, or a malformed batch)
            raise _err(e) from None

    def finish(self) -> bytes:
        if WitWorld._instance is None:
            return b"\0\0\0\0"
        try:
            return WitWorld._instance.finish()
        except Exception as e:  # noqa: BLE001
            raise _err(e) from None
