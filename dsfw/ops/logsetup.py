"""structlog set-up, done once at start-up.

Events are rendered by structlog and written, one line each, to the process's
standard output: under ``twistd -n`` that is the terminal (or whatever the
supervisor captures), and daemonized ``twistd --logfile`` replaces it with a
file-like object that feeds twistd's log, so rotation keeps working.  Going
straight to stdout rather than through Twisted's logging framework matters:
a decision is logged for every request, and the framework's per-event work
was a measurable part of dsfw's per-request cost.

``console`` lines read ``TIME [level] event key=value ...``; ``json`` gives
one JSON object per line for machines; ``auto`` (the default) picks console
on a terminal and JSON lines anywhere else.  ``--log-file`` sends the events
to a file of their own (reopened on SIGHUP, for logrotate).  With ``--verbose`` debug events (the
original firewall's per-request lines: request received, policy queried with
its input, decision) are shown too.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

import structlog

try:
    import orjson
except ImportError:  # pragma: no cover - the standard library renders then
    orjson = None

_BARE = re.compile(r"[A-Za-z0-9_./:@-]+")

# One event, whatever a request carried (a 1 MB path, 100,000 deny messages,
# a 16 MB body in --verbose's input): each string at most MAX_VALUE_CHARS,
# the whole event about MAX_EVENT_CHARS.
MAX_VALUE_CHARS = 4096
MAX_EVENT_CHARS = 65536


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int):
        self.left = left


def _bounded(value: Any, budget: _Budget) -> Any:
    """``value`` with long strings cut and containers stopped once ``budget`` is spent.

    Costs what it keeps, not what it was given: a container is walked only
    while budget remains.
    """
    if isinstance(value, str):
        keep = min(len(value), MAX_VALUE_CHARS, max(budget.left, 0))
        budget.left -= keep + 8
        return value if keep == len(value) else f"{value[:keep]}...({len(value) - keep} more)"
    if isinstance(value, dict):
        out: dict = {}
        for i, (k, v) in enumerate(value.items()):
            if budget.left <= 0:
                out["..."] = f"{len(value) - i} more"
                break
            out[_bounded(k, budget) if isinstance(k, str) else k] = _bounded(v, budget)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = []
        for i, v in enumerate(value):
            if budget.left <= 0:
                items.append(f"...({len(value) - i} more)")
                break
            items.append(_bounded(v, budget))
        return items
    budget.left -= 8
    return value


def bound_event(_logger, _name, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: every event bounded in size (see ``MAX_EVENT_CHARS``).

    The budget is shared fairly: a huge field cannot crowd out the small ones
    logged next to it.  A traceback keeps its end, where the error is.
    """
    size = 0
    for v in event.values():  # the common event: short strings, empty containers
        if isinstance(v, str):
            size += len(v)
        elif isinstance(v, _CONTAINERS) and v:
            size = MAX_EVENT_CHARS
            break
    if size <= MAX_VALUE_CHARS:
        return event
    keys = [k for k, v in event.items() if k not in _OWN_KEYS and isinstance(v, _STRINGS)]
    left = MAX_EVENT_CHARS
    for i, key in enumerate(keys):
        value = event[key]
        share = left // (len(keys) - i)
        if key == "exception" and isinstance(value, str) and len(value) > share:
            event[key] = f"...({len(value) - share} characters before)" + value[-share:]
            left -= share
            continue
        budget = _Budget(share)
        event[key] = _bounded(value, budget)
        left -= share - max(budget.left, 0)
    return event


_OWN_KEYS = frozenset({"event", "level", "timestamp"})
_CONTAINERS = (dict, list, tuple, set, frozenset)
_STRINGS = (str, *_CONTAINERS)


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v if _BARE.fullmatch(v) else json.dumps(v)
    if v is True or v is False or v is None or isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, default=str, separators=(",", ":"))


def render_console(_logger, _name, event: dict[str, Any]) -> str:
    """``2026-11-29T04:00:00Z [info] policy.decision allowed=true path=/_ping ...``."""
    ts = event.pop("timestamp", "")
    level = event.pop("level", "")
    name = event.pop("event", "")
    exc = event.pop("exception", None)
    rest = " ".join(f"{k}={_value(v)}" for k, v in event.items())
    line = f"{ts} [{level}] {name} {rest}".rstrip()
    return f"{line}\n{exc}" if exc else line


