"""`dari call`: voice and video calls from the terminal with aiortc (the `calls` extra).

    dari call NAME [--play FILE] [--record FILE] [--video] [--seconds N]   call a friend or a group
    dari call --answer [--play FILE] [--record FILE] [--seconds N]         wait for a call and take it

--play sends a sound (or video) file, looped; without it the call sends silence. --record writes
what arrives (format from the extension: .wav, .ogg, .mp4). The call lasts --seconds, or until the
other side hangs up, or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from dari.cli.commands import leaf
from dari.cli.runtime import Ctx, chat_ref
from dari.protocol.errors import DariError, ErrorCode


async def call_cmd(ctx: Ctx) -> int:
    a = ctx.args
    if not a.answer and not a.name:
        raise DariError(ErrorCode.INVALID_PARAMS, "give whom to call (a handle, chat id or title), or --answer")
    try:
        from dari.client.calls import CallAgent, wait_connected
    except ImportError as exc:
        raise DariError(ErrorCode.UNAVAILABLE, str(exc)) from None
    client = await ctx.connect()
    agent = CallAgent(client, play=a.play, record=a.record, video=a.video, relay=a.relay)
    try:
        if a.answer:
            print("waiting for a call…", file=sys.stderr)
            ring = await agent.wait_ringing(timeout=a.wait)
            print(f"{ring['caller_name']} is calling; answering", file=sys.stderr)
            await agent.answer(ring)
        else:
            chat_id = await chat_ref(ctx, a.name, create_direct=True)
            info = await agent.place(chat_id)
            if info["state"] == "ended":
                raise DariError(ErrorCode.CONFLICT, f"the call did not ring ({info['reason']})",
                                {"reason": info["reason"]})
            print("ringing…", file=sys.stderr)
        await wait_connected(agent, a.wait)
        print("connected", file=sys.stderr)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agent.ended.wait(), a.seconds if a.seconds > 0 else None)
        result: dict[str, Any] = {"received_frames": dict(agent.received), "ended": agent.end_reason or "hangup"}
    finally:
        await agent.hangup()
        await agent.close()
    ctx.emit(result, lambda: ctx.out.print(
        f"call over ({result['ended']}); received {result['received_frames']['audio']} audio and"
        f" {result['received_frames'].get('video', 0)} video frames"))
    return 0


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = leaf(sub, "call", call_cmd, "voice or video call (needs the calls extra: aiortc)")
    p.add_argument("name", nargs="?", help="friend's handle, chat id or chat title")
    p.add_argument("--answer", action="store_true", help="wait for a call and answer it")
    p.add_argument("--play", metavar="FILE", help="send this audio/video file (looped)")
    p.add_argument("--record", metavar="FILE", help="record what arrives (.wav, .ogg, .mp4)")
    p.add_argument("--video", action="store_true", help="a video call (1:1 chats)")
    p.add_argument("--relay", action="store_true", help="media only through the server's TURN relay (hides"
                   " your address; the way through networks that block UDP)")
    p.add_argument("--seconds", type=float, default=0, help="hang up after this long (default: when they do)")
    p.add_argument("--wait", type=float, default=60, help="give up ringing or connecting after this long")
