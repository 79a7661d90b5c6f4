"""The network peer of the request being served, for features that show it (masked board IPs).

Transports set it per request (each frame is handled in its own task, so it never leaks between
requests); services read it. Behind a relay it is the relay's address, which is the point of one.
"""

from __future__ import annotations

from contextvars import ContextVar

current_peer: ContextVar[str] = ContextVar("dari_peer", default="")
