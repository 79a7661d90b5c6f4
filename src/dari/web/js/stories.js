// Stories (KakaoStory / LINE VOOM): the feed of friends' posts newest first with paging, a composer
// (text, photos, visibility), likes, comments with one level of replies, unique views (counted when
// a post is on screen), a person's posts, the close-friends list, and realtime notices.

import { formatShort, t } from "./i18n.js";
import { $, avatar, confirmDialog, dialog, el, errorText, setBusy, toast } from "./ui.js";

const PAGE = 10;
const VIS_ICON = { public: "🌐", friends: "👥", close_friends: "💛", only_me: "🔒" };

export class Stories {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.stories = new Map(); // story_id -> story
    this.order = [];
    this.hasMore = false;
    this.profile = null; // null: the feed; else the user whose posts are shown
    this.photos = []; // composer: [{file, url}]
    this.viewed = new Set();
    this.edit = null; // editing one of your stories: {id, keep: [media], files: [{file, url, blob}], node}
    this.loaded = false;
    this.loading = false;
    this.feedEl = $("#story-feed");
    this.observer = new IntersectionObserver((entries) => this.onVisible(entries), { threshold: 0.5 });
    this.bind();
  }

  me() { return this.session.user?.user_id; }

  bind() {
    const form = $("#story-form");
    form.addEventListener("submit", (ev) => { ev.preventDefault(); this.post(form); });
    $("#btn-story-photo").addEventListener("click", () => $("#story-file").click());
    $("#story-file").addEventListener("change", (ev) => {
      for (const f of ev.target.files) {
        if (this.photos.length >= 10) break;
        this.photos.push({ file: f, url: URL.createObjectURL(f) });
      }
      ev.target.value = "";
      this.renderPhotos();
    });
    $("#btn-my-stories").addEventListener("click", () => this.openProfile(this.session.user));
    $("#btn-story-feed").addEventListener("click", () => this.openFeed());
    $("#btn-close-friends").addEventListener("click", () => this.editCloseFriends());
    $("#story-more").addEventListener("click", () => this.loadPage());
    this.feedEl.addEventListener("click", (ev) => this.onClick(ev));
    this.feedEl.addEventListener("submit", (ev) => {
      if (ev.target.closest(".story-edit")) { ev.preventDefault(); this.saveEdit(ev.target.closest(".story-edit")); }
      else this.onCommentSubmit(ev);
    });
  }

  show() {
    $("#stories-dot").hidden = true;
    if (!this.loaded && !this.loading) this.reload();
    else this.render();
  }

  openFeed() {
    this.profile = null;
    this.reload();
  }

  openProfile(user) {
    this.profile = user;
    this.reload();
  }

  async reload() {
    this.stories.clear();
    this.order = [];
    this.hasMore = false;
    this.loaded = true;
    this.render();
    await this.loadPage();
  }

  async loadPage() {
    if (this.loading) return;
    this.loading = true;
    const before = this.order.length ? this.order[this.order.length - 1] : undefined;
    const profile = this.profile;
    try {
      const res = profile
        ? await this.session.call("story.profile", { user_id: profile.user_id, before_id: before, limit: PAGE })
        : await this.session.call("story.feed", { before_id: before, limit: PAGE });
      if (profile !== this.profile) return;
      if (res.user) this.profile = res.user;
      for (const s of res.stories) {
        if (!this.stories.has(s.story_id)) this.order.push(s.story_id);
        this.stories.set(s.story_id, s);
      }
      this.hasMore = res.has_more;
    } catch (err) {
      if (err.code !== "unavailable") toast(errorText(err), { kind: "error" });
      this.loaded = false;
    } finally {
      this.loading = false;
    }
    this.render();
  }

  // -- rendering ----------------------------------------------------------------------------
  render() {
    const mine = !this.profile || this.profile.user_id === this.me();
    $("#story-form").hidden = !mine;
    $("#btn-story-feed").hidden = !this.profile;
    const head = $("#story-profile-head");
    head.hidden = !this.profile;
    if (this.profile) {
      head.replaceChildren(avatar(this.profile.display_name, this.profile.user_id, "big"),
        el("div.story-profile-text", {}, el("h3", { text: this.profile.display_name }),
          el("p.muted.small", { text: `@${this.profile.handle || ""}` }),
          this.profile.status_message ? el("p.small", { text: this.profile.status_message }) : null),
        el("button.secondary.small", { type: "button", text: t("stories.feed"), onclick: () => this.openFeed() }));
    }
    this.observer.disconnect();
    const cards = this.order.map((id) => this.card(this.stories.get(id)));
    this.feedEl.replaceChildren(...cards);
    for (const c of cards) this.observer.observe(c);
    $("#story-empty").hidden = this.loading || this.order.length > 0;
    $("#story-more").hidden = !this.hasMore;
    this.app.media.scheduleSweep();
  }

  card(s) {
    const mine = s.author.user_id === this.me();
    const card = el("article.story-card.card", { dataset: { storyId: s.story_id }, "aria-label": t("stories.post_by", { name: s.author.display_name }) });
    card.append(el("header.story-head", {},
      avatar(s.author.display_name, s.author.user_id),
      el("div.story-who", {},
        el("button.link.story-author", { type: "button", dataset: { act: "profile" }, text: s.author.display_name }),
        el("span.muted.small", {}, el("time", { datetime: new Date(s.created_at).toISOString(), text: formatShort(s.created_at) }),
          " · ", el("span", { title: t(`stories.vis_${s.visibility}`), text: `${VIS_ICON[s.visibility] || ""} ${t(`stories.vis_${s.visibility}`)}` }),
          s.edited_at ? ` · ${t("message.edited")}` : "")),
      mine ? el("div.story-own", {},
        el("button.link.small", { type: "button", dataset: { act: "edit" }, text: t("stories.edit") }),
        el("button.link.small.danger-text", { type: "button", dataset: { act: "delete" }, text: t("stories.delete") })) : null));
    if (this.edit?.id === s.story_id) {
      card.append(this.edit.node);
    } else {
      if (s.text) card.append(el("p.story-text", { text: s.text }));
      if (s.media.length) card.append(this.grid(s.media));
    }
    card.append(el("footer.story-foot", {},
      el(`button.story-like${s.liked ? ".on" : ""}`, { type: "button", dataset: { act: "like" },
        "aria-pressed": String(s.liked), "aria-label": t("stories.like_aria", { n: s.likes }) },
      el("span", { "aria-hidden": "true", text: s.liked ? "♥" : "♡" }), el("span.n-likes", { text: ` ${s.likes}` })),
      el("button.story-comment-btn", { type: "button", dataset: { act: "comments" }, "aria-expanded": "false",
        "aria-label": t("stories.comments_aria", { n: s.comments }) },
      el("span", { "aria-hidden": "true", text: "💬" }), el("span.n-comments", { text: ` ${s.comments}` })),
      el("span.story-views.muted.small", { text: t("stories.views", { n: s.views }) })));
    card.append(el("section.story-comments", { hidden: true }));
    return card;
  }

  grid(media) {
    const grid = el(`div.story-grid.n${Math.min(media.length, 4)}`);
    media.forEach((m, i) => {
      if ((m.type || "").startsWith("video/")) {
        grid.append(el("div.story-video", {}, this.app.media.player(m, "video")));
        return;
      }
      grid.append(el("button.story-photo", { type: "button", dataset: { act: "photo", idx: i }, "aria-label": t("media.open_photo") },
        // One photo is shown large: the full picture; a grid uses the thumbnails.
        this.app.media.img(m.blob_id, { thumb: media.length > 1 && !!m.thumbnail_id, alt: "" })));
    });
    return grid;
  }

  // Re-render one card (its text, photos or visibility changed), keeping its open comments.
  replaceCard(id) {
    const old = this.feedEl.querySelector(`[data-story-id="${id}"]`);
    const s = this.stories.get(id);
    if (!old || !s) return;
    const node = this.card(s);
    const box = old.querySelector(".story-comments");
    node.querySelector(".story-comments").replaceWith(box);
    node.querySelector(".story-comment-btn").setAttribute("aria-expanded", String(!box.hidden));
    this.observer.unobserve(old);
    old.replaceWith(node);
    this.observer.observe(node);
    this.app.media.scheduleSweep();
  }

  removeStory(id) {
    if (this.edit?.id === id) this.cancelEdit();
    this.stories.delete(id);
    this.order = this.order.filter((x) => x !== id);
    this.render();
  }

  patchCounts(id) {
    const s = this.stories.get(id);
    const card = this.feedEl.querySelector(`[data-story-id="${id}"]`);
    if (!s || !card) return;
    const like = card.querySelector(".story-like");
    like.classList.toggle("on", s.liked);
    like.setAttribute("aria-pressed", String(s.liked));
    like.setAttribute("aria-label", t("stories.like_aria", { n: s.likes }));
    like.firstChild.textContent = s.liked ? "♥" : "♡";
    card.querySelector(".n-likes").textContent = ` ${s.likes}`;
    card.querySelector(".n-comments").textContent = ` ${s.comments}`;
    card.querySelector(".story-views").textContent = t("stories.views", { n: s.views });
  }

  // A post counts as viewed once it has been half on screen (story.get counts unique viewers).
  onVisible(entries) {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      const id = Number(e.target.dataset.storyId);
      if (this.viewed.has(id)) continue;
      this.viewed.add(id);
      this.session.call("story.get", { story_id: id }).then((s) => {
        const have = this.stories.get(id);
        if (!have) return;
        // The author may have edited it since the feed was loaded: show the new text and photos.
        const changed = have.edited_at !== s.edited_at || have.visibility !== s.visibility;
        Object.assign(have, s);
        if (changed && this.edit?.id !== id) this.replaceCard(id);
        else this.patchCounts(id);
      }).catch((err) => {
        this.viewed.delete(id);
        if (err.code === "not_found") this.removeStory(id); // deleted, or no longer shared with you
      });
    }
  }

  // -- actions ------------------------------------------------------------------------------
  async onClick(ev) {
    const btn = ev.target.closest("[data-act]");
    if (!btn) return;
    const card = btn.closest("[data-story-id]");
    const id = Number(card.dataset.storyId);
    const s = this.stories.get(id);
    try {
      switch (btn.dataset.act) {
        case "profile": this.openProfile(s.author); break;
        case "photo": {
          const m = s.media[Number(btn.dataset.idx)];
          this.app.media.openViewer(m, s.text);
          break;
        }
        case "like": {
          const res = await this.session.call("story.like", { story_id: id, on: !s.liked });
          s.liked = res.liked;
          s.likes = res.likes;
          this.patchCounts(id);
          break;
        }
        case "comments": {
          const box = card.querySelector(".story-comments");
          box.hidden = !box.hidden;
          btn.setAttribute("aria-expanded", String(!box.hidden));
          if (!box.hidden) await this.loadComments(id);
          break;
        }
        case "reply": {
          const form = card.querySelector(".comment-form");
          form.dataset.parent = btn.dataset.commentId;
          form.text.placeholder = t("stories.reply_to", { name: btn.dataset.name });
          $(".reply-cancel", form).hidden = false;
          form.text.focus();
          break;
        }
        case "reply-cancel": this.resetCommentForm(btn.closest("form")); break;
        case "delete-comment":
          await this.session.call("story.comment_delete", { comment_id: Number(btn.dataset.commentId) });
          await this.loadComments(id);
          break;
        case "delete":
          if (!(await confirmDialog(t("stories.delete_confirm"), { ok: t("stories.delete"), danger: true }))) return;
          await this.session.call("story.delete", { story_id: id });
          this.removeStory(id);
          break;
        case "edit": this.startEdit(id); break;
        case "edit-cancel": this.cancelEdit(); this.replaceCard(id); break;
        case "edit-add-photo": this.edit.node.querySelector("input[type=file]").click(); break;
        case "edit-remove": {
          const i = Number(btn.dataset.idx);
          if (btn.dataset.kind === "keep") this.edit.keep.splice(i, 1);
          else URL.revokeObjectURL(this.edit.files.splice(i, 1)[0].url);
          this.renderEditPhotos();
          break;
        }
        default: break;
      }
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  // -- editing your own story: text, photos and visibility in place --------------------------
  startEdit(id) {
    const s = this.stories.get(id);
    if (!s) return;
    const prev = this.edit?.id;
    this.cancelEdit();
    if (prev !== undefined && prev !== id) this.replaceCard(prev);
    const file = el("input", { type: "file", accept: "image/*", multiple: true, hidden: true });
    const form = el("form.story-edit", { novalidate: true, "aria-label": t("stories.edit_title") },
      el("textarea", { name: "text", rows: "3", maxlength: "20000", "aria-label": t("stories.placeholder") }),
      el("ul.story-photos"),
      el("div.row-between.story-tools", {},
        el("div.row-left", {},
          el("button.secondary.small", { type: "button", dataset: { act: "edit-add-photo" }, text: t("stories.add_photos") }),
          file,
          el("select.vis-select", { name: "visibility", "aria-label": t("stories.visibility") },
            ["friends", "close_friends", "public", "only_me"].map((v) =>
              el("option", { value: v, text: t(`stories.vis_${v}`), selected: v === s.visibility })))),
        el("div.row-left", {},
          el("button.secondary.small", { type: "button", dataset: { act: "edit-cancel" }, text: t("common.cancel") }),
          el("button.primary.small", { type: "submit", text: t("common.save") }))),
      el("p.form-error", { role: "alert" }));
    form.elements.text.value = s.text;
    file.addEventListener("change", () => {
      for (const f of file.files) {
        if (this.edit.keep.length + this.edit.files.length >= 10) break;
        this.edit.files.push({ file: f, url: URL.createObjectURL(f), blob: null });
      }
      file.value = "";
      this.renderEditPhotos();
    });
    this.edit = { id, keep: [...s.media], files: [], node: form };
    this.renderEditPhotos();
    this.replaceCard(id);
    form.elements.text.focus();
  }

  renderEditPhotos() {
    const ed = this.edit;
    const remove = (kind, i) => el("button.icon.small", { type: "button", dataset: { act: "edit-remove", kind, idx: i },
      "aria-label": t("stories.remove_photo"), text: "×" });
    ed.node.querySelector(".story-photos").replaceChildren(
      ...ed.keep.map((m, i) => el("li.story-photo-pick", {},
        this.app.media.img(m.blob_id, { thumb: !!m.thumbnail_id, alt: "" }), remove("keep", i))),
      ...ed.files.map((p, i) => el("li.story-photo-pick", {}, el("img", { src: p.url, alt: "" }), remove("new", i))));
  }

  cancelEdit() {
    if (!this.edit) return;
    this.edit.files.forEach((p) => URL.revokeObjectURL(p.url));
    this.edit = null;
  }

  async saveEdit(form) {
    const ed = this.edit;
    const s = ed && this.stories.get(ed.id);
    if (!s) return;
    const errBox = $(".form-error", form);
    errBox.textContent = "";
    const text = form.elements.text.value.trim();
    if (!text && !ed.keep.length && !ed.files.length) { errBox.textContent = t("stories.empty_post"); return; }
    const btn = form.querySelector("button[type=submit]");
    setBusy(btn, true);
    try {
      const params = { story_id: ed.id, text, visibility: form.elements.visibility.value };
      const same = ed.files.length === 0 && ed.keep.length === s.media.length
        && ed.keep.every((m, i) => m.blob_id === s.media[i].blob_id);
      if (!same) {
        for (const [i, p] of ed.files.entries()) {
          btn.textContent = t("stories.uploading", { i: i + 1, n: ed.files.length });
          p.blob ??= await this.app.media.upload(p.file, { id: `story-edit-${i}`, file: p.file, sent: 0 });
        }
        params.media = [...ed.keep.map((m) => m.blob_id), ...ed.files.map((p) => p.blob.blob_id)];
      }
      const updated = await this.session.call("story.edit", params);
      if (this.edit !== ed) return;
      this.cancelEdit();
      this.stories.set(ed.id, updated);
      this.replaceCard(ed.id);
    } catch (err) {
      errBox.textContent = errorText(err);
    } finally {
      setBusy(btn, false);
      btn.textContent = t("common.save");
    }
  }

  resetCommentForm(form) {
    delete form.dataset.parent;
    form.text.placeholder = t("stories.comment_placeholder");
    $(".reply-cancel", form).hidden = true;
  }

  async loadComments(id) {
    const card = this.feedEl.querySelector(`[data-story-id="${id}"]`);
    if (!card) return;
    const box = card.querySelector(".story-comments");
    const s = this.stories.get(id);
    const comments = await this.session.call("story.comments", { story_id: id });
    const mineStory = s.author.user_id === this.me();
    const item = (c) => el("li.comment", { dataset: { commentId: c.comment_id } },
      avatar(c.author.display_name, c.author.user_id, "tiny"),
      el("div.comment-body", {},
        el("div.comment-line", {}, el("strong", { text: c.author.display_name }), " ", el("span.comment-text", { text: c.text })),
        el("div.comment-meta.muted.small", {}, el("time", { text: formatShort(c.created_at) }),
          c.parent_id ? null : el("button.link.small", { type: "button", dataset: { act: "reply", commentId: c.comment_id, name: c.author.display_name }, text: t("message.reply") }),
          c.author.user_id === this.me() || mineStory ? el("button.link.small", { type: "button", dataset: { act: "delete-comment", commentId: c.comment_id }, text: t("stories.delete") }) : null),
        c.replies?.length ? el("ul.plain-list.replies", {}, c.replies.map(item)) : null));
    const total = comments.reduce((n, c) => n + 1 + (c.replies?.length || 0), 0);
    s.comments = total;
    this.patchCounts(id);
    const form = el("form.comment-form.row-form", { novalidate: true },
      el("input", { name: "text", maxlength: "2000", autocomplete: "off", required: true, placeholder: t("stories.comment_placeholder"), "aria-label": t("stories.comment_placeholder") }),
      el("button.link.small.reply-cancel", { type: "button", dataset: { act: "reply-cancel" }, hidden: true, text: t("common.cancel") }),
      el("button.secondary.small", { type: "submit", text: t("stories.comment") }));
    box.replaceChildren(el("ul.plain-list.comments", {}, comments.map(item)), form);
  }

  async onCommentSubmit(ev) {
    const form = ev.target.closest(".comment-form");
    if (!form) return;
    ev.preventDefault();
    const id = Number(form.closest("[data-story-id]").dataset.storyId);
    const text = form.text.value.trim();
    if (!text) return;
    const btn = form.querySelector("button[type=submit]");
    setBusy(btn, true);
    try {
      await this.session.call("story.comment", { story_id: id, text,
        parent_id: form.dataset.parent ? Number(form.dataset.parent) : undefined });
      await this.loadComments(id);
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    } finally {
      setBusy(btn, false);
    }
  }

  // -- posting ------------------------------------------------------------------------------
  renderPhotos() {
    $("#story-photos").replaceChildren(...this.photos.map((p, i) => el("li.story-photo-pick", {},
      el("img", { src: p.url, alt: "" }),
      el("button.icon.small", { type: "button", "aria-label": t("stories.remove_photo"), text: "×", onclick: () => {
        URL.revokeObjectURL(p.url);
        this.photos.splice(i, 1);
        this.renderPhotos();
      } }))));
  }

  async post(form) {
    const errBox = $(".form-error", form);
    errBox.textContent = "";
    const text = form.text.value.trim();
    if (!text && !this.photos.length) { errBox.textContent = t("stories.empty_post"); return; }
    const btn = form.querySelector("button[type=submit]");
    setBusy(btn, true);
    try {
      const ids = [];
      for (const [i, p] of this.photos.entries()) {
        btn.textContent = t("stories.uploading", { i: i + 1, n: this.photos.length });
        const blob = await this.app.media.upload(p.file, { id: `story-${i}`, file: p.file, sent: 0 });
        ids.push(blob.blob_id);
      }
      const s = await this.session.call("story.create", { text, media: ids, visibility: form.visibility.value });
      form.text.value = "";
      this.photos.forEach((p) => URL.revokeObjectURL(p.url));
      this.photos = [];
      this.renderPhotos();
      this.stories.set(s.story_id, s);
      this.order.unshift(s.story_id);
      this.render();
    } catch (err) {
      errBox.textContent = errorText(err);
    } finally {
      setBusy(btn, false);
      btn.textContent = t("stories.post");
    }
  }

  async editCloseFriends() {
    const d = dialog("tpl-close-friends");
    const form = d.node.querySelector("form");
    const list = $(".pick-list", form);
    let current = [];
    try { current = await this.session.call("story.close_friends"); } catch { /* shown empty */ }
    this.app.friendPicker(list);
    for (const c of list.querySelectorAll("input[type=checkbox]")) c.checked = current.includes(Number(c.value));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const ids = [...list.querySelectorAll("input:checked")].map((c) => Number(c.value));
        await this.session.call("story.set_close_friends", { user_ids: ids });
        d.close();
        toast(t("settings.saved"));
      } catch (err) {
        $(".form-error", form).textContent = errorText(err);
      }
    });
  }

  // -- realtime -----------------------------------------------------------------------------
  onEvent(name, p) {
    const s = this.stories.get(p.story_id);
    if (name === "story.liked") {
      toast(t("stories.liked_you", { name: p.user.display_name }), { action: { label: t("stories.show"), run: () => this.showStory(p.story_id) } });
      if (s) { s.likes = p.likes; this.patchCounts(p.story_id); }
    } else {
      const c = p.comment;
      if (c.author.user_id === this.me()) return;
      toast(t("stories.commented_you", { name: c.author.display_name, text: c.text.slice(0, 60) }),
        { action: { label: t("stories.show"), run: () => this.showStory(p.story_id) } });
      if (s) {
        s.comments += 1;
        this.patchCounts(p.story_id);
        const box = this.feedEl.querySelector(`[data-story-id="${p.story_id}"] .story-comments`);
        if (box && !box.hidden) this.loadComments(p.story_id).catch(() => {});
      }
    }
    if (this.app.tab !== "stories") $("#stories-dot").hidden = false;
  }

  async showStory(id) {
    this.app.setTab("stories");
    if (!this.stories.has(id)) {
      try {
        const s = await this.session.call("story.get", { story_id: id });
        this.stories.set(id, s);
        this.order.unshift(id);
        this.order.sort((a, b) => b - a);
        this.render();
      } catch (err) {
        toast(errorText(err), { kind: "error" });
        return;
      }
    }
    const card = this.feedEl.querySelector(`[data-story-id="${id}"]`);
    card?.scrollIntoView({ block: "center" });
    card?.querySelector(".story-comment-btn")?.click();
  }
}
