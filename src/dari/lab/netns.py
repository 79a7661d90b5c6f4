"""Thin wrappers over `ip`, `nft` and `tc`, sockets opened inside a namespace from this process, the
kernel feature check, and the clean-up of leftovers.

Everything the lab creates carries a name starting with PREFIX ("dl-"), so a clean-up can find what a
crashed run left behind without touching anything else on the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

PREFIX = "dl-"
NETNS_DIR = "/run/netns"
OWNERS_DIR = "/run/dari-lab"      # <lab id>.pid: a lab whose owner died is a leftover to clean
ETC_NETNS = "/etc/netns"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class LabError(RuntimeError):
    """A command building or changing the lab failed."""


def sh(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 30.0) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def ip(ns: str | None, *args: str, check: bool = True) -> str:
    return sh(["ip", *(["-n", ns] if ns else []), *args], check=check)


def nft(ns: str, script: str, check: bool = True) -> str:
    """Run an nft script (one or more commands) atomically inside `ns`."""
    return sh(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, check=check)


def tc(ns: str, *args: str, check: bool = True) -> str:
    return sh(["ip", "netns", "exec", ns, "tc", *args], check=check)


def sysctl(ns: str, key: str, value: str) -> None:
    # Written through /proc inside the namespace: `ip netns exec` remounts /proc/sys for it.
    sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])


def add_netns(name: str) -> None:
    ip(None, "netns", "add", name)
    ip(name, "link", "set", "lo", "up")


def claim(lab_id: str) -> None:
    """Record this process as the owner of lab `lab_id` (see cleanup in dari.lab.lab)."""
    os.makedirs(OWNERS_DIR, exist_ok=True)
    with open(os.path.join(OWNERS_DIR, f"{lab_id}.pid"), "w") as fh:
        fh.write(str(os.getpid()))


def release(lab_id: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(OWNERS_DIR, f"{lab_id}.pid"))


def del_netns(name: str) -> None:
    # Processes a dead lab left running inside (its server, middlebox...) go with their namespace.
    for pid in ip(None, "netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip(None, "netns", "del", name, check=False)
    shutil.rmtree(os.path.join(ETC_NETNS, name), ignore_errors=True)


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def set_resolver(ns: str, nameserver: str) -> None:
    """`ip netns exec` bind-mounts /etc/netns/NS/* over /etc, so programs in NS use this resolver."""
    d = os.path.join(ETC_NETNS, ns)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "resolv.conf"), "w") as fh:
        # One attempt, short timeout: a dropped query should fail fast in tests, not after 15 s.
        fh.write(f"nameserver {nameserver}\noptions timeout:2 attempts:1\n")


def cleanup_leftovers(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces (and their /etc/netns files) whose name starts with `prefix`. Deleting a
    namespace destroys its veths, nft tables, tc qdiscs and routes with it; processes still in it
    are the caller's to stop (`Lab` stops its own)."""
    removed = []
    for name in list_netns():
        if name.startswith(prefix):
            del_netns(name)
            removed.append(name)
    if os.path.isdir(ETC_NETNS):
        for name in os.listdir(ETC_NETNS):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(ETC_NETNS, name), ignore_errors=True)
    return removed


# -- sockets inside a namespace, from this process ---------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread that has joined network namespace `ns`. setns() changes only the
    calling thread, and a socket keeps the namespace it was created in, so sockets made by `fn` can
    be used from any thread afterwards. Name resolution inside `fn` still reads this process's
    /etc/resolv.conf: use addresses, or `probes.dns_query` against the lab resolver."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def ns_socket(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    return in_netns(ns, lambda: socket.socket(family, kind))


# -- kernel features ---------------------------------------------------------------------------------
_FEATURE_RULES = """
table ip dl_check {
  set penalty { type ipv4_addr . ipv4_addr; flags timeout; }
  chain prerouting { type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
    iifname "dlc0" tcp dport 80 tproxy to :9999 meta mark set 1 accept
    iifname "dlc0" udp dport 53 tproxy to :9953 meta mark set 1 accept
  }
  chain raw { type filter hook prerouting priority raw; policy accept;
    ip saddr . ip daddr @penalty drop
  }
  chain forward { type filter hook forward priority filter; policy accept;
    ip saddr . ip daddr @penalty reject with tcp reset
    iifname "dlc0" ip daddr 10.0.0.9 reject with icmp type host-unreachable
  }
}
add element ip dl_check penalty { 10.0.0.1 . 10.0.0.2 timeout 3s }
"""

_feature_cache: list[str] | None = None


def missing_features() -> list[str]:
    """What this machine lacks for the lab, one stated reason each; empty when everything works.
    Checked by doing it: a throw-away namespace with a veth pair, the nft rules the censor uses
    (tproxy, socket match, reject, sets with timeouts) and an htb qdisc with a u32 filter."""
    global _feature_cache
    if _feature_cache is not None:
        return list(_feature_cache)
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("the lab needs root (network namespaces, nftables, tc)")
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` not found (install Debian's {pkg})")
    if missing:
        _feature_cache = missing
        return list(missing)
    check_id = uuid.uuid4().hex[:6]
    ns = f"{PREFIX}{check_id}-check"
    claim(check_id)
    try:
        try:
            add_netns(ns)
        except LabError as exc:
            missing.append(f"network namespaces: {exc}")
            return missing
        try:
            ip(ns, "link", "add", "dlc0", "type", "veth", "peer", "name", "dlc1")
            ip(ns, "link", "set", "dlc0", "up")
        except LabError as exc:
            missing.append(f"veth pairs: {exc}")
            return missing
        try:
            nft(ns, _FEATURE_RULES)
        except LabError as exc:
            missing.append(f"nftables tproxy/socket/reject/timeout sets: {exc}")
        try:
            tc(ns, "qdisc", "add", "dev", "dlc0", "root", "handle", "1:", "htb", "default", "1")
            tc(ns, "class", "add", "dev", "dlc0", "parent", "1:", "classid", "1:10", "htb", "rate", "20kbit")
            tc(ns, "filter", "add", "dev", "dlc0", "parent", "1:", "protocol", "ip", "u32",
               "match", "ip", "src", "10.0.0.0/24", "flowid", "1:10")
        except LabError as exc:
            missing.append(f"tc htb with u32 filters: {exc}")
        try:
            ip(ns, "rule", "add", "fwmark", "1", "lookup", "100")
            ip(ns, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
        except LabError as exc:
            missing.append(f"policy routing for tproxy: {exc}")
        try:
            def transparent() -> None:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                    s.bind(("10.9.9.9", 0))
            in_netns(ns, transparent)
        except OSError as exc:
            missing.append(f"IP_TRANSPARENT sockets: {exc}")
    finally:
        del_netns(ns)
        release(check_id)
        _feature_cache = missing
    return list(missing)


IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
