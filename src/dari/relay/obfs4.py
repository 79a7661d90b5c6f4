"""obfs4 on the relay: obfs4proxy's server side in front of the relay's own stream listener.

obfs4proxy accepts obfs4 connections on the public address and hands the de-obfuscated bytes (still
the client's TLS to the server) to TOR_PT_ORPORT, which we point at the relay's forwarder so that
limits and metrics apply to obfs4 clients as well.
"""

from __future__ import annotations

import os
import re

from dari.relay.pt import ManagedPT, PTError, launch

_BRIDGE_CERT = re.compile(r"cert=([A-Za-z0-9+/]+)\s+iat-mode=([0-9])")


def bridge_cert(state_dir: str) -> tuple[str, int]:
    """(cert, iat_mode) from obfs4_bridgeline.txt, which obfs4proxy writes on first start."""
    path = os.path.join(state_dir, "obfs4_bridgeline.txt")
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise PTError(f"no obfs4 bridge line in {state_dir}: start `dari relay --obfs4` once first ({exc})") from None
    m = _BRIDGE_CERT.search(text)
    if m is None:
        raise PTError(f"{path} holds no cert=... iat-mode=... bridge line")
    return m.group(1), int(m.group(2))


async def start_server(bind: str, orport: str, state_dir: str, binary: str | None = None) -> tuple[ManagedPT, str, int]:
    pt = await launch(transports=["obfs4"], state_dir=state_dir, binary=binary,
                      server={"TOR_PT_SERVER_BINDADDR": f"obfs4-{bind}", "TOR_PT_ORPORT": orport})
    method = pt.method("obfs4")
    try:
        cert, iat = bridge_cert(state_dir)
    except PTError:
        # Older obfs4proxy builds write no bridge line; the SMETHOD ARGS carry the same cert.
        if "cert" not in method.args:
            await pt.close()
            raise
        cert, iat = method.args["cert"], int(method.args.get("iat-mode", "0"))
    return pt, cert, iat
