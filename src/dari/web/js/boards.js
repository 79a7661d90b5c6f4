// Boards: a group chat's board (opened from the chat info panel: notices pinned on top, posts,
// comments, polls with voting and results) and the public boards, listed like 82cook's free board
// (number, title [comments], author or masked IP, date, views; numbered pages; search). A BoardView
// in guest mode (guest_boards.js) shows a public board to a visitor without an account: reading
// only, with "log in to comment" where the forms would be.

import { formatShort, t } from "./i18n.js";
import { $, dialog, el, errorText, setBusy, toast } from "./ui.js";

const PER_PAGE = 20;
const PAGE_LINKS = 10;

function authorLabel(a) {
  if (!a) return "";
  return a.ip ? a.ip : a.name || "";
}

function dateLabel(ms) {
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  }
  return `${d.getFullYear()}.${String(d.getMonth() + 1).padStart(2, "0")}.${String(d.getDate()).padStart(2, "0")}`;
}

// One board shown in a host element: the list, a post, or the write form. A guest view reads
// through `api` (the anonymous GET routes) and calls `onLogin` where a logged-in one would write.
export class BoardView {
  constructor(app, host, board, { api = null, onLogin = null, onNavigate = null } = {}) {
    this.app = app;
    this.session = api || app.session;
    this.guest = !!api;
    this.onLogin = onLogin;
    this.onNavigate = onNavigate;
    this.host = host;
    this.board = board;
    this.page = 1;
    this.query = "";
    this.searchIn = "title_body";
    this.postId = null;
    // What the host shows ("list", "post" or "write") and a counter of navigations: a reply that
    // arrives after the user (or an event) moved on must not paint over the newer view.
    this.view = "list";
    this.nav = 0;
  }

  loginButton(key) {
    return el("button.primary.small.login-to-write", { type: "button", text: t(key), onclick: () => this.onLogin?.() });
  }

  async list(page = this.page) {
    const nav = ++this.nav;
    this.page = page;
    this.postId = null;
    this.view = "list";
    this.onNavigate?.(this.board.board_id, null);
    try {
      const res = await this.session.call("board.posts", { board_id: this.board.board_id, page, per_page: PER_PAGE,
        query: this.query, search_in: this.searchIn });
      if (nav !== this.nav) return;
      this.board = res.board;
      this.renderList(res);
    } catch (err) {
      if (nav !== this.nav) return;
      this.host.replaceChildren(el("p.form-error", { role: "alert", text: errorText(err) }));
    }
  }

