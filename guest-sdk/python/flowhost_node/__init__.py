"""Write flowhost dataflow nodes in Python: see `node`, `state`, `testing`."""

from . import log
from .component import WitWorld
from .api import Message, NodeError, Output, filter, flat_map, map, node
from .state import Store

__all__ = ["Message", "NodeError", "Output", "Store", "WitWorld", "filter", "flat_map", "log", "map", "node"]
