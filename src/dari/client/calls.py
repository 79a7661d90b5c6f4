"""Calls from Python with aiortc (issue 12): place or answer a call, play a file into it, record
what arrives. The signaling is the same as the web page's (docs/protocol.md, "Calls"): whoever is
already in a call offers to each device that joins; SDP and ICE candidates go through `call.signal`
over the session, so any route the client uses carries them.

aiortc is the `calls` extra (`pip install 'dari[calls]'`); importing this module without it raises
ImportError with that hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

try:
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer, MediaRecorder, MediaRelay
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
    from aiortc.rtcconfiguration import RTCIceTransportPolicy
    from aiortc.sdp import candidate_from_sdp
except ImportError as exc:   # pragma: no cover - depends on the installation
    raise ImportError("calls need aiortc: pip install 'dari[calls]'", name=exc.name) from exc

from dari.client.client import Client, Event
from dari.protocol.errors import DariError, ErrorCode

log = logging.getLogger(__name__)


class CallAgent:
    """One device's part in calls. `place` or `wait_ringing` + `answer`, then `hangup` or wait for
    `ended`. `received` counts the audio and video frames that arrived (what tests look at)."""

    def __init__(self, client: Client, *, play: str | None = None, record: str | None = None,
                 video: bool = False, relay: bool = False) -> None:
        self.client = client
        self.play, self.record, self.video = play, record, video
        self.relay = relay   # media only through TURN, even where the server does not ask for it
        self.call: dict[str, Any] | None = None
        self.joined = False
        self.peers: dict[int, RTCPeerConnection] = {}
        self.received = {"audio": 0, "video": 0}
        self.connected = asyncio.Event()
        self.first_audio = asyncio.Event()   # the first audio frame from the other side arrived
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._ringing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._config = RTCConfiguration()
        self._player: MediaPlayer | None = None
        self._recorder: MediaRecorder | None = None
        self._fork = MediaRelay()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._placing = False
        self._held: list[tuple[str, dict[str, Any]]] = []
        client.event_hooks.append(self._hook)
        self._spawn(self._dispatch())

    # -- public ------------------------------------------------------------------------------
    async def place(self, chat_id: int, *, video: bool | None = None) -> dict[str, Any]:
        """Ring the chat's other member(s); media starts when someone answers (see `connected`)."""
        await self._prepare()
        # The answer to call.start can come after the callee's call.accepted (another connection's
        # request finished first): events meanwhile are held and handled once the call id is known.
        self._placing = True
        try:
            info: dict[str, Any] = await self.client.call("call.start", chat_id=chat_id,
                                                          video=self.video if video is None else video)
        finally:
            self._placing = False
        held, self._held = self._held, []
        if info["state"] == "ended":
            self.end_reason = str(info["reason"])
            self.ended.set()
            return info
        self.call, self.joined = info, True
        for name, payload in held:
            await self._handle(name, payload)
        return info

    async def wait_ringing(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next call that rings this device."""
        return await asyncio.wait_for(self._ringing.get(), timeout)

    async def answer(self, call: dict[str, Any]) -> None:
        await self._prepare()
        # Joined before the answer arrives: an offer that overtakes it (another connection's work)
        # is then handled, not dropped.
        self.call, self.joined = call, True
        try:
            await self.client.call("call.accept", call_id=call["call_id"])
        except BaseException:
            self.joined = False
            raise

    async def decline(self, call: dict[str, Any]) -> None:
        await self.client.call("call.decline", call_id=call["call_id"])

    async def hangup(self) -> None:
        if self.call is not None and self.joined:
            with contextlib.suppress(DariError):
                await self.client.call("call.hangup", call_id=self.call["call_id"])
        await self._release("hangup")

    async def close(self) -> None:
        await self._release(self.end_reason or "closed")
        with contextlib.suppress(ValueError):
            self.client.event_hooks.remove(self._hook)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def paths(self) -> list[str]:
        """The kind of local candidate each connected peer uses (host, srflx, relay): the call's path."""
        out = []
        for pc in self.peers.values():
            for tr in pc.getTransceivers():
                ice = tr.receiver.transport.transport
                conn = getattr(ice, "_connection", None)   # aioice keeps the nominated pair here only
                pair = next(iter(getattr(conn, "_nominated", {}).values()), None)
                if pair is not None:
                    out.append(str(pair.local_candidate.type))
                    break
        return out

    # -- media -------------------------------------------------------------------------------
    async def _prepare(self) -> None:
        creds = await self.client.call("call.turn_credentials")
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                   for s in creds["ice_servers"]]
        self._config = RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY
                                        if creds["relay_only"] or self.relay else RTCIceTransportPolicy.ALL)
        if self.play and self._player is None:
            self._player = MediaPlayer(self.play, loop=True)
        if self.record and self._recorder is None:
            self._recorder = MediaRecorder(self.record)

    def _local_tracks(self) -> list[MediaStreamTrack]:
        audio = self._player.audio if self._player and self._player.audio else AudioStreamTrack()
        tracks: list[MediaStreamTrack] = [self._fork.subscribe(audio)]
        if self.call and self.call.get("video"):
            video = self._player.video if self._player and self._player.video else VideoStreamTrack()
            tracks.append(self._fork.subscribe(video))
        return tracks

    def _peer(self, device_id: int) -> RTCPeerConnection:
        pc = self.peers.get(device_id)
        if pc is not None:
            return pc
        pc = RTCPeerConnection(self._config)
        self.peers[device_id] = pc
        for track in self._local_tracks():
            pc.addTrack(track)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if self._recorder is not None:
                self._recorder.addTrack(self._fork.subscribe(track))
            self._spawn(self._count(self._fork.subscribe(track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected" and not self.connected.is_set():
                self.connected.set()
                if self._recorder is not None:   # every track of the call is known by now
                    await self._recorder.start()

        return pc

    async def _count(self, track: MediaStreamTrack) -> None:
        kind = track.kind
        with contextlib.suppress(Exception):   # the track ends when the peer hangs up
            while True:
                await track.recv()
                self.received[kind] = self.received.get(kind, 0) + 1
                if kind == "audio":
                    self.first_audio.set()

    async def _signal(self, device_id: int, payload: dict[str, Any]) -> None:
        assert self.call is not None
        await self.client.call("call.signal", call_id=self.call["call_id"], to_device=device_id, payload=payload)

    async def _offer(self, device_id: int) -> None:
        pc = self._peer(device_id)
        await pc.setLocalDescription(await pc.createOffer())
        # aiortc gathers every candidate before setLocalDescription returns: they are in the SDP.
        await self._signal(device_id, {"type": "offer", "sdp": pc.localDescription.sdp})

    async def _on_signal(self, device_id: int, p: dict[str, Any]) -> None:
        pc = self._peer(device_id)
        if p["type"] in ("offer", "answer"):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=p["sdp"], type=p["type"]))
            if p["type"] == "offer":
                await pc.setLocalDescription(await pc.createAnswer())
                await self._signal(device_id, {"type": "answer", "sdp": pc.localDescription.sdp})
        elif p.get("candidate"):
            cand = candidate_from_sdp(p["candidate"].split(":", 1)[1])
            cand.sdpMid = p.get("sdp_mid")
            cand.sdpMLineIndex = p.get("sdp_mline_index")
            await pc.addIceCandidate(cand)

    # -- events ------------------------------------------------------------------------------
    def _hook(self, ev: Event) -> None:
        if ev.name.startswith("call."):
            self._queue.put_nowait(ev)

    async def _dispatch(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                await self._handle(ev.name, ev.payload)
            except DariError as err:
                log.warning("call: %s failed: %s", ev.name, err.message)
            except Exception:
                log.exception("call: handling %s failed", ev.name)

    async def _handle(self, name: str, p: dict[str, Any]) -> None:
        if self._placing and name != "call.ringing":
            self._held.append((name, p))
            return
        mine = self.call is not None and p.get("call_id") == self.call["call_id"]
        me = self.client.device_id
        if name == "call.ringing" and self.call is None:
            self._ringing.put_nowait(p)
        elif name == "call.accepted" and mine and self.joined and p["device_id"] != me:
            await self._offer(int(p["device_id"]))
        elif name == "call.signal" and mine and self.joined and p["to_device"] == me:
            await self._on_signal(int(p["from_device"]), p["payload"])
        elif name == "call.left" and mine:
            pc = self.peers.pop(int(p["device_id"]), None)
            if pc is not None:
                await pc.close()
        elif name == "call.answered_elsewhere" and mine and p["device_id"] != me:
            await self._release("answered_elsewhere")
        elif name == "call.ended" and mine:
            await self._release(str(p.get("reason") or "ended"))

    async def _release(self, reason: str) -> None:
        if not self.end_reason:
            self.end_reason = reason
        for pc in list(self.peers.values()):
            await pc.close()
        self.peers.clear()
        if self._recorder is not None:
            await self._recorder.stop()
            self._recorder = None
        if self._player is not None:
            for track in (self._player.audio, self._player.video):
                if track is not None:
                    track.stop()
            self._player = None
        self.ended.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def wait_connected(agent: CallAgent, timeout: float) -> None:
    """Until media flows, or DariError when the call ended first or it took too long."""
    waits = [asyncio.ensure_future(agent.connected.wait()), asyncio.ensure_future(agent.ended.wait())]
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    if not agent.connected.is_set():
        why = agent.end_reason or "timeout"
        raise DariError(ErrorCode.UNAVAILABLE, f"the call did not connect ({why})", {"reason": why})
