"""A dari SDK client living in a lab namespace, driven from the test process over stdin/stdout.

The agent (`python -m dari.lab.agent CONFIG_JSON`, started by `Lab.client`) owns a real
`dari.client.Client` with an on-disk outbox. Each stdin line is one operation,
`{"id": 1, "op": "call", "args": {"method": "account.me", "params": {}}}`; each stdout line one
answer, `{"id": 1, "ok": true, "result": ...}` or `{"id": 1, "ok": false, "error": {...}}`.
Operations run concurrently, so `next_event` can wait while calls go on.

`RemoteClient` is the test side: `await rc.call("friend.add", handle="x")`, `await rc.status()`...
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from dari.client.links import Route


def route_to_dict(route: Route) -> dict[str, Any]:
    return dataclasses.asdict(route)


def route_from_dict(d: dict[str, Any]) -> Route:
    return Route(**d)


class RemoteError(Exception):
    def __init__(self, kind: str, message: str, code: str | None = None) -> None:
        super().__init__(f"{kind}: {message}" if not code else f"{code}: {message}")
        self.kind, self.message, self.code = kind, message, code


class RemoteClient:
    """The test process's handle on an agent. Close it (or let the lab close it) when done."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())
        self.user: dict[str, Any] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            fut = self._waiting.pop(msg.get("id"), None)
            if fut is None or fut.done():
                continue
            if msg.get("ok"):
                fut.set_result(msg.get("result"))
            else:
                err = msg.get("error") or {}
                fut.set_exception(RemoteError(err.get("type", "error"), err.get("message", ""), err.get("code")))
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RemoteError("exited", f"agent {self.name} exited"))

    async def op(self, op: str, timeout: float = 60.0, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self._ids += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = fut
        self.proc.stdin.write(json.dumps({"id": self._ids, "op": op, "args": args}).encode() + b"\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, timeout)

    async def signup(self, handle: str, display_name: str, password: str) -> dict[str, Any]:
        self.user = await self.op("signup", handle=handle, display_name=display_name, password=password)
        return self.user

    async def call(self, method: str, /, **params: Any) -> Any:
        return await self.op("call", method=method, params=params)

    async def rest(self, method: str, /, **params: Any) -> Any:
        return await self.op("rest", method=method, params=params)

    async def send_message(self, chat_id: int, text: str, client_id: str | None = None) -> Any:
        """Through the outbox: returns the client_id at once; the message goes when a route works."""
        return await self.op("send_message", chat_id=chat_id, text=text, client_id=client_id)

    async def next_event(self, name: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        result: dict[str, Any] = await self.op("next_event", timeout=timeout + 5, name=name, wait=timeout)
        return result

    async def flush_outbox(self, timeout: float = 30.0) -> None:
        await self.op("flush_outbox", timeout=timeout + 5, wait=timeout)

    async def status(self) -> dict[str, Any]:
        """route (label of the route in use), state, reconnects, last route attempts."""
        result: dict[str, Any] = await self.op("status")
        return result

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.op("close", timeout=10)
        with contextlib.suppress(ProcessLookupError):
            if self.proc.returncode is None:
                self.proc.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


# -- the agent side ----------------------------------------------------------------------------------
def _error(exc: BaseException) -> dict[str, Any]:
    code = getattr(exc, "code", None)
    return {"type": type(exc).__name__, "message": str(exc),
            "code": getattr(code, "value", code) if code is not None else None}


async def serve(config: dict[str, Any]) -> None:
    from dari.client import Client

    routes = [route_from_dict(r) for r in config.get("routes", [])] or None
    client = Client(config["url"], routes=routes, outbox_path=config.get("outbox"),
                    upgrade_interval=float(config.get("upgrade_interval", 30.0)),
                    call_timeout=float(config.get("call_timeout", 30.0)))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def reply(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg, default=str) + "\n")
        sys.stdout.flush()

    async def run(req: dict[str, Any]) -> None:
        op, args = req.get("op"), req.get("args") or {}
        try:
            if op == "signup":
                result: Any = await client.signup(args["handle"], args["display_name"], args["password"],
                                                  device_name=config.get("device", "lab"))
                await client.wait_live()
                result = client.user
            elif op == "login":
                await client.login(args["handle"], args["password"], device_name=config.get("device", "lab"))
                await client.wait_live()
                result = client.user
            elif op == "call":
                result = await client.call(args["method"], **args.get("params", {}))
            elif op == "rest":
                result = await client.rest(args["method"], **args.get("params", {}))
            elif op == "send_message":
                result = await client.send_message(int(args["chat_id"]), args["text"], client_id=args.get("client_id"))
            elif op == "next_event":
                ev = await client.next_event(args.get("name"), timeout=float(args.get("wait", 10)))
                result = {"name": ev.name, "payload": ev.payload, "cursor": ev.cursor}
            elif op == "flush_outbox":
                await client.flush_outbox(float(args.get("wait", 30)))
                result = None
            elif op == "status":
                result = {"route": client.route, "state": client.state, "reconnects": client.reconnects,
                          "attempts": [dataclasses.asdict(a) for a in client.routes.last_attempts]}
            elif op == "close":
                done.set()
                result = None
            else:
                raise ValueError(f"unknown op {op!r}")
            reply({"id": req.get("id"), "ok": True, "result": result})
        except Exception as exc:
            reply({"id": req.get("id"), "ok": False, "error": _error(exc)})

    async def read_commands() -> None:
        while line := await reader.readline():
            try:
                req = json.loads(line)
            except ValueError:
                continue
            task = asyncio.create_task(run(req))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        done.set()

    commands = asyncio.create_task(read_commands())
    try:
        await done.wait()
    finally:
        commands.cancel()
        await client.close()


def main() -> None:
    config = json.loads(sys.argv[1])
    logging.basicConfig(level=os.environ.get("DARI_LAB_AGENT_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
