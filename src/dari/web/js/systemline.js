// System lines ("Alice invited Bob") in the reader's language, from the structured event the server
// sends with each system message (docs/protocol.md, "System messages"). The server's English text is
// used only for an event this page does not know yet.

import { language, t } from "./i18n.js";

const EVENTS = new Set(["group_created", "open_created", "member_joined", "members_invited", "chat_renamed",
  "member_left", "member_removed", "call_ended", "call_missed", "call_declined", "call_busy", "group_call_started",
  "e2ee_enabled"]);
// Calls have a voice and a video wording: "system.call_missed" and "system.call_missed_video".
const CALLS = new Set(["call_ended", "call_missed", "call_declined", "call_busy"]);

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

// 1:05, 12:00, 1:02:03, as phones show a call's length (system_events.duration on the server).
function callLength(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function systemText(msg) {
  const s = msg.system;
  if (!s || !EVENTS.has(s.event)) return msg.text || "";
  const key = CALLS.has(s.event) && s.video ? `system.${s.event}_video` : `system.${s.event}`;
  return t(key, { actor: person(s.actor), title: s.title ?? "", users: people(s.users),
    duration: callLength(s.duration_s || 0) });
}

// The server's placeholders for a person who is gone: a 1:1 chat's title once the other person's
// account is deleted, and the sender of messages from a deleted account.
const PLACEHOLDERS = { "(left)": "names.left", "(deleted)": "names.deleted" };

export function shownName(name) {
  return PLACEHOLDERS[name] ? t(PLACEHOLDERS[name]) : name;
}
