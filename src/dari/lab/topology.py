"""The lab's network: namespaces joined by veth pairs around one router that plays the censor.

```
 censored clients 10.77.1.2..  --[cen1, cen2..]--+                  +-- server  10.77.10.2, .3
                                                |  censor router   |
 control  clients 10.77.2.2..  --[ctl1, ctl2..]--+  (nftables, tc,  +-- relay   10.77.11.2
                                                    middlebox)     +-- dns     10.77.12.2
```

The censor's rules match only packets entering from, or leaving to, the censored side's veths
(`CENSORED_IF`, an nft wildcard); the control clients' traffic crosses the same router on their own
veths (`CONTROL_IF`), which no rule names, so it is the untouched path the censor's victims are
compared with. Addresses are the same in every lab: each lab has its own namespaces, so two labs
never see each other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from dari.lab import netns

CENSORED_IF = "cen*"              # the router's veths to censored clients: cen1, cen2, ...
CONTROL_IF = "ctl*"
SERVER_IF = "to-srv"
RELAY_IF = "to-rly"
DNS_IF = "to-dns"

SERVER_IP = "10.77.10.2"
SERVER_ALT_IP = "10.77.10.3"      # a second address of the same server (a fallback to pin)
RELAY_IP = "10.77.11.2"
DNS_IP = "10.77.12.2"
BOGUS_IP = "10.77.99.1"           # what a poisoned answer says; blackholed by the router, like GFW's
CENSORED_NET = "10.77.1.0/24"
CONTROL_NET = "10.77.2.0/24"
SERVER_NET = "10.77.10.0/24"

# The service's names; the relay's is neutral (a censor that blocks the service's names spares it).
SERVICE_NAMES: dict[str, str] = {
    "chat.dari.test": SERVER_IP,
    "api.dari.test": SERVER_IP,
    "friends.dari.test": SERVER_IP,
    "story.dari.test": SERVER_IP,
    "pc.dari.test": SERVER_IP,
    "edge.dari.test": SERVER_ALT_IP,
}
RELAY_NAMES: dict[str, str] = {"relay1.example.net": RELAY_IP}


@dataclass
class Addresses:
    server: str = SERVER_IP
    server_alt: str = SERVER_ALT_IP
    relay: str = RELAY_IP
    dns: str = DNS_IP
    bogus: str = BOGUS_IP
    censored: list[str] = field(default_factory=list)
    control: list[str] = field(default_factory=list)
    censored_net: str = CENSORED_NET
    control_net: str = CONTROL_NET
    names: dict[str, str] = field(default_factory=lambda: {**SERVICE_NAMES, **RELAY_NAMES})

    @property
    def server_ips(self) -> list[str]:
        return [self.server, self.server_alt]

    @property
    def service_names(self) -> list[str]:
        return list(SERVICE_NAMES)


@dataclass
class Topology:
    """Namespace names by role: "censor", "server", "relay", "dns", "censored" (= "censored-1"),
    "censored-2", ..., "control" (= "control-1"), ..."""

    lab_id: str
    censored_clients: int = 1
    control_clients: int = 1
    namespaces: dict[str, str] = field(default_factory=dict)
    addresses: Addresses = field(default_factory=Addresses)
    censored_ifs: list[str] = field(default_factory=list)
    control_ifs: list[str] = field(default_factory=list)
    built: bool = False

    @classmethod
    def new(cls, censored_clients: int = 1, control_clients: int = 1) -> Topology:
        return cls(uuid.uuid4().hex[:6], censored_clients, control_clients)

    @property
    def prefix(self) -> str:
        return f"{netns.PREFIX}{self.lab_id}-"

    def ns(self, role: str) -> str:
        """The namespace for a role ("censored" and "control" mean the first client of the region);
        a full namespace name is returned as it is."""
        if role in self.namespaces.values():
            return role
        key = {"censored": "censored-1", "control": "control-1"}.get(role, role)
        try:
            return self.namespaces[key]
        except KeyError:
            raise KeyError(f"no namespace for role {role!r}; roles: {', '.join(self.namespaces)}") from None

    def build(self) -> None:
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        self.built = True

    def _build(self) -> None:
        roles = ["censor", "server", "relay", "dns"]
        roles += [f"censored-{i + 1}" for i in range(self.censored_clients)]
        roles += [f"control-{i + 1}" for i in range(self.control_clients)]
        for role in roles:
            name = self.prefix + role
            netns.add_netns(name)
            self.namespaces[role] = name
        gw = self.namespaces["censor"]
        netns.sysctl(gw, "net.ipv4.ip_forward", "1")
        for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
            netns.sysctl(gw, key, "0")
        # Sockets of the middlebox answer for addresses that are not the router's (tproxy): marked
        # packets are delivered locally through this table.
        netns.ip(gw, "rule", "add", "fwmark", "1", "lookup", "100")
        netns.ip(gw, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
        # A poisoned answer points here; the router drops it silently, as GFW's fake addresses do.
        netns.ip(gw, "route", "add", "blackhole", f"{BOGUS_IP}/32")

        for role, prefix, net in (("censored", "cen", "10.77.1"), ("control", "ctl", "10.77.2")):
            count = self.censored_clients if role == "censored" else self.control_clients
            for i in range(count):
                client = self.namespaces[f"{role}-{i + 1}"]
                port = f"{prefix}{i + 1}"
                addr = f"{net}.{i + 2}"
                # One veth per client, the router's end holding the region's gateway address as a
                # /32: no bridge, because tproxy does not see packets that arrive through one.
                self._veth(client, "eth0", gw, port)
                netns.ip(gw, "addr", "add", f"{net}.1/32", "dev", port)
                netns.ip(gw, "link", "set", port, "up")
                netns.ip(gw, "route", "add", f"{addr}/32", "dev", port)
                self._host(client, addr, f"{net}.1")
                (self.addresses.censored if role == "censored" else self.addresses.control).append(addr)
                (self.censored_ifs if role == "censored" else self.control_ifs).append(port)
                netns.set_resolver(client, DNS_IP)

        for role, gw_if, net, addrs in (("server", SERVER_IF, "10.77.10", [SERVER_IP, SERVER_ALT_IP]),
                                        ("relay", RELAY_IF, "10.77.11", [RELAY_IP]),
                                        ("dns", DNS_IF, "10.77.12", [DNS_IP])):
            host = self.namespaces[role]
            self._veth(host, "eth0", gw, gw_if)
            netns.ip(gw, "addr", "add", f"{net}.1/24", "dev", gw_if)
            netns.ip(gw, "link", "set", gw_if, "up")
            self._host(host, addrs[0], f"{net}.1", extra=addrs[1:])
            netns.set_resolver(host, DNS_IP)
        netns.set_resolver(gw, DNS_IP)

    @staticmethod
    def _veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        # Created straight inside both namespaces, so names never clash with another lab's.
        netns.ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)

    @staticmethod
    def _host(ns: str, addr: str, gateway: str, extra: list[str] | None = None) -> None:
        netns.ip(ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        for other in extra or []:
            netns.ip(ns, "addr", "add", f"{other}/24", "dev", "eth0")
        netns.ip(ns, "link", "set", "eth0", "up")
        netns.ip(ns, "route", "add", "default", "via", gateway)

    def teardown(self) -> None:
        # Deleting a namespace takes its veths, bridges, nft tables, qdiscs and routes with it.
        for name in self.namespaces.values():
            netns.del_netns(name)
        netns.cleanup_leftovers(self.prefix)
        self.namespaces.clear()
        self.censored_ifs.clear()
        self.control_ifs.clear()
        self.built = False
