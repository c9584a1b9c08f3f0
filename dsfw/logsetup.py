"""structlog set-up, done once at start-up.

Events go through Twisted's logging system so that ``twistd -n`` prints them
and daemonized ``twistd --logfile`` writes them, with twistd's own rotation.
With ``--verbose`` debug events (the original firewall's per-request lines:
request received, policy queried with its input, decision) are shown too.
"""
from __future__ import annotations

import logging

import structlog
from twisted.logger import Logger

_twisted_log = Logger(namespace="dsfw")


class _TwistedLogger:
    """A structlog logger whose output is one Twisted log event per message."""

    def msg(self, message: str) -> None:
        _twisted_log.info("{dsfw_event}", dsfw_event=message)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure(verbose: bool = False, fmt: str = "console") -> None:
    """Configure structlog for the process; ``fmt`` is ``console`` or ``json``."""
    renderer = (structlog.processors.JSONRenderer(sort_keys=True) if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False, pad_event=0))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            *( [structlog.processors.TimeStamper(fmt="iso", utc=True)] if fmt == "json" else [] ),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO),
        logger_factory=lambda *args: _TwistedLogger(),
        cache_logger_on_first_use=True,
    )
