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

EVENTS = (GROUP_CREATED, OPEN_CREATED, MEMBER_JOINED, MEMBERS_INVITED, CHAT_RENAMED, MEMBER_LEFT,
          MEMBER_REMOVED)


def person(user_id: int, name: str) -> dict[str, Any]:
    return {"id": user_id, "name": name}


def event(key: str, actor: dict[str, Any], *, title: str | None = None,
          users: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"event": key, "actor": actor}
    if title is not None:
        out["title"] = title
    if users is not None:
        out["users"] = users
    return out


def _names(people: list[dict[str, Any]]) -> str:
    names = [str(p.get("name", "")) for p in people]
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def describe(system: dict[str, Any], fallback: str = "") -> str:
    """The English line for a system event; `fallback` (the stored text) for an unknown one."""
    key = system.get("event")
    actor = str((system.get("actor") or {}).get("name", "someone"))
    title = str(system.get("title", ""))
    users = list(system.get("users") or [])
    if key == GROUP_CREATED:
        return f"{actor} created the group \u201c{title}\u201d"
    if key == OPEN_CREATED:
        return f"{actor} opened \u201c{title}\u201d"
    if key == MEMBER_JOINED:
        return f"{actor} joined"
    if key == MEMBERS_INVITED:
        return f"{actor} invited {_names(users)}"
    if key == CHAT_RENAMED:
        return f"{actor} renamed the chat to \u201c{title}\u201d"
    if key == MEMBER_LEFT:
        return f"{actor} left"
    if key == MEMBER_REMOVED:
        return f"{actor} removed {_names(users)}"
    return fallback
