"""Structured system lines ("Alice created the group ...").

A system message carries `system`: an event key plus its arguments (who, which title, whom), so each
client renders the line in its user's language. `describe` gives the English line the server also
stores as the message's `text`: the fallback for clients that do not know an event, and for search.
"""

from __future__ import annotations

from typing import Any

GROUP_CREATED = "group_created"      # actor, title, users (the invited)
OPEN_CREATED = "open_created"        # actor (by room nickname), title
MEMBER_JOINED = "member_joined"      # actor (by room nickname)
MEMBERS_INVITED = "members_invited"  # actor, users
CHAT_RENAMED = "chat_renamed"        # actor, title
MEMBER_LEFT = "member_left"          # actor
MEMBER_REMOVED = "member_removed"    # actor (the owner), users (the one removed)
E2EE_ENABLED = "e2ee_enabled"        # actor (who switched it on)
# Calls (issue 12): actor is the caller unless said otherwise; `video` says voice or video call.
CALL_ENDED = "call_ended"            # actor, video, duration_s
CALL_MISSED = "call_missed"          # actor, users (who did not answer), video
CALL_DECLINED = "call_declined"      # actor (who declined), users (the caller), video
CALL_BUSY = "call_busy"              # actor, users (who was in another call), video
GROUP_CALL_STARTED = "group_call_started"  # actor

EVENTS = (GROUP_CREATED, OPEN_CREATED, MEMBER_JOINED, MEMBERS_INVITED, CHAT_RENAMED, MEMBER_LEFT,
          MEMBER_REMOVED, CALL_ENDED, CALL_MISSED, CALL_DECLINED, CALL_BUSY, GROUP_CALL_STARTED,
          E2EE_ENABLED)


def person(user_id: int, name: str) -> dict[str, Any]:
    return {"id": user_id, "name": name}


def event(key: str, actor: dict[str, Any], *, title: str | None = None,
          users: list[dict[str, Any]] | None = None, video: bool | None = None,
          duration_s: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"event": key, "actor": actor}
    if title is not None:
        out["title"] = title
    if users is not None:
        out["users"] = users
    if video is not None:
        out["video"] = video
    if duration_s is not None:
        out["duration_s"] = duration_s
    return out


def duration(seconds: int) -> str:
    """1:05, 12:00, 1:02:03: a call's length as phones show it."""
    h, rest = divmod(max(0, int(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _names(people: list[dict[str, Any]]) -> str:
    names = [str(p.get("name", "")) for p in people]
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


_ENGLISH = {
    GROUP_CREATED: "{actor} created the group \u201c{title}\u201d",
    OPEN_CREATED: "{actor} opened \u201c{title}\u201d",
    MEMBER_JOINED: "{actor} joined",
    MEMBERS_INVITED: "{actor} invited {users}",
    CHAT_RENAMED: "{actor} renamed the chat to \u201c{title}\u201d",
    MEMBER_LEFT: "{actor} left",
    MEMBER_REMOVED: "{actor} removed {users}",
    E2EE_ENABLED: "Messages in this chat are now end-to-end encrypted",
    CALL_ENDED: "{call} {duration}",
    CALL_MISSED: "Missed {call_lower} from {actor}",
    CALL_DECLINED: "{actor} declined the {call_lower}",
    CALL_BUSY: "{users} was on another call",
    GROUP_CALL_STARTED: "{actor} started a group call",
}


def describe(system: dict[str, Any], fallback: str = "") -> str:
    """The English line for a system event; `fallback` (the stored text) for an unknown one."""
    template = _ENGLISH.get(str(system.get("event")))
    if template is None:
        return fallback
    call = "Video call" if system.get("video") else "Voice call"
    return template.format(actor=str((system.get("actor") or {}).get("name", "someone")),
                           title=str(system.get("title", "")), users=_names(list(system.get("users") or [])),
                           call=call, call_lower=call.lower(), duration=duration(int(system.get("duration_s") or 0)))
