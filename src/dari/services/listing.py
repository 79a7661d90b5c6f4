"""An open chat's directory listing: stored fields and the normalized text the directory searches."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from dari.storage.base import Tx


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def dir_text(title: str, description: str, tags: Sequence[str]) -> str:
    return "\n".join((normalize(title), normalize(description), " ".join(normalize(t) for t in tags)))


def set_listing(tx: Tx, chat_id: int, *, listed: bool | None = None, description: str | None = None,
                tags: Sequence[str] | None = None) -> None:
    """Store what changed and recompute the search text (also after a rename: pass nothing)."""
    row = tx.one("SELECT title, listed, description, tags FROM chats WHERE id = ?", (chat_id,))
    assert row is not None
    title = row[0] or ""
    new_listed = row[1] if listed is None else int(listed)
    new_desc = row[2] if description is None else description.strip()
    new_tags = row[3].split() if tags is None else list(dict.fromkeys(tags))
    tx.execute("UPDATE chats SET listed = ?, description = ?, tags = ?, dir_text = ? WHERE id = ?",
               (new_listed, new_desc, " ".join(new_tags), dir_text(title, new_desc, new_tags), chat_id))
