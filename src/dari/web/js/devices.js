// Settings: the account's devices (live "online", rename, log out), approving a new device by the
// code it shows (what `dari device approve CODE` does), and the phone number for contact discovery.

import { t } from "./i18n.js";
import { $, confirmDialog, el, errorText, setBusy, toast } from "./ui.js";

const REGION_KEY = "dari.region";

// The country a phone number without +code is from: what the person chose last, else the region of
// the browser's languages ("ko-KR" -> KR, "ja" -> JP), else KR.
export function phoneRegion() {
  const saved = localStorage.getItem(REGION_KEY);
  if (saved && /^[A-Z]{2}$/.test(saved)) return saved;
  for (const tag of navigator.languages || [navigator.language]) {
    try {
      const region = new Intl.Locale(tag).maximize().region;
      if (region && /^[A-Z]{2}$/.test(region)) return region;
    } catch { /* a malformed language tag: try the next */ }
  }
  return "KR";
}

export class Devices {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.list = null; // device.list answer once loaded; events keep it current
    $("#approve-form").addEventListener("submit", (ev) => this.approve(ev));
    $("#phone-form").addEventListener("submit", (ev) => this.savePhone(ev));
    $("#btn-phone-clear").addEventListener("click", () => this.clearPhone());
  }

  async load() {
    this.renderPhone();
    const ul = $("#device-list");
    try {
      this.list = await this.session.call("device.list");
      this.render();
      this.renderRequests();
    } catch (err) {
      ul.replaceChildren(el("li.form-error", { text: errorText(err) }));
    }
  }

  onEvent(name, p) {
    if (this.list === null) return;
    const dv = this.list.find((d) => d.device_id === p.device_id);
    if (name === "device.added" || (name === "device.presence" && !dv)) { this.load(); return; }
    if (name === "device.revoked") this.list = this.list.filter((d) => d.device_id !== p.device_id);
    else if (!dv) return;
    else if (name === "device.renamed") dv.name = p.name;
    else if (name === "device.presence") {
      dv.online = p.online;
      if (!p.online) dv.last_seen_at = p.at || Date.now();
    }
    this.render();
  }

  render() {
    const editing = $("#device-list .device-rename input");
    if (editing && document.activeElement === editing) return; // do not wipe what is being typed
    $("#device-list").replaceChildren(...this.list.map((dv) => this.row(dv)));
  }

  row(dv) {
    const status = dv.online ? t("presence.online") : t("presence.last_seen", { time: this.app.relativeTime(dv.last_seen_at) });
    const li = el("li.device-row", { dataset: { deviceId: dv.device_id, online: String(!!dv.online) } },
      el("div.row-between", {},
        el("span.device", {},
          el("strong.device-name", { text: dv.name }),
          dv.kind ? el("span.muted.small.device-kind", { text: ` · ${t(`devices.kind_${dv.kind}`)}` }) : null,
          dv.current ? el("span.muted.small", { text: ` · ${t("settings.this_device")}` }) : null,
          el("span.small.device-status", { text: ` · ${status}` })),
        el("span", {},
          el("button.link.small.device-rename-btn", { type: "button", text: t("devices.rename"),
            onclick: () => this.startRename(li, dv) }),
          dv.current ? null : el("button.link.small.danger-text", { type: "button", text: t("settings.revoke"),
            onclick: () => this.revoke(dv) }))));
    return li;
  }

  // This user's other devices asking this one for the keys of the encrypted chats (e2ee_link.js).
  async renderRequests() {
    const box = $("#key-requests");
    if (this.list === null || !this.session.user) return;
    let rows = [];
    const turn = (this._requestsTurn = (this._requestsTurn || 0) + 1);
    try {
      rows = await this.app.e2ee.core.keyRequests();
    } catch (err) {
      console.warn("key requests not loaded", err);
    }
    if (turn !== this._requestsTurn) return; // a later call read a newer list
    box.hidden = !rows.length;
    $("#key-request-list").replaceChildren(...rows.map((r) => el("li.key-request.row-between",
      { dataset: { deviceId: r.device_id } },
      el("span", { text: t("e2ee.request_row", { name: r.device_name || `#${r.device_id}` }) }),
      el("span", {},
        el("button.primary.small", { type: "button", text: t("e2ee.share_keys"),
          onclick: () => this.app.e2ee.share(r.device_id) }),
        el("button.link.small.danger-text", { type: "button", text: t("e2ee.not_me"),
          onclick: () => this.app.e2ee.decline(r.device_id) })))));
  }

  startRename(li, dv) {
    if (li.querySelector("form")) return;
    const input = el("input", { name: "name", value: dv.name, maxlength: 64, required: true,
      "aria-label": t("devices.rename_label", { name: dv.name }) });
    const err = el("p.form-error", { role: "alert" });
    const form = el("form.device-rename.row-between", {}, input,
      el("button.primary.small", { type: "submit", text: t("common.save") }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const res = await this.session.call("device.rename", { device_id: dv.device_id, name: input.value });
        dv.name = res.name;
        input.blur();
        this.render();
        toast(t("devices.renamed", { name: res.name }));
      } catch (e) {
        err.textContent = errorText(e);
      }
    });
    input.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { input.blur(); this.render(); } });
    li.append(form, err);
    input.focus();
    input.select();
  }

  async revoke(dv) {
    if (!(await confirmDialog(t("settings.revoke_confirm", { name: dv.name }), { ok: t("settings.revoke"), danger: true }))) return;
    try { await this.session.call("device.revoke", { device_id: dv.device_id }); this.load(); }
    catch (err) { toast(errorText(err), { kind: "error" }); }
  }

  async approve(ev) {
    ev.preventDefault();
    const form = ev.target;
    const btn = form.querySelector("button[type=submit]");
    const errBox = $(".form-error", form);
    const done = $(".approve-done", form);
    errBox.textContent = done.textContent = "";
    setBusy(btn, true);
    try {
      const code = form.code.value.trim().toUpperCase().replace(/\s+/g, "");
      const res = await this.session.call("device.link_approve", { code });
      form.code.value = "";
      done.textContent = t("devices.approved", { name: res.name });
      this.load();
    } catch (err) {
      errBox.textContent = errorText(err);
    } finally {
      setBusy(btn, false);
    }
  }

  renderPhone() {
    const has = !!this.session.user?.has_phone;
    $("#phone-status").textContent = t(has ? "devices.phone_set" : "devices.phone_not_set");
    $("#phone-status").dataset.set = String(has);
    $("#btn-phone-clear").hidden = !has;
    const region = $("#phone-form").region;
    if (!region.value) region.value = phoneRegion();
  }

  async savePhone(ev) {
    ev.preventDefault();
    const form = ev.target;
    const errBox = $(".form-error", form);
    errBox.textContent = "";
    const region = form.region.value.trim().toUpperCase();
    try {
      // The browser cannot run libphonenumber: the server normalizes and keeps only the keyed hash.
      const me = await this.session.call("account.set_phone_number", { phone: form.phone.value.trim(), region });
      localStorage.setItem(REGION_KEY, region);
      form.phone.value = "";
      this.adoptMe(me);
      toast(t("devices.phone_saved"));
    } catch (err) {
      errBox.textContent = errorText(err);
    }
  }

  async clearPhone() {
    try {
      this.adoptMe(await this.session.call("account.set_phone", { phone_hash: null }));
      toast(t("devices.phone_cleared"));
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  adoptMe(me) {
    Object.assign(this.session.user, me);
    this.app.writeCacheUser(this.session.user);
    this.renderPhone();
  }
}
