"""`Lab`: a running censorship lab: the topology, its helper processes and the applied scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dari.client.links import Route
from dari.lab import netns
from dari.lab.agent import RemoteClient, route_to_dict
from dari.lab.censor import MIDDLEBOX_DNS_PORT, MIDDLEBOX_TCP_PORT, Censor
from dari.lab.scenarios import HTTP_PORT, HTTPS_PORT, SCENARIOS, STREAM_PORT, TLS_PORT
from dari.lab.topology import RELAY_NAMES, SERVICE_NAMES, Addresses, Topology

CHARGEN_PORT = 7019
SERVER_ENV = {"DARI_ARGON2_TIME_COST": "1", "DARI_ARGON2_MEMORY_KIB": "8192",
              "DARI_RATE_PER_S": "100000", "DARI_RATE_BURST": "100000"}


class LabUnavailable(RuntimeError):
    """This machine lacks a kernel feature or tool the lab needs; `reasons` says which."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("censorship lab unavailable: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass
class LabProcess:
    name: str
    ns: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: Any = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


@dataclass
class ServerOptions:
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Remove namespaces of labs whose owning process is gone (a crashed or killed test run). Labs
    of live processes, this one's included, are left alone, so parallel runs do not hurt each other."""
    removed: list[str] = []
    for name in netns.list_netns():
        if not name.startswith(netns.PREFIX):
            continue
        lab_id = name[len(netns.PREFIX):].split("-", 1)[0]
        pid_file = os.path.join(netns.OWNERS_DIR, f"{lab_id}.pid")
        try:
            with open(pid_file) as fh:
                pid = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and _alive(pid):
            continue
        netns.del_netns(name)
        removed.append(name)
        with contextlib.suppress(OSError):
            os.unlink(pid_file)
        for workdir in Path(tempfile.gettempdir()).glob(f"dari-lab-{lab_id}-*"):
            shutil.rmtree(workdir, ignore_errors=True)
    return removed


