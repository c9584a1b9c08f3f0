"""Requests to dockerd held to the end of the reactor's turn when dsfw is busy.

dockerd (Go) parks its threads when no request is ready and wakes them for
the next: a request written the moment dsfw decides it wakes dockerd once per
request, and at 16 connections those wake-ups (about five context switches
per ``/_ping``) cost dockerd more CPU than answering it, on the cores dsfw
needs too.  When the previous turn of the reactor (one ``epoll_wait``'s worth
of reads) sent more than one request, the requests of this turn leave
together when it ends, so dockerd finds them ready at once.  A lone request
(one client, a quiet moment) still leaves the moment it is decided: holding
it would only add the rest of the turn to its latency (docs/benchmarks.md,
"The no-body request path").
"""
from __future__ import annotations

from dsfw.edge._twisted import write_now


class Outbox:
    """Whole messages for transports, written now or when the current reactor turn ends.

    Only for a message that nothing else is written after on the same
    transport in the same turn (a request to dockerd whose body, if any, is
    in ``data``): anything written directly would overtake it.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._held: list[tuple[object, bytes]] = []
        self._count = 0  # messages this turn
        self._busy = False  # the previous turn had more than one
        self._turn_end = None

    def write(self, transport, data: bytes) -> None:
        if self._turn_end is None:
            self._turn_end = self._reactor.callLater(0, self._end_turn)
        self._count += 1
        if self._busy or self._count > 1:
            self._held.append((transport, data))
        else:
            write_now(transport, data)

    def _end_turn(self) -> None:
        self._turn_end = None
        self._busy = self._count > 1
        self._count = 0
        self.flush()

    def flush(self) -> None:
        """Write what is held; a connection lost meanwhile gets nothing."""
        held, self._held = self._held, []
        for transport, data in held:
            if transport.connected:
                write_now(transport, data)
