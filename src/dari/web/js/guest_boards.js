// Public boards for a visitor without an account (the free board is readable by anyone): the board
// list, posts and comments come from the anonymous GET routes (/api/v1/public/...), links look like
// #/board/ID or #/board/ID/post/ID, and every place that would write asks the visitor to log in.
// After logging in, the same link opens in the Boards tab, where commenting works.

import { t } from "./i18n.js";
import { BoardView } from "./boards.js";
import { DariError } from "./session.js";
import { $, el, errorText } from "./ui.js";

const LINK = /^#\/board(?:s|\/(\d+)(?:\/post\/(\d+))?)$/;

export function parseLink(hash) {
  const m = LINK.exec(hash);
  if (!m) return null;
  return { boardId: m[1] ? Number(m[1]) : null, postId: m[2] ? Number(m[2]) : null };
}

// The reading methods a BoardView uses, over GET; anything else needs an account.
class PublicApi {
  async get(path) {
    let resp;
    try {
      resp = await fetch(path, { headers: { Accept: "application/json" }, credentials: "omit" });
    } catch {
      throw new DariError("unavailable", "");
    }
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok || body.error) {
      const e = body.error || {};
      throw new DariError(e.code || "unavailable", e.message || "", e.details);
    }
    return body.result;
  }

  async call(method, params = {}) {
    if (method === "board.public") return this.get("/api/v1/public/boards");
    if (method === "board.post") return this.get(`/api/v1/public/posts/${Number(params.post_id)}`);
    if (method === "board.posts") {
      const q = new URLSearchParams({ page: String(params.page || 1), per_page: String(params.per_page || 20) });
      if (params.query) q.set("q", params.query);
      if (params.search_in) q.set("in", params.search_in);
      return this.get(`/api/v1/public/boards/${Number(params.board_id)}/posts?${q}`);
    }
    throw new DariError("unauthenticated", "");
  }
}

export class GuestBoards {
  constructor(app) {
    this.app = app;
    this.api = new PublicApi();
    this.view = null;
    this.boards = [];
    $("#guest-login").addEventListener("click", () => this.login());
    $("#guest-board-select").addEventListener("change", (ev) => this.open(Number(ev.target.value), null));
    $("#btn-guest-boards").addEventListener("click", () => {
      history.pushState(null, "", "#/boards");
      this.show();
    });
  }

  wants() {
    return parseLink(location.hash) !== null;
  }

  // Back to the sign-in screen; the link stays in the address, so the post opens after login.
  login() {
    this.app.showAuth();
  }

  async show() {
    document.body.dataset.screen = "guest";
    for (const id of ["#boot", "#auth", "#app"]) $(id).hidden = true;
    $("#guest").hidden = false;
    const host = $("#guest-board");
    try {
      this.boards = await this.api.call("board.public");
    } catch (err) {
      host.replaceChildren(el("p.form-error", { role: "alert", text: errorText(err) }));
      return;
    }
    const sel = $("#guest-board-select");
    sel.replaceChildren(...this.boards.map((b) => el("option", { value: b.board_id, text: b.title })));
    sel.hidden = this.boards.length < 2;
    this.route();
  }

  route() {
    const link = parseLink(location.hash) || { boardId: null, postId: null };
    if (!this.boards.length) {
      $("#guest-board").replaceChildren(el("p.empty-note", { text: t("boards.none_public") }));
      return;
    }
    const board = this.boards.find((b) => b.board_id === link.boardId) || this.boards[0];
    this.open(board.board_id, board.board_id === link.boardId ? link.postId : null);
  }

  open(boardId, postId) {
    const board = this.boards.find((b) => b.board_id === boardId);
    if (!board) return;
    if (!this.view || this.view.board.board_id !== boardId) {
      this.view = new BoardView(this.app, $("#guest-board"), board, {
        api: this.api,
        onLogin: () => this.login(),
        onNavigate: (bid, pid) => {
          const want = pid ? `#/board/${bid}/post/${pid}` : `#/board/${bid}`;
          if (location.hash !== want) history.replaceState(null, "", want);
        },
      });
    }
    $("#guest-board-select").value = String(boardId);
    $("#guest-title").textContent = board.title;
    if (postId) this.view.openPost(postId);
    else this.view.list(1);
  }
}
