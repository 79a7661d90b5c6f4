"""Method names and parameter schemas. The one list every transport and the REST mapping share.

Parameters are validated by msgspec against these Structs before a service sees them; limits that
an operator configures (message length, group size) are checked again in the services.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from dari.protocol.envelope import MAX_ATTACHMENTS, BlobRef, Envelope
from dari.protocol.errors import DariError, ErrorCode

Handle = Annotated[str, Meta(pattern=r"^[a-z0-9_.]{3,32}$", description="3-32 of a-z 0-9 _ .")]
DisplayName = Annotated[str, Meta(min_length=1, max_length=64)]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
DeviceName = Annotated[str, Meta(min_length=1, max_length=64)]
# What a device is, shown beside its name in device lists; the name is the person's to change.
DeviceKind = Literal["browser", "cli", "phone", "desktop", "sdk"]
PhoneNumber = Annotated[str, Meta(min_length=1, max_length=64, description="as typed: 010-1234-5678")]
PhoneRegion = Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$",
                                  description="where a number without +country code is from: KR, JP, CN, US")]
Id = Annotated[int, Meta(ge=1, le=2**62)]
Seq = Annotated[int, Meta(ge=0, le=2**62)]
ClientId = Annotated[str, Meta(min_length=1, max_length=64)]
Text = Annotated[str, Meta(max_length=65536)]
Title = Annotated[str, Meta(min_length=1, max_length=100)]
Emoji = Annotated[str, Meta(min_length=1, max_length=16)]
PhoneHash = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Token = Annotated[str, Meta(min_length=10, max_length=200)]
Visibility = Literal["everyone", "friends", "nobody"]


class P(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of all parameter structs: unknown fields are an error, not silently dropped."""


class NoParams(P):
    pass


class Signup(P):
    handle: Handle
    display_name: DisplayName
    password: Password
    device_name: DeviceName = "device"
    device_kind: DeviceKind | None = None
    phone_hash: PhoneHash | None = None


class Login(P):
    handle: Handle
    password: Password
    device_name: DeviceName = "device"
    device_kind: DeviceKind | None = None


class SessionOpen(P):
    token: Token
    cursor: Seq | None = None


class UpdateProfile(P):
    display_name: DisplayName | None = None
    status_message: Annotated[str, Meta(max_length=200)] | None = None


class ChangePassword(P):
    old_password: Password
    new_password: Password


class DeleteAccount(P):
    password: Password


class SetPrivacy(P):
    presence_visibility: Visibility


class SetPhone(P):
    # Omitted (the SDK drops None parameters) or null: clear it.
    phone_hash: PhoneHash | None = None


class SetPhoneNumber(P):
    phone: PhoneNumber
    region: PhoneRegion


LinkCode = Annotated[str, Meta(pattern=r"^[A-Za-z2-9]{4}-?[A-Za-z2-9]{4}$", description="XXXX-XXXX, case-insensitive")]


class LinkStart(P):
    device_name: DeviceName = "browser"
    device_kind: DeviceKind | None = None


class LinkApprove(P):
    code: LinkCode


class LinkPoll(P):
    secret: Annotated[str, Meta(min_length=16, max_length=100)]


class DeviceRevoke(P):
    device_id: Id


class DeviceRename(P):
    device_id: Id
    name: DeviceName


class FriendAdd(P):
    handle: Handle


class FindByContacts(P):
    phone_hashes: Annotated[list[PhoneHash], Meta(max_length=5000)]


class FindByPhones(P):
    phones: Annotated[list[PhoneNumber], Meta(min_length=1, max_length=500)]
    region: PhoneRegion


class FriendUpdate(P):
    user_id: Id
    favourite: bool | None = None
    hidden: bool | None = None


class UserRef(P):
    user_id: Id


class UserGet(P):
    user_id: Id | None = None
    handle: Handle | None = None


class UserIds(P):
    user_ids: Annotated[list[Id], Meta(max_length=500)]


class OpenDirect(P):
    user_id: Id
    # True: the chat is end-to-end encrypted (an existing plaintext 1:1 chat is switched on).
    e2ee: bool = False


class CreateGroup(P):
    title: Title
    member_ids: Annotated[list[Id], Meta(max_length=1000)] = msgspec.field(default_factory=list)
    member_limit: Annotated[int, Meta(ge=2, le=100000)] | None = None
    e2ee: bool = False


OpenDescription = Annotated[str, Meta(max_length=500)]
OpenTag = Annotated[str, Meta(pattern=r"^[^\s,#]{1,30}$", description="one word: no spaces, commas or #")]
OpenTags = Annotated[list[OpenTag], Meta(max_length=10)]


class CreateOpen(P):
    title: Title
    nickname: DisplayName
    member_limit: Annotated[int, Meta(ge=2, le=100000)] | None = None
    # Listed in the public directory (chat.directory) with this description and these tags.
    listed: bool = False
    description: OpenDescription = ""
    tags: OpenTags = msgspec.field(default_factory=list)


