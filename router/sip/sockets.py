"""Counting the I/O queue sockets that calls with RTP media hold.

pjlib's I/O queue has a fixed number of socket handles
(`PJ_IOQUEUE_MAX_HANDLES`, 64 in the PyPI wheel with its select() queue).
A socket registered past it fails a C assert, which aborts the process, so
the router must never get there. Each call leg with real RTP media holds
two sockets (RTP and RTCP), and pjlib keeps a closed socket's handle for
500 ms (`PJ_IOQUEUE_KEY_FREE_DELAY`) before it can be reused, so a burst of
short calls holds far more handles than the calls in progress.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

SOCKETS_PER_LEG = 2
# Twice pjlib's 500 ms key-free delay, to stay clear of it.
LINGER_SECONDS = 1.0
# Handles kept for the SIP transports and for incoming TCP connections.
RESERVED_SOCKETS = 16


class SocketBudget:
    """Decides whether another leg with RTP media fits in the I/O queue.

    Used only on the pjsua2 owner thread, so it needs no lock.
    """

    def __init__(
        self,
        max_sockets: int,
        reserved: int = RESERVED_SOCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = max(0, max_sockets - reserved)
        self._clock = clock
        self._open = 0
        self._closing: deque[float] = deque()

    @property
    def in_use(self) -> int:
        """Return the sockets held by live legs and by recently ended ones."""
        now = self._clock()
        while self._closing and self._closing[0] <= now:
            self._closing.popleft()
        return self._open + len(self._closing) * SOCKETS_PER_LEG

    def can_open(self, legs: int = 1) -> bool:
        """Return whether `legs` more media legs fit."""
        return self.in_use + legs * SOCKETS_PER_LEG <= self.capacity

    def opened(self) -> None:
        """Count a leg whose media transport was created."""
        self._open += SOCKETS_PER_LEG

    def closed(self) -> None:
        """Count a leg that ended; its handles stay held for a while."""
        self._open = max(0, self._open - SOCKETS_PER_LEG)
        self._closing.append(self._clock() + LINGER_SECONDS)
