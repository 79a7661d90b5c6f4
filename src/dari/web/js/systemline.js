// System lines ("Alice invited Bob") in the reader's language, from the structured event the server
// sends with each system message (docs/protocol.md, "System messages"). The server's English text is
// used only for an event this page does not know yet.

import { language, t } from "./i18n.js";

const EVENTS = new Set(["group_created", "open_created", "member_joined", "members_invited", "chat_renamed",
  "member_left", "member_removed", "e2ee_enabled"]);

function person(p) {
  return t("system.person", { name: p?.name || "?" });
}

function people(list) {
  const names = (list || []).map(person);
  try {
    return new Intl.ListFormat(language(), { style: "long", type: "conjunction" }).format(names);
  } catch {
    return names.join(", ");
  }
}

export function systemText(msg) {
  const s = msg.system;
  if (!s || !EVENTS.has(s.event)) return msg.text || "";
  return t(`system.${s.event}`, { actor: person(s.actor), title: s.title ?? "", users: people(s.users) });
}

// The server's placeholders for a person who is gone: a 1:1 chat's title once the other person's
// account is deleted, and the sender of messages from a deleted account.
const PLACEHOLDERS = { "(left)": "names.left", "(deleted)": "names.deleted" };

export function shownName(name) {
  return PLACEHOLDERS[name] ? t(PLACEHOLDERS[name]) : name;
}