_stream_for_pid: tuple[int, Any] = (-1, None)
_pid = os.getpid()  # kept current by a fork hook: asking the kernel per event line cost a syscall


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _output_stream():
    """Where event lines go: the process's real stdout, unless it is /dev/null.

    Under ``twistd -n`` file descriptor 1 is the terminal, pipe or file the
    operator chose, and writing there directly skips Twisted's per-event log
    machinery (``sys.stdout`` is twistd's log redirector).  Daemonized, fd 1 is
    /dev/null and ``sys.stdout`` feeds ``--logfile``: use that.  Decided once
    per process id, because daemonizing forks after start-up has logged.
    """
    global _stream_for_pid
    pid = _pid
    if _stream_for_pid[0] != pid:
        stream = sys.stdout
        real = sys.__stdout__
        try:
            if real is not None and not _is_dev_null(real.fileno()):
                stream = real
        except (OSError, ValueError):
            pass
        _stream_for_pid = (pid, stream)
    return _stream_for_pid[1]


def _is_dev_null(fd: int) -> bool:
    st = os.fstat(fd)
    null = os.stat(os.devnull)
    return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)


class _LineLogger:
    """Writes one rendered event per line: to ``--log-file`` if given, else stdout."""

    def msg(self, message: str) -> None:
        out = _log_file or (_output_stream() if _direct else sys.stdout)
        out.write(message + "\n")
        out.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _terminal_output() -> bool:
    """Whether event lines currently go to a terminal (decides the ``auto`` format)."""
    out = _log_file or (_output_stream() if _direct else sys.stdout)
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _json_fallback(value: Any) -> str:
    return repr(value)


def render_json(_logger, _name, event: dict[str, Any]) -> str:
    """One JSON object, keys sorted, ASCII only (as ``json.dumps`` writes it).

    orjson renders a decision's line in a fraction of the standard library's
    time; whatever it refuses (lone surrogates, integers beyond 64 bits,
    non-string keys) or writes beyond ASCII is rendered by ``json.dumps``.
    """
    if orjson is not None:
        try:
            line = orjson.dumps(event, default=_json_fallback, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
        else:
            if line.isascii():
                return line.decode("ascii")
    return json.dumps(event, default=_json_fallback, sort_keys=True)


_json_renderer = render_json


def bounded(render):
    """``render``, with the event cut by :func:`bound_event` when its line is long.

    A line of at most ``MAX_VALUE_CHARS`` characters is within every bound
    already; checking the rendered line is cheaper than walking each event
    (every decision is logged), so only longer ones are bounded and rendered again.
    """
    def render_bounded(logger, name, event: dict[str, Any]) -> str:
        line = render(logger, name, event.copy())
        if len(line) <= MAX_VALUE_CHARS:
            return line
        return render(logger, name, bound_event(logger, name, event))
    return render_bounded


_LEVELS = {"warn": "warning", "exception": "error"}
_second: list = [-1, ""]


def _timestamp() -> str:
    """``2026-11-29T04:00:00.123456Z``; the date part is formatted once per second."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


def stamp(_logger, name: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: the level and an ISO-8601 UTC timestamp, in one step.

    What ``add_log_level`` and ``TimeStamper(fmt="iso", utc=True)`` add, at a
    fraction of their cost: every decision is logged, so this runs per request.
    """
    event["level"] = _LEVELS.get(name, name)
    event["timestamp"] = _timestamp()
    return event


def render_auto(logger, name, event: dict[str, Any]) -> str:
    """Human-readable lines on a terminal, JSON lines anywhere else (files, journald)."""
    if _tty_for_pid[0] != _pid:
        _tty_for_pid[:] = [_pid, _terminal_output()]
    return render_console(logger, name, event) if _tty_for_pid[1] else _json_renderer(
        logger, name, event)


_direct = False
_log_file = None
_log_path: str | None = None
_tty_for_pid: list = [-1, False]
FORMATS = ("auto", "console", "json")


def reopen_log_file() -> None:
    """Reopen ``--log-file`` (after logrotate moved it); wired to SIGHUP."""
    global _log_file
    if _log_path is not None:
        old, _log_file = _log_file, open(_log_path, "a", encoding="utf-8", buffering=1)
        if old is not None:
            old.close()


def configure(verbose: bool = False, fmt: str = "auto", direct: bool = True,
              log_file: str | None = None) -> None:
    """Configure structlog for the process.

    ``fmt`` is ``console``, ``json`` or ``auto`` (console on a terminal, JSON
    lines otherwise).  ``log_file`` appends event lines to that file instead
    of stdout.  ``direct`` writes to the real stdout when it is not /dev/null
    (the daemon's normal case); tests that capture ``sys.stdout`` pass False.
    """
    global _direct, _stream_for_pid, _log_path, _log_file
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    _direct = direct
    _stream_for_pid = (-1, None)
    _tty_for_pid[:] = [-1, False]
    _log_path, _log_file = log_file, None
    reopen_log_file()
    renderer = {"json": _json_renderer, "console": render_console, "auto": render_auto}[fmt]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            stamp,
            structlog.processors.format_exc_info,
            bounded(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO),
        logger_factory=lambda *args: _LineLogger(),
        cache_logger_on_first_use=True,
    )
