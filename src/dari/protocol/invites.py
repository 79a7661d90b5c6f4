"""Method schemas for friend invites and the open-chat directory (issue 13).

Kept apart from methods.py like content.py; importing this module adds INVITE_METHODS to METHODS.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from dari.protocol.methods import METHODS, Id, MethodSpec, NoParams, OpenDescription, OpenLinkCode, OpenTags, P

# 12 URL-safe characters with at least one capital, so `dari friend add X` tells a code from a
# handle (handles are lower case).
InviteCode = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,32}$")]
DirectoryQuery = Annotated[str, Meta(max_length=100)]


class InviteRef(P):
    code: InviteCode


class OpenPreview(P):
    link_code: OpenLinkCode


class OpenSettings(P):
    chat_id: Id
    listed: bool | None = None
    description: OpenDescription | None = None
    tags: OpenTags | None = None


class Directory(P):
    query: DirectoryQuery = ""
    offset: Annotated[int, Meta(ge=0, le=1000)] = 0
    limit: Annotated[int, Meta(ge=1, le=50)] = 20


def _m(name: str, params: type[P], summary: str, *, auth: bool = True, writes: bool = True) -> MethodSpec:
    return MethodSpec(name, params, auth, summary, writes)


INVITE_METHODS: list[MethodSpec] = [
    _m("friend.invite", NoParams, "Your friend invite code (made on first use), for a link and QR code."),
    _m("friend.invite_rotate", NoParams, "Replace your invite code; the old link stops working."),
    _m("friend.invite_revoke", NoParams, "Turn your invite link off until you ask for a new one."),
    _m("friend.invite_preview", InviteRef, "Whose invite this is: their public profile.", writes=False),
    _m("friend.add_by_invite", InviteRef, "Add the invite's owner as a friend."),
    _m("chat.open_preview", OpenPreview, "An open chat's title, description and member count by link code.",
       writes=False),
    _m("chat.open_settings", OpenSettings, "Owner: list an open chat in the directory, describe and tag it."),
    _m("chat.directory", Directory, "Search listed open chats by title, description and tags (CJK included).",
       writes=False),
]

METHODS.update((spec.name, spec) for spec in INVITE_METHODS)