  renderList(res) {
    const rows = [];
    const row = (p, notice) => el(`tr${notice ? ".notice" : ""}`, { dataset: { postId: p.post_id } },
      el("td.b-num", {}, notice ? el("span.tag.notice-tag", { text: t("boards.notice") }) : String(p.number)),
      el("td.b-title", {}, el("button.link.b-link", { type: "button", dataset: { act: "open" }, text: p.title }),
        p.has_poll ? el("span.b-icon", { title: t("boards.poll"), text: " 📊" }) : null,
        p.has_media ? el("span.b-icon", { title: t("media.kind_image"), text: " 🖼" }) : null,
        p.comment_count ? el("span.b-comments", { "aria-label": t("boards.comments_aria", { n: p.comment_count }), text: ` [${p.comment_count}]` }) : null),
      el(`td.b-author${p.author?.ip ? ".ip" : ""}`, { text: authorLabel(p.author) }),
      el("td.b-date", { text: dateLabel(p.created_at) }),
      el("td.b-views", { text: String(p.views) }));
    for (const p of res.notices) rows.push(row(p, true));
    for (const p of res.posts) rows.push(row(p, false));
    const table = el("table.board-table", {},
      el("caption.sr-only", { text: this.board.title }),
      el("thead", {}, el("tr", {},
        el("th.b-num", { scope: "col", text: t("boards.col_number") }),
        el("th.b-title", { scope: "col", text: t("boards.col_title") }),
        el("th.b-author", { scope: "col", text: t("boards.col_author") }),
        el("th.b-date", { scope: "col", text: t("boards.col_date") }),
        el("th.b-views", { scope: "col", text: t("boards.col_views") }))),
      el("tbody", {}, rows));
    table.addEventListener("click", (ev) => {
      const btn = ev.target.closest("[data-act=open]");
      if (btn) this.openPost(Number(btn.closest("tr").dataset.postId));
    });
    const empty = !res.posts.length && !res.notices.length
      ? el("p.empty-note", { text: t(this.query ? "search.none" : "boards.empty") }) : null;
    // Numbered pages in blocks of ten, with previous/next block.
    const pager = el("nav.pager", { "aria-label": t("boards.pages") });
    const first = Math.floor((res.page - 1) / PAGE_LINKS) * PAGE_LINKS + 1;
    const last = Math.min(res.pages, first + PAGE_LINKS - 1);
    if (first > 1) pager.append(el("button.page-btn", { type: "button", text: "‹", "aria-label": t("boards.prev"), onclick: () => this.list(first - 1) }));
    for (let i = first; i <= last; i++) {
      pager.append(el(`button.page-btn${i === res.page ? ".current" : ""}`, { type: "button", text: String(i),
        "aria-current": i === res.page ? "page" : null, onclick: () => this.list(i) }));
    }
    if (last < res.pages) pager.append(el("button.page-btn", { type: "button", text: "›", "aria-label": t("boards.next"), onclick: () => this.list(last + 1) }));
    const search = el("form.board-search", { role: "search" },
      el("select", { name: "in", "aria-label": t("boards.search_in") },
        ["title_body", "title", "body", ...(this.board.show_ip ? [] : ["author"])].map((v) =>
          el("option", { value: v, text: t(`boards.in_${v}`), selected: v === this.searchIn }))),
      el("input", { name: "q", type: "search", value: this.query, maxlength: "100", placeholder: t("boards.search"), "aria-label": t("boards.search") }),
      el("button.secondary.small", { type: "submit", text: t("boards.search") }),
      this.query ? el("button.link.small", { type: "button", text: t("boards.clear_search"), onclick: () => { this.query = ""; this.list(1); } }) : null);
    search.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.query = search.q.value.trim();
      this.searchIn = search.in.value;
      this.list(1);
    });
    const head = el("div.board-head", {},
      el("span.muted.small", { text: t("boards.total", { n: res.total }) }),
      this.guest ? this.loginButton("boards.login_to_write")
        : el("button.primary.small", { type: "button", text: t("boards.write"), onclick: () => this.write() }));
    this.host.replaceChildren(...[head, table, empty, pager, search].filter(Boolean));
  }

  // Open a post (this counts a view); later changes (comments, votes, pins) re-render in place.
  async openPost(postId) {
    const nav = ++this.nav;
    this.postId = postId;
    this.view = "post";
    let post;
    try {
      post = await this.session.call("board.post", { post_id: postId });
    } catch (err) {
      if (nav === this.nav) toast(errorText(err), { kind: "error" });
      return;
    }
    if (nav !== this.nav) return;
    this.current = post;
    this.onNavigate?.(this.board.board_id, postId);
    this.renderPost();
  }

  // Back to the post from its edit form.
  showPost() {
    this.nav++;
    this.view = "post";
    this.renderPost();
  }

  renderPost() {
    const p = this.current;
    // A pin, vote or comment reply that lands after the user left the post paints nothing.
    if (this.view !== "post" || p.post_id !== this.postId) return;
    const postId = p.post_id;
    const mine = p.author?.mine;
    const article = el("article.board-post", {},
      el("header.post-head", {},
        el("h3.post-title", {}, p.pinned ? el("span.tag.notice-tag", { text: t("boards.notice") }) : null, " ", p.title),
        el("p.muted.small.post-meta", {}, el("span.b-author", { text: authorLabel(p.author) }),
          ` · ${formatShort(p.created_at)} · ${t("boards.views_n", { n: p.views })}`,
          p.edited_at ? ` · ${t("message.edited")}` : "")),
      p.body ? el("div.post-body", { text: p.body }) : null,
      p.media.length && this.guest ? el("p.muted.small.guest-media", { text: t("boards.login_for_photos", { n: p.media.length }) }) : null,
      p.media.length && !this.guest ? el("div.story-grid.n" + Math.min(p.media.length, 4), {}, p.media.map((m) =>
        el("button.story-photo", { type: "button", "aria-label": t("media.open_photo"), onclick: () => this.app.media.openViewer(m, p.title) },
          this.app.media.img(m.blob_id, { thumb: !!m.thumbnail_id, alt: "" })))) : null,
      p.poll ? this.renderPoll(p) : null);
    const actions = el("div.post-actions", {},
      el("button.secondary.small", { type: "button", text: t("boards.back_to_list"), onclick: () => this.list() }),
      this.mayPin(p) ? el("button.secondary.small", { type: "button", text: t(p.pinned ? "boards.unpin" : "boards.pin"),
        onclick: this.guard(async () => {
          p.pinned = (await this.session.call("board.pin", { post_id: postId, pinned: !p.pinned })).pinned;
          this.renderPost();
        }) }) : null,
      mine ? el("button.secondary.small.post-edit", { type: "button", text: t("boards.edit"), onclick: () => this.write(p) }) : null,
      mine || this.mayDelete() ? el("button.danger.small.post-delete", { type: "button", text: t("stories.delete"),
        onclick: () => this.confirmDelete(actions, postId) }) : null,
      mine || this.guest ? null : el("button.link.small", { type: "button", text: t("boards.report"), onclick: () => this.report("board_post", postId) }));
    const comments = el("section.post-comments", { "aria-label": t("boards.comments_aria", { n: p.comments.length }) },
      el("h4.small-head", { text: t("boards.comments_aria", { n: p.comments.length }) }),
      el("ul.plain-list.comments", {}, p.comments.map((c) => el("li.comment", {},
        el("div.comment-body", {},
          el("div.comment-line", {}, el(`strong${c.author?.ip ? ".ip" : ""}`, { text: authorLabel(c.author) }), " ",
            el("span.comment-text", { text: c.body })),
          el("div.comment-meta.muted.small", {}, el("time", { text: formatShort(c.created_at) }),
            c.author?.mine ? el("button.link.small", { type: "button", text: t("stories.delete"), onclick: this.guard(async () => {
              await this.session.call("board.comment_delete", { comment_id: c.comment_id });
              p.comments = p.comments.filter((x) => x.comment_id !== c.comment_id);
              this.renderPost();
            }) }) : this.guest ? null : el("button.link.small", { type: "button", text: t("boards.report"), onclick: () => this.report("board_comment", c.comment_id) })))))));
    if (this.guest) {
      // Reading is open to all; writing is not: the comment box asks the visitor to log in.
      const ask = el("div.comment-login", {}, el("span.muted", { text: t("boards.login_to_comment_note") }),
        this.loginButton("boards.login_to_comment"));
      this.host.replaceChildren(actions, article, comments, ask);
      return;
    }
    const form = el("form.comment-form.row-form", { novalidate: true },
      el("input", { name: "body", maxlength: "2000", required: true, autocomplete: "off", placeholder: t("stories.comment_placeholder"), "aria-label": t("stories.comment_placeholder") }),
      el("button.secondary.small", { type: "submit", text: t("stories.comment") }));
    form.addEventListener("submit", this.guard(async (ev) => {
      ev.preventDefault();
      const body = form.body.value.trim();
      if (!body) return;
      p.comments.push(await this.session.call("board.comment", { post_id: postId, body }));
      this.renderPost();
      this.host.querySelector(".comment-form input")?.focus();
    }));
    this.host.replaceChildren(actions, article, comments, form);
  }

  // In a chat's board the chat's owner and the writer pin notices (operators anywhere: the server decides).
  mayPin(p) {
    if (this.board.kind !== "chat") return false;
    const owner = this.app.chat.details.get(this.board.chat_id)?.owner_id;
    return !!p.author?.mine || owner === this.session.user?.user_id;
  }

  // Asked in place, not in a modal: a chat's board is itself shown in the (single) dialog.
  confirmDelete(actions, postId) {
    if (actions.nextElementSibling?.classList.contains("post-confirm")) return;
    const box = el("div.post-confirm", { role: "alertdialog", "aria-label": t("boards.delete_confirm") },
      el("span", { text: t("boards.delete_confirm") }),
      el("button.secondary.small.confirm-cancel", { type: "button", text: t("common.cancel"), onclick: () => box.remove() }),
      el("button.danger.small.confirm-ok", { type: "button", text: t("stories.delete"), onclick: this.guard(async () => {
        await this.session.call("board.post_delete", { post_id: postId });
        this.list();
      }) }));
    actions.after(box);
    box.querySelector(".confirm-cancel").focus();
  }

  // The chat's owner may delete any post of the chat's board (operators too: the server decides).
  mayDelete() {
    if (this.board.kind !== "chat") return false;
    return this.app.chat.details.get(this.board.chat_id)?.owner_id === this.session.user?.user_id;
  }

  renderPoll(p) {
    const poll = p.poll;
    const total = poll.options.reduce((n, o) => n + o.votes, 0);
    const voted = poll.my_votes.length > 0;
    const form = el("form.poll", { novalidate: true },
      el("h4.poll-q", { text: `📊 ${poll.question}` }),
      el("p.muted.small", { text: [t(poll.multiple ? "boards.poll_multiple" : "boards.poll_single"),
        poll.anonymous ? t("boards.poll_anonymous") : "",
        poll.deadline ? t(poll.closed ? "boards.poll_closed" : "boards.poll_until", { time: formatShort(poll.deadline) }) : "",
        t("boards.poll_voters", { n: poll.voters })].filter(Boolean).join(" · ") }));
    poll.options.forEach((o, i) => {
      const pct = total ? Math.round((100 * o.votes) / total) : 0;
      const bar = el("span.poll-bar", { "aria-hidden": "true" });
      bar.style.width = `${pct}%`;
      form.append(el(`label.poll-option${poll.my_votes.includes(i) ? ".mine" : ""}`, {},
        el("input", { type: poll.multiple ? "checkbox" : "radio", name: "opt", value: i, checked: poll.my_votes.includes(i), disabled: poll.closed }),
        el("span.poll-text", { text: o.text }),
        el("span.poll-track", {}, bar),
        el("span.poll-count", { text: t("boards.poll_votes", { n: o.votes, pct }) })));
    });
    if (this.guest) {
      for (const input of form.querySelectorAll("input")) input.disabled = true;
    } else if (!poll.closed) {
      form.append(el("button.primary.small", { type: "submit", text: t(voted ? "boards.change_vote" : "boards.vote") }));
    }
    form.addEventListener("submit", this.guard(async (ev) => {
      ev.preventDefault();
      const options = [...form.querySelectorAll("input[name=opt]:checked")].map((c) => Number(c.value));
      p.poll = await this.session.call("board.vote", { post_id: p.post_id, options });
      this.renderPost();
    }));
    return form;
  }

  // The write form; given a post (yours), it edits that post's title and body instead.
  write(editing = null) {
    this.nav++;
    this.view = "write";
    const form = el("form.board-write.stack", { novalidate: true },
      el("h3", { text: t(editing ? "boards.edit_title" : "boards.write") }),
      el("label.field", {}, el("span", { text: t("boards.col_title") }), el("input", { name: "title", maxlength: "200", required: true })),
      el("label.field", {}, el("span", { text: t("boards.body") }), el("textarea", { name: "body", rows: "8", maxlength: "20000" })),
      this.board.kind === "chat" && !editing ? el("label.check", {}, el("input", { type: "checkbox", name: "pinned" }), el("span", { text: t("boards.as_notice") })) : null,
      editing ? null : el("label.check", {}, el("input", { type: "checkbox", name: "with_poll" }), el("span", { text: t("boards.add_poll") })),
      editing ? null : el("fieldset.poll-fields", { hidden: true }, el("legend", { text: t("boards.poll") }),
        el("label.field", {}, el("span", { text: t("boards.poll_question") }), el("input", { name: "question", maxlength: "200" })),
        el("label.field", {}, el("span", { text: t("boards.poll_options") }), el("textarea", { name: "options", rows: "4" })),
        el("label.check", {}, el("input", { type: "checkbox", name: "multiple" }), el("span", { text: t("boards.poll_multiple") })),
        el("label.check", {}, el("input", { type: "checkbox", name: "anonymous" }), el("span", { text: t("boards.poll_anonymous") })),
        el("label.field", {}, el("span", { text: t("boards.poll_deadline") }), el("input", { name: "deadline", type: "datetime-local" }))),
      el("p.form-error", { role: "alert" }),
      el("div.dlg-actions", {},
        el("button.secondary", { type: "button", text: t("common.cancel"), onclick: () => (editing ? this.showPost() : this.list()) }),
        el("button.primary", { type: "submit", text: t(editing ? "common.save" : "boards.publish") })));
    form.with_poll?.addEventListener("change", () => { $(".poll-fields", form).hidden = !form.with_poll.checked; });
    if (editing) {
      form.title.value = editing.title;
      form.body.value = editing.body;
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const errBox = $(".form-error", form);
      errBox.textContent = "";
      const btn = form.querySelector("button[type=submit]");
      if (!form.title.value.trim()) {
        errBox.textContent = t("boards.title_required");
        form.title.focus();
        return;
      }
      if (editing) {
        setBusy(btn, true);
        try {
          this.current = await this.session.call("board.post_edit", { post_id: editing.post_id,
            title: form.title.value.trim(), body: form.body.value });
          this.postId = editing.post_id;
          this.showPost();
        } catch (err) {
          errBox.textContent = errorText(err);
        } finally {
          setBusy(btn, false);
        }
        return;
      }
      const params = { board_id: this.board.board_id, title: form.title.value.trim(), body: form.body.value };
      if (form.pinned?.checked) params.pinned = true;
      if (form.with_poll.checked) {
        params.poll = {
          question: form.question.value.trim(),
          options: form.options.value.split("\n").map((s) => s.trim()).filter(Boolean),
          multiple: form.multiple.checked, anonymous: form.anonymous.checked,
        };
        if (form.deadline.value) params.poll.deadline = new Date(form.deadline.value).getTime();
      }
      setBusy(btn, true);
      try {
        const res = await this.session.call("board.post_create", params);
        this.openPost(res.post_id);
      } catch (err) {
        errBox.textContent = errorText(err);
      } finally {
        setBusy(btn, false);
      }
    });
    this.host.replaceChildren(form);
    form.title.focus();
  }

  async report(target, id) {
    const reason = window.prompt(t("boards.report_reason"));
    if (!reason?.trim()) return;
    try {
      await this.session.call("report.create", { target, target_id: String(id), reason: reason.trim() });
      toast(t("boards.reported"));
    } catch (err) {
      toast(errorText(err), { kind: "error" });
    }
  }

  guard(fn) {
    return async (...args) => {
      try { await fn(...args); } catch (err) { toast(errorText(err), { kind: "error" }); }
    };
  }
}

