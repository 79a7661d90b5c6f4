"""Reaching the server through a SOCKS5 proxy (Tor, obfs4proxy's client side, any other).

Names are resolved by the proxy (rdns), so a poisoned local resolver never sees them.
"""

from __future__ import annotations

import asyncio
import ssl

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, parse_proxy_url
from python_socks.async_.asyncio import Proxy

from dari.client.links import RouteFailure


async def open_via_socks(proxy_url: str, host: str, port: int, *, ssl: ssl.SSLContext | None = None,
                         server_hostname: str | None = None, username: str | None = None,
                         password: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """proxy_url: socks5://host:port. username/password carry obfs4's per-connection arguments."""
    # Proxy.from_url() would pass the URL's (empty) credentials as well as ours: build it by hand.
    kind, host_, port_, url_user, url_pass = parse_proxy_url(proxy_url)
    proxy = Proxy.create(kind, host_, port_, username=username or url_user or None,
                         password=password or url_pass or None, rdns=True)
    try:
        sock = await proxy.connect(dest_host=host, dest_port=port, timeout=10)
    except ProxyConnectionError as exc:
        raise RouteFailure(f"socks:{proxy_url}", "proxy", f"proxy unreachable: {exc}") from None
    except ProxyTimeoutError as exc:
        raise RouteFailure(f"socks:{proxy_url}", "proxy", f"proxy timed out: {exc}") from None
    except ProxyError as exc:
        raise RouteFailure(f"socks:{proxy_url}", "connect", f"proxy could not reach {host}:{port}: {exc}") from None
    return await asyncio.open_connection(sock=sock, ssl=ssl, server_hostname=server_hostname if ssl else None)
