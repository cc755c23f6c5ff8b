"""Lines in the host's log, tagged with the node's name (printed natively)."""

_LEVELS = ("trace", "debug", "info", "warn", "error")


# (Imported when componentize-py snapshots the app; natively there is none.)
try:
    from wit_world.imports import log as _wit_log  # type: ignore[import-not-found]
except ImportError:
    _wit_log = None


def _log(level: int, message: str) -> None:
    if _wit_log is None:
        print(f"[{_LEVELS[level]}] {message}")
    else:
        _wit_log.log(_wit_log.Level(level), message)


def trace(message: str) -> None:
    _log(0, message)


def debug(message: str) -> None:
    _log(1, message)


def info(message: str) -> None:
    _log(2, message)


def warn(message: str) -> None:
    _log(3, message)


def error(message: str) -> None:
    _log(4, message)
