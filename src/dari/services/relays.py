"""relay.list: the relays this server vouches for, as signed descriptors plus signed revocations.

Only for logged-in sessions: handing relay addresses to anonymous callers would let a censor
enumerate and block them all with one request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dari.relay.registry import RelayRegistry
from dari.services.core import Caller, Core


class Relays:
    def __init__(self, core: Core) -> None:
        self.registry = RelayRegistry(core.settings.data_dir)

    async def list(self, caller: Caller | None, params: object) -> dict[str, Any]:
        # Reads (and on first use creates) small files in the data dir; keep the loop free meanwhile.
        return await asyncio.to_thread(self.registry.listing)
