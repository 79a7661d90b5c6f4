"""Objects returned by methods and carried in events. Plain data, shared by server and clients."""

from __future__ import annotations

from typing import Any

import msgspec


class UserProfile(msgspec.Struct):
    user_id: int
    handle: str
    display_name: str
    status_message: str = ""


class Me(msgspec.Struct):
    user_id: int
    handle: str
    display_name: str
    status_message: str = ""
    presence_visibility: str = "everyone"
    has_phone: bool = False


class AuthResult(msgspec.Struct):
    user: Me
    device_id: int
    token: str


class SessionInfo(msgspec.Struct):
    user: Me
    device_id: int
    cursor: int


class Device(msgspec.Struct):
    device_id: int
    name: str
    created_at: int
    last_seen_at: int
    current: bool = False
    online: bool = False
    kind: str = ""


class Friend(msgspec.Struct):
    user: UserProfile
    favourite: bool = False
    hidden: bool = False
    mutual: bool = False


class Member(msgspec.Struct):
    user_id: int
    display_name: str
    role: str = "member"
    read_seq: int = 0
    handle: str = ""


class MessageOut(msgspec.Struct):
    chat_id: int
    seq: int
    sender_id: int
    kind: str
    text: str
    created_at: int
    client_id: str = ""
    reply_to: int | None = None
    mentions: list[int] = msgspec.field(default_factory=list)
    edited_at: int | None = None
    unsent: bool = False
    reactions: dict[str, list[int]] = msgspec.field(default_factory=dict)
    unread: int = 0
    sender_name: str = ""
    attachment: dict[str, Any] | None = None   # media: blob_id, mime, size, width, ...; sticker: sticker_id, ...
    system: dict[str, Any] | None = None       # kind "system": event key and arguments (protocol/system_events.py)
    e2ee: dict[str, Any] | None = None         # kind "encrypted": the Megolm envelope, as sent (docs/e2ee.md)


class ChatSummary(msgspec.Struct):
    chat_id: int
    kind: str
    title: str
    last_seq: int
    read_seq: int
    unread: int
    muted: bool
    last_activity: int
    member_count: int
    last_message: MessageOut | None = None
    link_code: str | None = None
    peer_id: int | None = None
    e2ee: bool = False             # end-to-end encrypted (docs/e2ee.md)


class ChatDetail(msgspec.Struct):
    chat_id: int
    kind: str
    title: str
    owner_id: int | None
    member_limit: int
    last_seq: int
    members: list[Member]
    muted: bool = False
    link_code: str | None = None
    listed: bool = False           # open chats: shown in the directory
    description: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    e2ee: bool = False             # end-to-end encrypted (docs/e2ee.md)


class HistoryPage(msgspec.Struct):
    messages: list[MessageOut]
    has_more: bool


class SearchHit(msgspec.Struct):
    chat_id: int
    seq: int
    sender_id: int
    text: str
    created_at: int
    chat_title: str
    kind: str = "text"                          # media hits: image, video, file, voice (text is the caption)
    attachment: dict[str, Any] | None = None    # media hits: the attachment, with its name


class Presence(msgspec.Struct):
    user_id: int
    online: bool
    last_seen_at: int | None = None


class SyncBatch(msgspec.Struct):
    events: list[dict[str, object]]
    cursor: int
    has_more: bool


class ServerInfo(msgspec.Struct):
    name: str
    version: str
    protocol: int
    contact_key: str
    max_frame_bytes: int
    max_message_chars: int
    unsend_window_s: int
    group_member_limit: int


class FriendInvite(msgspec.Struct):
    """A user's personal invite; a client makes the link `ORIGIN/#/add/CODE` from it."""
    code: str
    created_at: int


class InvitePreview(msgspec.Struct):
    user: UserProfile
    is_friend: bool = False
    is_self: bool = False


class OpenChatCard(msgspec.Struct):
    """An open chat as seen before joining: from its link (chat.open_preview) or the directory."""
    link_code: str
    title: str
    description: str
    tags: list[str]
    member_count: int
    member_limit: int
    listed: bool
    chat_id: int | None = None     # set only when the viewer is already a member


class DirectoryPage(msgspec.Struct):
    chats: list[OpenChatCard]
    next_offset: int | None = None
