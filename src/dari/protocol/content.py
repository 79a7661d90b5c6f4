"""Method schemas for media, stickers, stories, boards and moderation (issue 4).

Kept apart from methods.py so that file stays readable; this module adds CONTENT_METHODS to
METHODS, so every transport and the REST mapping see them like any other method.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from dari.protocol.methods import METHODS, ClientId, Id, MethodSpec, NoParams, P

BlobId = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="sha256 of the stored bytes")]
UploadId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
Offset = Annotated[int, Meta(ge=0, le=2**50)]
Caption = Annotated[str, Meta(max_length=2000)]
FileName = Annotated[str, Meta(min_length=1, max_length=255)]
PostText = Annotated[str, Meta(max_length=20000)]
CommentText = Annotated[str, Meta(min_length=1, max_length=2000)]
PostTitle = Annotated[str, Meta(min_length=1, max_length=200)]
Page = Annotated[int, Meta(ge=1, le=100000)]
StoryVisibility = Literal["public", "friends", "close_friends", "only_me"]
MediaKind = Literal["image", "video", "file", "voice"]
ReportTarget = Literal["board_post", "board_comment", "message", "story", "story_comment"]
MediaList = Annotated[list[BlobId], Meta(max_length=10)]


# -- media ------------------------------------------------------------------------------------------
class UploadBegin(P):
    size: Annotated[int, Meta(ge=1, le=2**40)]
    name: FileName = "file"
    declared_type: Annotated[str, Meta(max_length=100)] = ""   # informational only: never trusted


class UploadChunk(P):
    upload_id: UploadId
    offset: Offset
    data: Annotated[str, Meta(max_length=2 << 20, description="base64")]


class UploadRef(P):
    upload_id: UploadId


class BlobRef(P):
    blob_id: BlobId


class MediaRead(P):
    blob_id: BlobId
    offset: Offset = 0
    length: Annotated[int, Meta(ge=1, le=1 << 20)] = 512 * 1024
    thumb: bool = False


class SendMedia(P):
    chat_id: Id
    client_id: ClientId
    blob_id: BlobId
    caption: Caption = ""
    name: FileName | None = None            # shown for files; the stored bytes have no name
    kind: MediaKind | None = None           # None: from the detected type
    duration_ms: Annotated[int, Meta(ge=0, le=86400000)] | None = None  # a hint when the server cannot parse it
    reply_to: Annotated[int, Meta(ge=0, le=2**62)] | None = None


# -- stickers --------------------------------------------------------------------------------------
class PackRef(P):
    pack_id: Id


class SendSticker(P):
    chat_id: Id
    client_id: ClientId
    sticker_id: Id
    reply_to: Annotated[int, Meta(ge=0, le=2**62)] | None = None


class Recent(P):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


class StickerImport(P):
    blob_id: BlobId   # an uploaded zip archive


# -- stories ---------------------------------------------------------------------------------------
class StoryCreate(P):
    text: PostText = ""
    media: MediaList = msgspec.field(default_factory=list)
    visibility: StoryVisibility = "friends"


class StoryEdit(P):
    story_id: Id
    text: PostText | None = None
    media: MediaList | None = None
    visibility: StoryVisibility | None = None


class StoryRef(P):
    story_id: Id


class StoryPage(P):
    before_id: Id | None = None
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


class StoryProfile(P):
    user_id: Id
    before_id: Id | None = None
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


class StoryLike(P):
    story_id: Id
    on: bool = True


class StoryComment(P):
    story_id: Id
    text: CommentText
    parent_id: Id | None = None


class CommentRef(P):
    comment_id: Id


class CloseFriends(P):
    user_ids: Annotated[list[Id], Meta(max_length=5000)]


# -- boards ----------------------------------------------------------------------------------------
class BoardRef(P):
    board_id: Id | None = None
    chat_id: Id | None = None


class BoardPosts(P):
    board_id: Id
    page: Page = 1
    per_page: Annotated[int, Meta(ge=1, le=100)] = 20
    query: Annotated[str, Meta(max_length=100)] = ""
    search_in: Literal["title", "body", "title_body", "author"] = "title_body"


class PollIn(P):
    question: Annotated[str, Meta(min_length=1, max_length=200)]
    options: Annotated[list[Annotated[str, Meta(min_length=1, max_length=100)]], Meta(min_length=2, max_length=20)]
    multiple: bool = False
    anonymous: bool = False
    deadline: Annotated[int, Meta(ge=0, le=2**50)] | None = None   # ms since the epoch


class PostCreate(P):
    board_id: Id
    title: PostTitle
    body: PostText = ""
    media: MediaList = msgspec.field(default_factory=list)
    poll: PollIn | None = None
    pinned: bool = False


class PostEdit(P):
    post_id: Id
    title: PostTitle | None = None
    body: PostText | None = None


class PostRef(P):
    post_id: Id


class PostPin(P):
    post_id: Id
    pinned: bool = True


class BoardComment(P):
    post_id: Id
    body: CommentText


class Vote(P):
    post_id: Id
    options: Annotated[list[Annotated[int, Meta(ge=0, le=19)]], Meta(min_length=0, max_length=20)]


class BoardCreate(P):
    slug: Annotated[str, Meta(pattern=r"^[a-z0-9-]{2,32}$")]
    title: PostTitle
    show_ip: bool = False


class BoardNew(P):
    title: PostTitle
    slug: Annotated[str, Meta(pattern=r"^[a-z0-9-]{2,32}$")] | None = None   # made from the id if absent
    show_ip: bool = False


class BoardGrant(P):
    handle: Annotated[str, Meta(pattern=r"^[a-z0-9_.]{3,32}$")]


class BoardUpdate(P):
    board_id: Id
    title: PostTitle | None = None
    show_ip: bool | None = None


# -- moderation ------------------------------------------------------------------------------------
TargetId = Annotated[str, Meta(pattern=r"^[0-9]{1,19}(:[0-9]{1,19})?$", description="id, or chat_id:seq")]


class ReportCreate(P):
    target: ReportTarget
    target_id: TargetId
    reason: Annotated[str, Meta(min_length=1, max_length=1000)]


class AdminList(P):
    open_only: bool = True
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


class AdminHide(P):
    target: ReportTarget
    target_id: TargetId
    hidden: bool = True
    reason: Annotated[str, Meta(max_length=1000)] = ""


class AdminSuspend(P):
    user_id: Id
    days: Annotated[float, Meta(ge=0, le=36500)]   # 0 lifts a suspension
    reason: Annotated[str, Meta(max_length=1000)] = ""


def _m(name: str, params: type[P], summary: str, *, auth: bool = True, writes: bool = True) -> MethodSpec:
    return MethodSpec(name, params, auth, summary, writes)


CONTENT_METHODS: list[MethodSpec] = [
    _m("media.upload_begin", UploadBegin, "Start a chunked upload; returns upload_id and chunk_size."),
    _m("media.upload_chunk", UploadChunk, "Append base64 bytes at offset (resend from upload_status's offset)."),
    _m("media.upload_status", UploadRef, "Bytes received so far: the offset to resume from.", writes=False),
    _m("media.upload_finish", UploadRef, "Detect the type, strip metadata, thumbnail, store; returns the blob."),
    _m("media.info", BlobRef, "A blob's type, size, dimensions and thumbnail, if you may see it.", writes=False),
    _m("media.read", MediaRead, "Read a blob (or its thumbnail) in pieces over any route.", writes=False),
    _m("message.send_media", SendMedia, "Send a photo, video, file or voice message; client_id makes retries safe."),
    _m("message.send_sticker", SendSticker, "Send a sticker from an installed pack; client_id makes retries safe."),
    _m("sticker.packs", NoParams, "Every sticker pack on this server, with installed flags.", writes=False),
    _m("sticker.pack", PackRef, "One pack with its stickers.", writes=False),
    _m("sticker.installed", NoParams, "Your installed packs with their stickers.", writes=False),
    _m("sticker.install", PackRef, "Install a pack."),
    _m("sticker.remove", PackRef, "Remove a pack from your sticker picker."),
    _m("sticker.recent", Recent, "Stickers you sent recently, newest first.", writes=False),
    _m("admin.sticker_import", StickerImport, "Admin: import a sticker pack from an uploaded zip."),
    _m("story.create", StoryCreate, "Post a story: text, photos and a visibility."),
    _m("story.edit", StoryEdit, "Edit your story's text, photos or visibility."),
    _m("story.delete", StoryRef, "Delete your story."),
    _m("story.get", StoryRef, "A story, if you may see it; counts your view once."),
    _m("story.feed", StoryPage, "Your friends' stories and yours, newest first.", writes=False),
    _m("story.profile", StoryProfile, "A user's stories as you are allowed to see them.", writes=False),
    _m("story.like", StoryLike, "Like or unlike a story."),
    _m("story.comment", StoryComment, "Comment on a story, or reply to a comment (one level)."),
    _m("story.comments", StoryRef, "A story's comments with their replies.", writes=False),
    _m("story.comment_delete", CommentRef, "Delete your comment (or one on your story)."),
    _m("story.set_close_friends", CloseFriends, "Replace your close-friends list."),
    _m("story.close_friends", NoParams, "Your close-friends list.", writes=False),
    _m("board.get", BoardRef, "A board by id, or a group chat's board by chat_id.", auth=False, writes=False),
    _m("board.public", NoParams, "The public boards.", auth=False, writes=False),
    _m("board.posts", BoardPosts, "A board's posts: numbered, paged, searchable.", auth=False, writes=False),
    _m("board.post", PostRef, "A post with its comments and poll; counts a view.", auth=False),
    _m("board.post_create", PostCreate, "Write a post (with an optional poll)."),
    _m("board.post_edit", PostEdit, "Edit your post."),
    _m("board.post_delete", PostRef, "Delete your post (or any, for the chat owner)."),
    _m("board.pin", PostPin, "Pin or unpin a post as a notice."),
    _m("board.comment", BoardComment, "Comment on a post."),
    _m("board.comment_delete", CommentRef, "Delete your comment."),
    _m("board.vote", Vote, "Vote in a post's poll (an empty list withdraws the vote)."),
    _m("admin.board_create", BoardCreate, "Admin: create a public board."),
    _m("admin.board_update", BoardUpdate, "Admin: rename a public board or show masked IPs."),
    _m("board.rights", NoParams, "Whether you may create public boards (operators, or granted users).",
       writes=False),
    _m("board.create", BoardNew, "Create a public board: operators and users granted the right."),
    _m("admin.board_grant", BoardGrant, "Admin: let a user create public boards (audited)."),
    _m("admin.board_revoke", BoardGrant, "Admin: take the right to create public boards away (audited)."),
    _m("admin.board_creators", NoParams, "Admin: the users who may create public boards.", writes=False),
    _m("report.create", ReportCreate, "Report a post, comment, story or message to the operators."),
    _m("admin.reports", AdminList, "Admin: reports, open ones first.", writes=False),
    _m("admin.hide", AdminHide, "Admin: hide or restore reported content (audited)."),
    _m("admin.suspend", AdminSuspend, "Admin: suspend an account for some days, or lift it (audited)."),
    _m("admin.audit", AdminList, "Admin: the moderation audit log, newest first.", writes=False),
]

# Imported at the end of methods.py (or first, by a client): either way the methods land in METHODS.
METHODS.update((spec.name, spec) for spec in CONTENT_METHODS)
