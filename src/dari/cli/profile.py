"""The CLI profile: one directory per logged-in device.

    $DARI_HOME/<profile>/        (default ~/.config/dari/<profile>)
        profile.json             server URL, user, device id, last event cursor
        token                    the device token, mode 0600
        outbox.db                the SDK's on-disk outbox (G7)
        crypto-U-D.db (+ .key)   end-to-end encryption keys of device D of user U, local search index

A profile is a device: logging in on a second profile registers a second device of the account,
the way a phone and a PC are two devices.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ProfileError(Exception):
    """A local problem with the profile (not logged in, bad name): reported like a server error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def home() -> Path:
    base = os.environ.get("DARI_HOME")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "dari"


@dataclass
class Profile:
    name: str
    path: Path
    server: str = DEFAULT_SERVER
    user_id: int | None = None
    handle: str | None = None
    display_name: str | None = None
    device_id: int | None = None
    device_name: str | None = None
    cursor: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- loading and saving ----------------------------------------------------------------
    @classmethod
    def load(cls, name: str | None = None, server: str | None = None) -> Profile:
        name = name or os.environ.get("DARI_PROFILE") or "default"
        if not _NAME.match(name):
            raise ProfileError("invalid_params", f"invalid profile name {name!r}: use letters, digits, _ . -")
        path = home() / name
        prof = cls(name=name, path=path)
        meta = path / "profile.json"
        if meta.exists():
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError) as exc:
                raise ProfileError("bad_profile", f"cannot read {meta}: {exc}") from None
            for key in ("server", "user_id", "handle", "display_name", "device_id", "device_name", "cursor"):
                if key in data:
                    setattr(prof, key, data[key])
            prof.extra = data.get("extra", {})
        if server:
            # A new server means the old token and cursor belong to someone else's database.
            if prof.server != server.rstrip("/") and prof.token is not None:
                raise ProfileError("conflict", f"profile {name!r} is logged in to {prof.server}; log out first"
                                   " or use another --profile")
            prof.server = server.rstrip("/")
        return prof

    def _ensure_dir(self) -> None:
        # The directory holds a bearer token: nobody else on the machine may list or read it.
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    def save(self) -> None:
        self._ensure_dir()
        data = {k: v for k, v in asdict(self).items() if k not in ("name", "path")}
        tmp = self.path / "profile.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.path / "profile.json")   # atomic: a crash never leaves half a profile

    # -- token -----------------------------------------------------------------------------
    @property
    def token_path(self) -> Path:
        return self.path / "token"

    @property
    def token(self) -> str | None:
        try:
            return self.token_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def set_token(self, token: str) -> None:
        self._ensure_dir()
        tmp = self.path / "token.tmp"
        # Created 0600 from the start, so there is no moment the token is world-readable.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.replace(tmp, self.token_path)

    def clear_login(self) -> None:
        """Forget the device (logout, revoke, delete). The outbox stays: it may hold unsent text; the
        device's E2EE keys do not."""
        self.token_path.unlink(missing_ok=True)
        if self.user_id is not None and self.device_id is not None:
            # The device is gone for good: its private keys and decrypted-message index go with it.
            base = self.crypto_path.format(user_id=self.user_id, device_id=self.device_id)
            for suffix in ("", ".key", "-wal", "-shm"):
                Path(base + suffix).unlink(missing_ok=True)
        self.user_id = self.handle = self.display_name = self.device_id = self.device_name = None
        self.cursor = None
        self.extra.pop("direct_chats", None)   # another account may log in here next
        if self.path.exists():
            self.save()

    def adopt(self, auth: dict[str, Any], device_name: str) -> None:
        """Keep what account.signup / account.login returned."""
        user = auth["user"]
        self.user_id, self.handle, self.display_name = user["user_id"], user["handle"], user["display_name"]
        self.device_id, self.device_name = auth["device_id"], device_name
        self.cursor = None
        self.set_token(auth["token"])
        self.save()

    def require_login(self) -> str:
        token = self.token
        if token is None:
            raise ProfileError("unauthenticated", f"profile {self.name!r} is not logged in; run"
                               f" `dari account login HANDLE --profile {self.name}` (or `account signup`)")
        return token

    @property
    def outbox_path(self) -> str:
        return str(self.path / "outbox.db")

    @property
    def crypto_path(self) -> str:
        """The E2EE store, one per device (the SDK fills in the ids once logged in)."""
        return str(self.path / "crypto-{user_id}-{device_id}.db")

    def has_outbox(self) -> bool:
        return (self.path / "outbox.db").exists()
