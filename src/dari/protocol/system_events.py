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

EVENTS = (GROUP_CREATED, OPEN_CREATED, MEMBER_JOINED, MEMBERS_INVITED, CHAT_RENAMED, MEMBER_LEFT,
          MEMBER_REMOVED, E2EE_ENABLED)


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


_ENGLISH = {
    GROUP_CREATED: "{actor} created the group \u201c{title}\u201d",
    OPEN_CREATED: "{actor} opened \u201c{title}\u201d",
    MEMBER_JOINED: "{actor} joined",
    MEMBERS_INVITED: "{actor} invited {users}",
    CHAT_RENAMED: "{actor} renamed the chat to \u201c{title}\u201d",
    MEMBER_LEFT: "{actor} left",
    MEMBER_REMOVED: "{actor} removed {users}",
    E2EE_ENABLED: "Messages in this chat are now end-to-end encrypted",
}


def describe(system: dict[str, Any], fallback: str = "") -> str:
    """The English line for a system event; `fallback` (the stored text) for an unknown one."""
    template = _ENGLISH.get(str(system.get("event")))
    if template is None:
        return fallback
    return template.format(actor=str((system.get("actor") or {}).get("name", "someone")),
                           title=str(system.get("title", "")), users=_names(list(system.get("users") or [])))