export class Boards {
  constructor(app) {
    this.app = app;
    this.session = app.session;
    this.publicView = null;
    this.chatView = null;
    this.publicBoards = [];
    this.link = null; // {boardId, postId} from a #/board/ID/post/ID link, opened by showPublic
    $("#board-select").addEventListener("change", (ev) => this.openPublic(Number(ev.target.value)));
    $("#btn-board-new").addEventListener("click", () => this.newBoard());
  }

  // A link to a public board or post (#/board/ID or #/board/ID/post/ID), for a logged-in reader.
  openLink(boardId, postId) {
    this.link = { boardId, postId };
    this.app.setTab("boards");
  }

  setCanCreate(can) {
    $("#btn-board-new").hidden = !can;
  }

  async refreshRights() {
    try {
      this.setCanCreate((await this.session.call("board.rights")).can_create);
    } catch { /* the button stays as it was; the server checks on create anyway */ }
  }

  newBoard() {
    const d = dialog("tpl-board-new");
    const form = $("form", d.node);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const errBox = $(".form-error", form);
      errBox.textContent = "";
      const title = form.title.value.trim();
      const slug = form.slug.value.trim().toLowerCase();
      if (!title) {
        errBox.textContent = t("boards.title_required");
        form.title.focus();
        return;
      }
      if (slug && !/^[a-z0-9-]{2,32}$/.test(slug)) {
        errBox.textContent = t("boards.slug_invalid");
        form.slug.focus();
        return;
      }
      const btn = form.querySelector("button[type=submit]");
      setBusy(btn, true);
      try {
        const params = { title, show_ip: form.show_ip.checked };
        if (slug) params.slug = slug;
        const board = await this.session.call("board.create", params);
        d.close();
        toast(t("boards.created", { title: board.title }));
        this.link = { boardId: board.board_id, postId: null };
        await this.showPublic();
      } catch (err) {
        errBox.textContent = err.details?.reason === "no_board_right" ? t("boards.no_right")
          : err.code === "conflict" ? t("boards.slug_taken") : errorText(err);
        if (err.details?.reason === "no_board_right") this.setCanCreate(false);
      } finally {
        setBusy(btn, false);
      }
    });
  }

  async showPublic() {
    const host = $("#public-board");
    this.refreshRights();
    try {
      this.publicBoards = await this.session.call("board.public");
    } catch (err) {
      host.replaceChildren(el("p.form-error", { role: "alert", text: errorText(err) }));
      return;
    }
    const sel = $("#board-select");
    sel.replaceChildren(...this.publicBoards.map((b) => el("option", { value: b.board_id, text: b.title })));
    sel.hidden = this.publicBoards.length < 2;
    if (!this.publicBoards.length) {
      host.replaceChildren(el("p.empty-note", { text: t("boards.none_public") }));
      return;
    }
    const link = this.link;
    this.link = null;
    const linked = link && this.publicBoards.find((b) => b.board_id === link.boardId);
    if (linked) {
      sel.value = String(linked.board_id);
      this.openPublic(linked.board_id, link.postId);
      return;
    }
    const current = this.publicView && this.publicBoards.find((b) => b.board_id === this.publicView.board.board_id);
    sel.value = String((current || this.publicBoards[0]).board_id);
    if (current && this.publicView.postId) return; // keep the open post
    this.openPublic((current || this.publicBoards[0]).board_id);
  }

  openPublic(boardId, postId = null) {
    const board = this.publicBoards.find((b) => b.board_id === boardId);
    if (!board) return;
    if (!this.publicView || this.publicView.board.board_id !== boardId) {
      this.publicView = new BoardView(this.app, $("#public-board"), board);
    }
    $("#boards-title").textContent = board.title;
    if (postId) this.publicView.openPost(postId);
    else this.publicView.list(1);
  }

  async openChatBoard(chatId, title) {
    let board;
    try {
      board = await this.session.call("board.get", { chat_id: chatId });
    } catch (err) {
      toast(errorText(err), { kind: "error" });
      return;
    }
    const d = dialog("tpl-board", { onClose: () => { $("#dialog").classList.remove("board-dialog-wide"); this.chatView = null; this.app.media.scheduleSweep(); } });
    $("#dialog").classList.add("board-dialog-wide");
    $(".board-dialog-title", d.node).textContent = t("boards.chat_board_title", { title });
    this.chatView = new BoardView(this.app, $(".board-host", d.node), board);
    this.chatView.list(1);
  }

  onEvent(name, p) {
    if (name === "board.rights") {
      this.setCanCreate(p.can_create);
    } else if (name === "board.post") {
      const v = this.chatView;
      if (v && v.board.board_id === p.board_id && v.view === "list") v.list();
      if (p.author_id !== this.session.user?.user_id) {
        const chat = this.app.chats.get(p.chat_id);
        toast(t("boards.new_post", { chat: chat?.title || "", title: p.title }), {
          action: { label: t("stories.show"), run: () => this.openChatBoard(p.chat_id, chat?.title || "").then(() => this.chatView?.openPost(p.post_id)) },
        });
      }
    } else if (name === "board.commented") {
      toast(t("boards.commented_you", { title: p.title }));
      const v = this.chatView?.postId === p.post_id ? this.chatView : this.publicView?.postId === p.post_id ? this.publicView : null;
      v?.openPost(p.post_id);
    }
  }
}
