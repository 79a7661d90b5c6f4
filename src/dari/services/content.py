"""Issue 4's services in one place: media, stickers, stories, boards, moderation.

The registry merges `handlers()` into its method table; the server's media_http.setup calls
`start()` once the database is open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from dari.protocol.errors import DariError
from dari.services.board_rights import BoardRights
from dari.services.boards import Boards
from dari.services.core import Core
from dari.services.media import Media
from dari.services.moderation import Moderation
from dari.services.stickers import Stickers
from dari.services.stories import Stories

log = logging.getLogger("dari.content")


class ContentServices:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.media = Media(core)
        self.stickers = Stickers(core, self.media)
        self.stories = Stories(core)
        self.boards = Boards(core)
        self.board_rights = BoardRights(core)
        self.moderation = Moderation(core)

    async def start(self) -> None:
        if self.core.settings.default_stickers:
            try:
                pack = await self.stickers.import_default()
            except DariError as err:   # never keep the server from starting over stickers
                log.warning("default sticker pack not imported: %s", err.message)
            else:
                if pack is not None:
                    log.info("imported the default sticker pack (%d stickers)", len(pack.stickers or []))

    def handlers(self) -> dict[str, Callable[[Any, Any], Awaitable[Any]]]:
        md, st, sr, b, mo = self.media, self.stickers, self.stories, self.boards, self.moderation
        return {
            "media.upload_begin": md.upload_begin, "media.upload_chunk": md.upload_chunk,
            "media.upload_status": md.upload_status, "media.upload_finish": md.upload_finish,
            "media.info": md.info, "media.read": md.read, "message.send_media": md.send_media,
            "message.send_sticker": st.send, "sticker.packs": st.packs, "sticker.pack": st.pack,
            "sticker.installed": st.installed, "sticker.install": st.install, "sticker.remove": st.remove,
            "sticker.recent": st.recent, "admin.sticker_import": st.admin_import,
            "story.create": sr.create, "story.edit": sr.edit, "story.delete": sr.delete, "story.get": sr.get,
            "story.feed": sr.feed, "story.profile": sr.profile, "story.like": sr.like, "story.comment": sr.comment,
            "story.comments": sr.comments, "story.comment_delete": sr.comment_delete,
            "story.set_close_friends": sr.set_close_friends, "story.close_friends": sr.close_friends,
            "board.get": b.get, "board.public": b.public, "board.posts": b.posts, "board.post": b.post,
            "board.post_create": b.post_create, "board.post_edit": b.post_edit, "board.post_delete": b.post_delete,
            "board.pin": b.pin, "board.comment": b.comment, "board.comment_delete": b.comment_delete,
            "board.vote": b.vote, "admin.board_update": b.admin_update,
            "admin.board_create": self.board_rights.admin_create, "board.rights": self.board_rights.rights,
            "board.create": self.board_rights.create, "admin.board_grant": self.board_rights.grant,
            "admin.board_revoke": self.board_rights.revoke, "admin.board_creators": self.board_rights.creators,
            "report.create": mo.report, "admin.reports": mo.reports, "admin.hide": mo.hide,
            "admin.suspend": mo.suspend, "admin.audit": mo.audit,
        }