OpenLinkCode = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{6,32}$")]


class JoinOpen(P):
    link_code: OpenLinkCode
    nickname: DisplayName


class ChatRef(P):
    chat_id: Id


class ChatInvite(P):
    chat_id: Id
    user_ids: Annotated[list[Id], Meta(min_length=1, max_length=1000)]


class ChatMember(P):
    chat_id: Id
    user_id: Id


class ChatRename(P):
    chat_id: Id
    title: Title


class ChatMute(P):
    chat_id: Id
    muted: bool


class ChatRead(P):
    chat_id: Id
    seq: Seq


class MessageSend(P):
    chat_id: Id
    client_id: ClientId
    text: Text = ""
    reply_to: Seq | None = None
    mentions: Annotated[list[Id], Meta(max_length=100)] = msgspec.field(default_factory=list)
    # End-to-end encrypted chats take an envelope instead of text, and the encrypted blobs it carries.
    e2ee: Envelope | None = None
    attachments: Annotated[list[BlobRef], Meta(max_length=MAX_ATTACHMENTS)] = msgspec.field(default_factory=list)


class MessageEdit(P):
    chat_id: Id
    seq: Id
    text: Text = ""
    e2ee: Envelope | None = None


class MessageRef(P):
    chat_id: Id
    seq: Id


class MessageReact(P):
    chat_id: Id
    seq: Id
    emoji: Emoji
    on: bool = True


class History(P):
    chat_id: Id
    before_seq: Seq | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50


class Search(P):
    query: Annotated[str, Meta(min_length=1, max_length=200)]
    chat_id: Id | None = None
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


class Typing(P):
    chat_id: Id
    typing: bool = True


class SyncEvents(P):
    cursor: Seq
    limit: Annotated[int, Meta(ge=1, le=1000)] = 500
    wait_s: Annotated[float, Meta(ge=0, le=60)] = 0


Region = Annotated[str, Meta(pattern=r"^([A-Z]{2}|ZZ)$", description="ISO 3166 country code; ZZ unknown")]
Label = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:@/+-]{1,64}$")]


class ReachSample(P):
    at: Annotated[int, Meta(ge=0, le=2**50)]
    route: Label
    ok: bool
    stage: Annotated[str, Meta(max_length=16)] = ""
    cls: Annotated[str, Meta(pattern=r"^[a-z-]{1,24}$")] = msgspec.field(default="ok", name="class")
    elapsed_ms: Annotated[int, Meta(ge=0, le=10**7)] = 0
    evidence: Annotated[dict[str, str | int | float | bool | None], Meta(max_length=16)] = msgspec.field(
        default_factory=dict)


class ReachReport(P):
    reporter: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    samples: Annotated[list[ReachSample], Meta(min_length=1, max_length=100)]
    region: Region = "ZZ"
    asn: Annotated[str, Meta(pattern=r"^(AS[0-9]{1,10})?$")] = ""


class ReachProbe(P):
    bytes: Annotated[int, Meta(ge=0, le=262144)] = 65536


class AdminReach(P):
    minutes: Annotated[float, Meta(gt=0, le=7 * 24 * 60)] = 60
    buckets: Annotated[int, Meta(ge=1, le=500)] = 60


class AdminIncidents(P):
    open_only: bool = False
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


class MethodSpec(msgspec.Struct, frozen=True):
    name: str
    params: type[P]
    auth: bool
    summary: str
    writes: bool = True