class Lab:
    """See the package docstring (dari.lab) for the whole API."""

    def __init__(self, *, censored_clients: int = 1, control_clients: int = 1, workdir: str | None = None,
                 penalty_s: float = 5.0, throttle_rate: str = "20kbit", verbose: bool = False) -> None:
        self.topology = Topology.new(censored_clients, control_clients)
        self.defaults: dict[str, Any] = {"penalty_s": penalty_s, "rate": throttle_rate}
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"dari-lab-{self.topology.lab_id}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.verbose = verbose
        self.censor = Censor("")
        self.processes: dict[str, LabProcess] = {}
        self.remote_clients: list[RemoteClient] = []
        self.active: dict[str, dict[str, Any]] = {}         # scenario -> params it was applied with
        self._policy: dict[str, dict[str, dict[str, Any]]] = {"middlebox": {}, "resolver": {}}
        self.server_options: ServerOptions | None = None
        self.server_pin: str | None = None
        self.cert: tuple[str, str] | None = None
        self.relay_argv: list[str] | None = None
        self.started = False

    # -- life cycle --------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def addresses(self) -> Addresses:
        return self.topology.addresses

    @property
    def lab_id(self) -> str:
        return self.topology.lab_id

    def ns(self, role: str) -> str:
        return self.topology.ns(role)

    def start(self) -> Lab:
        missing = netns.missing_features()
        if missing:
            raise LabUnavailable(missing)
        cleanup_stale()
        netns.claim(self.lab_id)
        try:
            self.topology.build()
            self.censor = Censor(self.ns("censor"), self.topology.censored_ifs)
            self.censor.install_base()
            self._write_json("zone.json", {**SERVICE_NAMES, **RELAY_NAMES})
            self._write_policies()
            self._spawn("resolver", "dns", [sys.executable, "-m", "dari.lab.dns", "--zone",
                                            str(self.workdir / "zone.json"), "--policy",
                                            str(self.workdir / "resolver.json")], ready="dns: answering")
            self._spawn("middlebox", "censor",
                        [sys.executable, "-m", "dari.lab.middlebox", "--policy", str(self.workdir / "middlebox.json"),
                         "--events", str(self.workdir / "censor-events.jsonl"), "--tcp-port", str(MIDDLEBOX_TCP_PORT),
                         "--dns-port", str(MIDDLEBOX_DNS_PORT)], ready="middlebox:")
            self._spawn("chargen", "server", [sys.executable, "-m", "dari.lab.forward", "--chargen", str(CHARGEN_PORT)],
                        ready="forward:")
            self.started = True
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process the lab started, delete its namespaces (and with them every veth, nft
        table and qdisc) and its files. Safe to call twice and after a failed start."""
        for rc in self.remote_clients:
            with contextlib.suppress(ProcessLookupError):
                if rc.proc.returncode is None:
                    rc.proc.kill()
        self.remote_clients.clear()
        for proc in reversed(list(self.processes.values())):
            proc.stop(timeout=5)
        self.processes.clear()
        self.topology.teardown()
        netns.release(self.lab_id)
        if self._own_workdir and not os.environ.get("DARI_LAB_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.started = False

    # -- processes ---------------------------------------------------------------------------------
    def _exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(ns), *argv]

    def popen(self, ns: str, argv: Sequence[str], *, name: str | None = None, env: dict[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `argv` inside namespace `ns` (a role or a full name). Stdout and stderr go to
        workdir/NAME.log unless given; the lab stops it at close."""
        name = name or f"{ns}-{len(self.processes)}"
        log_path = self.workdir / f"{name}.log"
        log_file = None
        if "stdout" not in kwargs:
            log_file = open(log_path, "ab")
            kwargs["stdout"] = log_file
            kwargs.setdefault("stderr", subprocess.STDOUT)
        proc = subprocess.Popen(self._exec_argv(ns, argv), env={**os.environ, **(env or {})}, **kwargs)
        self.processes[name] = LabProcess(name, self.ns(ns), proc, log_path, log_file)
        return proc

    def run(self, ns: str, argv: Sequence[str], *, timeout: float = 60.0, check: bool = False,
            input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `ns` to completion; output captured as text."""
        return subprocess.run(self._exec_argv(ns, argv), capture_output=True, text=True, timeout=timeout,
                              check=check, input=input, env={**os.environ, **(env or {})})

    def python(self, ns: str, code: str | None = None, *, module: str | None = None, args: Sequence[str] = (),
               timeout: float = 60.0, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run this venv's Python inside `ns`: `code` (with -c) or `module` (with -m), then `args`."""
        if (code is None) == (module is None):
            raise ValueError("give code or module")
        head = ["-c", code] if code is not None else ["-m", str(module)]
        return self.run(ns, [sys.executable, *head, *args], timeout=timeout, check=check)

    def dari(self, ns: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """The `dari` command inside `ns`, e.g. lab.dari("censored", "diagnose", "--server", lab.url)."""
        return self.python(ns, module="dari.cli.main", args=args, timeout=timeout)

    def _spawn(self, name: str, ns: str, argv: list[str], *, ready: str | None, timeout: float = 20.0,
               env: dict[str, str] | None = None) -> LabProcess:
        old = self.processes.pop(name, None)
        if old is not None:
            old.stop()
        self.popen(ns, argv, name=name, env=env)
        lp = self.processes[name]
        if ready is not None:
            self._wait_log(lp, ready, timeout)
        return lp

    @staticmethod
    def _wait_log(lp: LabProcess, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in lp.log():
                return
            if not lp.running():
                raise netns.LabError(f"{lp.name} exited early:\n{lp.log()[-3000:]}")
            time.sleep(0.05)
        raise netns.LabError(f"{lp.name} not ready after {timeout}s:\n{lp.log()[-3000:]}")

    def wait_port(self, ns: str, host: str, port: int, timeout: float = 20.0, process: str | None = None) -> None:
        """Wait until `host:port` accepts connections from inside `ns` (and `process` is alive)."""
        deadline = time.monotonic() + timeout
        lp = self.processes.get(process) if process else None
        while time.monotonic() < deadline:
            if lp is not None and not lp.running():
                raise netns.LabError(f"{lp.name} exited early:\n{lp.log()[-3000:]}")
            s = netns.ns_socket(self.ns(ns))
            s.settimeout(0.5)
            try:
                s.connect((host, port))
                return
            except OSError:
                time.sleep(0.1)
            finally:
                s.close()
        raise netns.LabError(f"{host}:{port} not accepting in {ns} after {timeout}s")

    # -- server and relay --------------------------------------------------------------------------
    def start_server(self, args: Sequence[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`dari serve` in the server namespace: plain HTTP (WebSocket, long-poll, REST) on :80 and the
        plain frame stream on :7000, both on both server addresses; a TLS front terminates TLS on
        :443 (frame stream) and :8443 (HTTPS/WSS) with a self-signed certificate for the service's
        names, whose key pin is `lab.server_pin`. Called again (e.g. after server-down) with no
        arguments, it restarts with the same options and data."""
        if args is not None or env is not None or self.server_options is None:
            self.server_options = ServerOptions(list(args or []), dict(env or {}))
        opts = self.server_options
        if self.cert is None:
            from dari.server.tls import pin_of_pem_file, self_signed

            names = (*SERVICE_NAMES, self.addresses.server, self.addresses.server_alt)
            self.cert = self_signed(str(self.workdir / "tls"), names)
            self.server_pin = pin_of_pem_file(self.cert[0])
        data = self.workdir / "server"
        data.mkdir(exist_ok=True)
        self._spawn("server", "server", [sys.executable, "-m", "dari.cli.main", "serve", "--host", "0.0.0.0",
                                         "--port", str(HTTP_PORT), "--data-dir", str(data), "--stream-port",
                                         str(STREAM_PORT), *opts.args],
                    ready=None, env={**SERVER_ENV, **opts.env})
        self._spawn("tls-front", "server", [sys.executable, "-m", "dari.lab.forward",
                                            "--map", f"{TLS_PORT}=127.0.0.1:{STREAM_PORT}:tls",
                                            "--map", f"{HTTPS_PORT}=127.0.0.1:{HTTP_PORT}:tls",
                                            "--cert", self.cert[0], "--key", self.cert[1]], ready="forward:")
        self.wait_port("server", "127.0.0.1", HTTP_PORT, timeout=30, process="server")
        self.wait_port("server", "127.0.0.1", STREAM_PORT, process="server")

    def stop_server(self) -> None:
        for name in ("server", "tls-front"):
            lp = self.processes.pop(name, None)
            if lp is not None:
                lp.stop()

    @property
    def server_running(self) -> bool:
        lp = self.processes.get("server")
        return lp is not None and lp.running()

    def start_relay(self, argv: Sequence[str] | None = None, *, stand_in: bool = False) -> Route:
        """A relay in the relay namespace (relay1.example.net), forwarding :443 to the server's TLS
        stream and :8443 to its HTTPS, without decrypting. By default the project's `dari relay`;
        `argv` runs another command there instead; `stand_in=True` uses the lab's own byte forwarder
        (for a checkout whose relay is broken). Returns the Route a client uses through it."""
        server = self.addresses.server
        if argv is None and not stand_in:
            argv = [sys.executable, "-m", "dari.cli.main", "relay", "--upstream", f"{server}:{TLS_PORT}",
                    "--listen", f"0.0.0.0:{TLS_PORT}", "--https-upstream", f"{server}:{HTTPS_PORT}",
                    "--https-listen", f"0.0.0.0:{HTTPS_PORT}", "--state", str(self.workdir / "relay")]
        if argv is None:
            argv = [sys.executable, "-m", "dari.lab.forward", "--map", f"{TLS_PORT}={server}:{TLS_PORT}",
                    "--map", f"{HTTPS_PORT}={server}:{HTTPS_PORT}"]
        self.relay_argv = list(argv)
        self._spawn("relay", "relay", self.relay_argv, ready=None)
        self.wait_port("relay", "127.0.0.1", TLS_PORT, process="relay")
        return self.route("relay")

    # -- routes and clients ------------------------------------------------------------------------
    def route(self, kind: str) -> Route:
        """Routes to the lab server, by kind:
        ws, longpoll (plain HTTP by name) | wss (HTTPS :8443 by name, pinned) | stream (plain frames
        :7000 by name) | tls (TLS frames :443 by name, pinned) | pinned-tls (TLS frames to the server's
        address, no name sent, pinned) | alt-tls (same to the second server address) | relay (TLS frames
        through relay1.example.net, its neutral name as SNI, pinned to the server's key)."""
        pin = self.server_pin
        a = self.addresses
        routes = {
            "ws": Route("ws", f"http://chat.dari.test:{HTTP_PORT}", name="direct-ws"),
            "longpoll": Route("longpoll", f"http://chat.dari.test:{HTTP_PORT}", name="direct-longpoll"),
            "wss": Route("ws", f"https://chat.dari.test:{HTTPS_PORT}", name="direct-wss", pin=pin),
            "stream": Route("stream", f"tcp://chat.dari.test:{STREAM_PORT}", name="direct-stream"),
            "tls": Route("stream", f"tls://chat.dari.test:{TLS_PORT}", name="direct-tls", pin=pin),
            "pinned-tls": Route("stream", f"tls://{a.server}:{TLS_PORT}", name="pinned-tls", pin=pin),
            "alt-tls": Route("stream", f"tls://{a.server_alt}:{TLS_PORT}", name="alt-tls", pin=pin),
            "relay": Route("stream", f"tls://relay1.example.net:{TLS_PORT}", name="relay", pin=pin,
                           sni="relay1.example.net"),
        }
        return routes[kind]

    @property
    def url(self) -> str:
        return f"http://chat.dari.test:{HTTP_PORT}"

    async def client(self, ns: str, routes: Sequence[Route | str] | None = None, *, name: str | None = None,
                     upgrade_interval: float = 30.0, call_timeout: float = 30.0) -> RemoteClient:
        """A dari SDK client (with an on-disk outbox) running inside `ns`, driven from here. Routes are
        Route objects or kinds for `route()`; default: ws, longpoll."""
        chosen = [self.route(r) if isinstance(r, str) else r for r in (routes or ["ws", "longpoll"])]
        name = name or f"client-{len(self.remote_clients) + 1}"
        config = {"url": self.url, "routes": [route_to_dict(r) for r in chosen],
                  "outbox": str(self.workdir / f"{name}.outbox"), "upgrade_interval": upgrade_interval,
                  "call_timeout": call_timeout, "device": name}
        log_fd = os.open(self.workdir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._exec_argv(ns, [sys.executable, "-m", "dari.lab.agent", json.dumps(config)]),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_fd)
        finally:
            os.close(log_fd)   # the child has its own copy
        rc = RemoteClient(proc, name)
        self.remote_clients.append(rc)
        return rc

    # -- scenarios ---------------------------------------------------------------------------------
    def apply(self, name: str, **params: Any) -> None:
        """Start a block (see dari.lab.scenarios.SCENARIOS) on the running lab."""
        scenario = SCENARIOS[name]
        if name in self.active:
            self.lift(name)
        merged = {**scenario.params, **{k: v for k, v in self.defaults.items() if k in scenario.params}, **params}
        scenario.apply(self, merged)
        self.active[name] = merged

    def lift(self, name: str) -> None:
        """End a block: its nft table, policy fragments, throttle and penalty box go; then its own undo."""
        scenario = SCENARIOS[name]
        self.active.pop(name, None)
        self.censor.remove_table(name)
        if any(name in frags for frags in self._policy.values()):
            for frags in self._policy.values():
                frags.pop(name, None)
            self._write_policies()
        if name == "throttle":
            self.censor.unthrottle()
        if name == "sni-filter":
            self.censor.clear_penalties()
        if scenario.lift is not None:
            scenario.lift(self)

    def lift_all(self) -> None:
        for name in list(self.active):
            self.lift(name)

    def set_policy(self, scenario: str, *, middlebox: dict[str, Any] | None = None,
                   resolver: dict[str, Any] | None = None) -> None:
        if middlebox is not None:
            self._policy["middlebox"][scenario] = middlebox
        if resolver is not None:
            self._policy["resolver"][scenario] = resolver
        self._write_policies()

    def _write_policies(self) -> None:
        for target, frags in self._policy.items():
            merged: dict[str, Any] = {}
            for frag in frags.values():
                for key, section in frag.items():
                    merged[key] = _merge(merged.get(key), section)
            self._write_json(f"{target}.json", merged)

    def _write_json(self, filename: str, data: Any) -> None:
        path = self.workdir / filename
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)      # readers never see half a policy

    def censor_events(self) -> list[dict[str, Any]]:
        """What the middlebox did so far (sni-reset, http-filter, dpi-reset, dns-inject), oldest first."""
        path = self.workdir / "censor-events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- sockets from this process -----------------------------------------------------------------
    def socket(self, ns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket living in namespace `ns`, usable here (blocking, or setblocking(False) for asyncio)."""
        return netns.ns_socket(self.ns(ns), socket.AF_INET, kind)


def _merge(old: Any, new: Any) -> Any:
    """Two scenarios' policy sections combined: lists joined, dicts merged, scalars: the newest wins."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for k, v in new.items():
            out[k] = _merge(old.get(k), v)
        return out
    if isinstance(old, list) and isinstance(new, list):
        return old + [x for x in new if x not in old]
    return new
