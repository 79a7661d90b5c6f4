"""All services behind one call: (caller, method, params) -> result. Every transport comes here."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dari.bus import Bus
from dari.config import Settings
from dari.protocol import methods as m
from dari.protocol.errors import DariError, ErrorCode
from dari.services.accounts import Accounts
from dari.services.calls import Calls
from dari.services.chats import Chats
from dari.services.content import ContentServices
from dari.services.core import Caller, Core
from dari.services.device_links import DeviceLinks
from dari.services.devices import Devices
from dari.services.e2ee_chats import E2eeChats
from dari.services.e2ee_keys import Keys
from dari.services.friend_invites import FriendInvites
from dari.services.friends import Friends
from dari.services.messages import Messages
from dari.services.open_directory import OpenDirectory
from dari.services.presence import PresenceService
from dari.services.reach import Reach
from dari.services.relays import Relays
from dari.services.sync import Sync
from dari.services.todevice import ToDevice
from dari.storage.base import Database, Tx

Handler = Callable[[Any, Any], Awaitable[Any]]


class Services:
    def __init__(self, settings: Settings, db: Database, bus: Bus) -> None:
        self.core = Core(settings, db, bus)
        db.on_commit = bus.publish
        self.accounts = Accounts(self.core)
        self.friends = Friends(self.core)
        self.chats = Chats(self.core)
        self.messages = Messages(self.core)
        self.sync = Sync(self.core)
        self.presence = PresenceService(self.core)
        self.reach = Reach(self.core)
        self.device_links = DeviceLinks(self.core)
        self.devices = Devices(self.core, self.accounts.pending_seen)
        a, f, c, msg = self.accounts, self.friends, self.chats, self.messages
        self.handlers: dict[str, Handler] = {
            "server.info": a.server_info, "session.ping": self._ping,
            "account.signup": a.signup, "account.login": a.login,
            "account.me": a.me, "account.update_profile": a.update_profile,
            "account.change_password": a.change_password, "account.set_privacy": a.set_privacy,
            "account.set_phone": a.set_phone, "account.set_phone_number": a.set_phone_number,
            "account.delete": a.delete,
            "device.list": self.devices.list, "device.rename": self.devices.rename,
            "device.revoke": a.revoke, "device.logout": a.logout,
            "device.link_start": self.device_links.start, "device.link_approve": self.device_links.approve,
            "device.link_poll": self.device_links.poll,
            "friend.add": f.add, "friend.find_by_contacts": f.find_by_contacts,
            "friend.find_by_phones": f.find_by_phones, "friend.list": f.list_friends,
            "friend.update": f.update, "friend.remove": f.remove, "friend.block": f.block,
            "friend.unblock": f.unblock, "friend.blocked": f.blocked, "user.get": f.get_user,
            "chat.open_direct": c.open_direct, "chat.create_group": c.create_group,
            "chat.create_open": c.create_open, "chat.join_open": c.join_open, "chat.invite": c.invite,
            "chat.remove_member": c.remove_member, "chat.leave": c.leave, "chat.rename": c.rename,
            "chat.mute": c.mute, "chat.list": c.list_chats, "chat.get": c.get, "chat.read": c.read,
            "message.send": msg.send, "message.edit": msg.edit, "message.unsend": msg.unsend,
            "message.react": msg.react, "message.history": msg.history, "message.search": msg.search,
            "typing.set": self.presence.typing, "presence.get": self.presence.get,
            "sync.events": self.sync.events,
            "relay.list": Relays(self.core).list,
            "reach.report": self.reach.report, "reach.probe": self.reach.probe, "admin.reach": self.reach.admin_reach,
            "admin.incidents": self.reach.admin_incidents,
        }
        inv, od = FriendInvites(self.core), OpenDirectory(self.core)
        self.handlers.update({
            "friend.invite": inv.get, "friend.invite_rotate": inv.rotate, "friend.invite_revoke": inv.revoke,
            "friend.invite_preview": inv.preview, "friend.add_by_invite": inv.add,
            "chat.open_preview": od.preview, "chat.open_settings": od.settings, "chat.directory": od.search,
        })
        keys, todev = Keys(self.core), ToDevice(self.core)
        self.handlers.update({
            "keys.upload": keys.upload, "keys.query": keys.query, "keys.claim": keys.claim, "keys.count": keys.count,
            "todevice.send": todev.send, "todevice.fetch": todev.fetch, "todevice.ack": todev.ack,
            "chat.enable_e2ee": E2eeChats(self.core).enable,
        })
        self.content = ContentServices(self.core)
        self.handlers.update(self.content.handlers())
        self.calls = Calls(self.core)
        self.handlers.update(self.calls.handlers())
        missing = set(m.METHODS) - set(self.handlers) - {"session.open"}
        assert not missing, f"methods without a handler: {missing}"

    async def _ping(self, caller: Caller | None, p: m.NoParams) -> dict[str, int]:
        return {"t": int(time.time() * 1000)}

    async def start(self) -> None:
        await self.core.db.start()

        def load_or_create(name: str, make: Callable[[], str]) -> Callable[[Tx], str]:
            def fn(tx: Tx) -> str:
                value = tx.scalar("SELECT value FROM meta WHERE key = ?", (name,))
                if value is None:
                    value = make()
                    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                               (name, value))
                    value = tx.scalar("SELECT value FROM meta WHERE key = ?", (name,))
                return str(value)
            return fn

        self.core.contact_key = await self.core.db.write(load_or_create("contact_key", lambda: secrets.token_hex(32)))
        # Every process on one database shares this id; it namespaces the shared bus so two
        # deployments (or test runs) on one Redis never see each other's events.
        self.core.cluster_id = await self.core.db.write(load_or_create("cluster_id", lambda: secrets.token_hex(8)))

    async def close(self) -> None:
        await self.calls.close()
        await self.accounts.close()   # pending devices.last_seen_at
        await self.core.db.close()

    async def call(self, caller: Caller | None, method: str, params: dict[str, Any]) -> Any:
        spec = m.lookup(method)
        if spec.auth and caller is None:
            raise DariError(ErrorCode.UNAUTHENTICATED, f"{method} needs a logged-in session")
        handler = self.handlers.get(method)
        if handler is None:
            raise DariError(ErrorCode.UNKNOWN_METHOD, f"{method} is only available on realtime connections")
        return await handler(caller, m.parse_params(spec, params))