def _m(name: str, params: type[P], summary: str, *, auth: bool = True, writes: bool = True) -> MethodSpec:
    return MethodSpec(name, params, auth, summary, writes)


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in [
        _m("server.info", NoParams, "Server name, version, limits and the contact-discovery key.",
           auth=False, writes=False),
        _m("account.signup", Signup, "Create an account and log this device in.", auth=False),
        _m("account.login", Login, "Log in; registers a named device and returns its token.", auth=False),
        _m("session.open", SessionOpen, "Authenticate a realtime connection and resume from a cursor.",
           auth=False),
        _m("session.ping", NoParams, "Cheap liveness check of a route: answers the server's clock.",
           auth=False, writes=False),
        _m("account.me", NoParams, "Your own profile and settings.", writes=False),
        _m("account.update_profile", UpdateProfile, "Change display name and status message."),
        _m("account.change_password", ChangePassword, "Change password; other devices stay logged in."),
        _m("account.set_privacy", SetPrivacy, "Who sees your online state and last seen."),
        _m("account.set_phone", SetPhone, "Set or clear the keyed hash of your phone number."),
        _m("account.set_phone_number", SetPhoneNumber,
           "Browsers: the server normalizes a number (E.164) and stores only its keyed hash."),
        _m("account.delete", DeleteAccount, "Delete your account and log out every device."),
        _m("device.list", NoParams, "Devices logged in to your account.", writes=False),
        _m("device.revoke", DeviceRevoke, "Log a device out; its connections drop at once."),
        _m("device.logout", NoParams, "Log this device out."),
        _m("device.rename", DeviceRename, "Rename one of your devices; your other devices are told."),
        _m("device.link_start", LinkStart, "New device: get a code (and QR) to approve from a logged-in one.",
           auth=False),
        _m("device.link_approve", LinkApprove, "Approve a new device's code: it is logged in to your account."),
        _m("device.link_poll", LinkPoll, "New device: has the code been approved? Returns the token once.",
           auth=False),
        _m("friend.add", FriendAdd, "Add a friend by handle (one-way; they are told)."),
        _m("friend.find_by_contacts", FindByContacts, "Find users by keyed hashes of phone numbers.",
           writes=False),
        _m("friend.find_by_phones", FindByPhones,
           "Browsers: find users by phone numbers, normalized and hashed by the server, then discarded.",
           writes=False),
        _m("friend.list", NoParams, "Your friends, favourites first.", writes=False),
        _m("friend.update", FriendUpdate, "Favourite or hide a friend."),
        _m("friend.remove", UserRef, "Remove a friend."),
        _m("friend.block", UserRef, "Block a user: they cannot message or add you."),
        _m("friend.unblock", UserRef, "Unblock a user."),
        _m("friend.blocked", NoParams, "Users you blocked.", writes=False),
        _m("user.get", UserGet, "A user's public profile by id or handle.", writes=False),
        _m("chat.open_direct", OpenDirect, "The 1:1 chat with a user (created on first use)."),
        _m("chat.create_group", CreateGroup, "Create a group chat with members."),
        _m("chat.create_open", CreateOpen, "Create a public open chat joined by link code."),
        _m("chat.join_open", JoinOpen, "Join an open chat by its link code with a room nickname."),
        _m("chat.invite", ChatInvite, "Invite users to a group chat."),
        _m("chat.remove_member", ChatMember, "Owner removes a member from a group or open chat."),
        _m("chat.leave", ChatRef, "Leave a chat."),
        _m("chat.rename", ChatRename, "Rename a group or open chat."),
        _m("chat.mute", ChatMute, "Mute or unmute a chat for all your devices."),
        _m("chat.list", NoParams, "Your chats, most recent activity first, with unread badges.",
           writes=False),
        _m("chat.get", ChatRef, "A chat with its members and their read pointers.", writes=False),
        _m("chat.read", ChatRead, "Move your read pointer; updates unread counters for everyone."),
        _m("message.send", MessageSend, "Send a message; client_id makes retries safe."),
        _m("message.edit", MessageEdit, "Edit your own message."),
        _m("message.unsend", MessageRef, "Unsend your message for everyone, within the window."),
        _m("message.react", MessageReact, "Add or remove an emoji reaction."),
        _m("message.history", History, "Messages before a sequence number, newest last.", writes=False),
        _m("message.search", Search, "Full-text search over your chats (CJK included): text, media captions"
           " and file names.", writes=False),
        _m("typing.set", Typing, "Tell the chat you are typing (ephemeral).", writes=False),
        _m("presence.get", UserIds, "Online state and last seen, as their privacy allows.", writes=False),
        _m("sync.events", SyncEvents, "Events after a cursor (long-poll with wait_s).", writes=False),
        _m("relay.list", NoParams, "Relays this server vouches for: signed descriptors, revocations, its key.",
           writes=False),
        _m("reach.report", ReachReport, "Report how routes fared from this network (no account id).",
           auth=False),
        _m("reach.probe", ReachProbe, "Padding of the requested size, to measure a route's throughput.",
           auth=False, writes=False),
        _m("admin.reach", AdminReach, "Admin: reachability by region and route, with a time series.",
           writes=False),
        _m("admin.incidents", AdminIncidents, "Admin: current and past blocking incidents.", writes=False),
    ]
}

# Media, stickers, stories, boards and moderation (issue 4), friend invites and the open-chat
# directory (issue 13) add their methods from their own modules.
# Calls (issue 12) likewise.
import dari.protocol.calls  # noqa: E402
import dari.protocol.content  # noqa: E402
import dari.protocol.e2ee  # noqa: E402
import dari.protocol.invites  # noqa: E402,F401

_FIELD = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")


def parse_params(spec: MethodSpec, params: dict[str, Any]) -> P:
    try:
        return msgspec.convert(params, spec.params)
    except msgspec.ValidationError as exc:
        # The field's name lets a client say which input to fix in its own language.
        at = _FIELD.search(str(exc))
        raise DariError(ErrorCode.INVALID_PARAMS, f"{spec.name}: {exc}",
                        {"field": at.group(1)} if at else None) from None


def lookup(method: str) -> MethodSpec:
    spec = METHODS.get(method)
    if spec is None:
        raise DariError(ErrorCode.UNKNOWN_METHOD, f"unknown method {method!r}")
    return spec
