// The web terminal page served by ptyd-bridge: `/` opens a new terminal, `/t/<id>`
// attaches to an existing one; a status badge, a reconnecting notice, a "session ended"
// screen with a button for a new terminal, and a list of open terminals.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { WebLinksAddon } from "@xterm/addon-web-links";
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { connect, type Role, type Status, type TerminalConnection } from "../connection.js";
import { attachTerminal, fitToContainer } from "../xterm.js";
import { chooseRenderer, type Renderer, webglSupport } from "./renderer.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const LABELS: Record<Status, string> = {
  connecting: "Connecting",
  active: "Active",
  reconnecting: "Reconnecting",
  detached: "Detached",
  dead: "Dead",
  closed: "Closed",
};

declare global {
  interface Window {
    ptydTerm?: Terminal;
    ptydConn?: TerminalConnection;
    ptydRenderer?: Renderer;
    ptydWebgl?: "none" | "software" | "hardware";
  }
}

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(path, { credentials: "same-origin", ...init });
}

/** A `?token=` in the page URL becomes the bridge's cookie, then leaves the URL. */
async function logIn(): Promise<void> {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (!token) return;
  const r = await api("/api/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (!r.ok) throw new Error(`login refused (${r.status})`);
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search);
}

async function errorText(r: Response): Promise<string> {
  try {
    const body = await r.json();
    return `${body.error}: ${body.message}`;
  } catch {
    return `HTTP ${r.status}`;
  }
}

/** The terminal id of `/t/<id>`, or null for `/`. */
function idFromPath(): string | null {
  const m = location.pathname.match(/^\/t\/([^/]+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

async function createTerminal(cols: number, rows: number): Promise<string> {
  const r = await api("/api/terminals", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ cols, rows }),
  });
  if (r.status !== 201) throw new Error(await errorText(r));
  const { id } = await r.json();
  return id;
}

/**
 * Copy and paste (README "The web page"): Ctrl+Shift+C copies the selection, Ctrl+Shift+V
 * pastes, and so do the browser's own paste (its menu, Cmd+V on macOS). Ctrl+C stays an
 * interrupt, and Ctrl+V is the terminal's ^V (literal next) except on Windows, where it
 * means paste. Returns false for the keys xterm must leave to the browser.
 */
function keymap(ev: KeyboardEvent, term: Terminal): boolean {
  if (ev.type !== "keydown" || !ev.ctrlKey || ev.altKey || ev.metaKey) return true;
  if (ev.shiftKey && ev.code === "KeyC") {
    if (term.hasSelection()) void navigator.clipboard?.writeText(term.getSelection());
    ev.preventDefault();
    return false;
  }
  // The browser pastes into xterm's textarea, which sends it as a paste.
  if (ev.code === "KeyV" && (ev.shiftKey || WINDOWS)) return false;
  return true;
}

const WINDOWS = /^Win/.test(navigator.platform);

/** A reconnect shorter than this (the bridge's idle close, a blip) is not shown. */
const RECONNECT_NOTICE_DELAY_MS = 1_000;
let reconnectNotice: ReturnType<typeof setTimeout> | null = null;

function showStatus(status: Status): void {
  if (reconnectNotice !== null) {
    clearTimeout(reconnectNotice);
    reconnectNotice = null;
  }
  if (status === "reconnecting" && $("status").dataset.status === "active") {
    // Say so only if it lasts: most reconnects are over before anyone could read it.
    reconnectNotice = setTimeout(() => {
      reconnectNotice = null;
      paintStatus("reconnecting");
    }, RECONNECT_NOTICE_DELAY_MS);
    return;
  }
  paintStatus(status);
}

function paintStatus(status: Status): void {
  const badge = $("status");
  badge.textContent = LABELS[status];
  badge.dataset.status = status;
  $("reconnecting").hidden = status !== "reconnecting";
  $("ended").hidden = status !== "dead" && status !== "closed" && status !== "detached";
  $("detach").hidden =
    status === "dead" || status === "closed" || status === "detached" || current?.share !== undefined;
}

function showEnded(text: string): void {
  $("ended-text").textContent = text;
  $("ended").hidden = false;
}

/** One terminal of the page: its own xterm, pane and socket, kept while other tabs show. */
interface Tab {
  id: string;
  term: Terminal;
  fit: FitAddon;
  conn: TerminalConnection;
  pane: HTMLElement;
  button: HTMLButtonElement;
  /** The program's title (OSC 0/2), or empty. */
  title: string;
  /** What the ended box says for this tab, once it has ended or was detached. */
  ended: string | null;
  /** Bytes typed in this tab that never reached its terminal. */
  undelivered: number;
  /** The terminal's size when another viewer's window sets it, else null. */
  size: { cols: number; rows: number } | null;
  /** What the bridge said of the last input refused (a read-only viewer), if any. */
  refused: string | null;
  /** The role it asked for. */
  role: Role;
  /** The share link's token it was opened with, if any. */
  share: string | undefined;
}

const tabs: Tab[] = [];
let current: Tab | null = null;

async function toggleList(): Promise<void> {
  const panel = $("list");
  if (!panel.hidden) {
    panel.hidden = true;
    return;
  }
  const r = await api("/api/terminals");
  const ul = $("list-items");
  ul.replaceChildren();
  if (!r.ok) {
    ul.append(Object.assign(document.createElement("li"), { textContent: await errorText(r) }));
  } else {
    const { terminals } = await r.json();
    const open = terminals.filter((t: { status: string }) => t.status !== "Dead");
    for (const t of open) {
      const a = Object.assign(document.createElement("a"), {
        href: `/t/${t.id}`,
        textContent: `${t.id.slice(0, 8)} · ${t.status} · pid ${t.pid}`,
      });
      // Opens in a tab of this page (or shows the tab it already has).
      a.addEventListener("click", (ev) => {
        ev.preventDefault();
        panel.hidden = true;
        void showTerminal(t.id);
      });
      const li = document.createElement("li");
      li.append(a);
      ul.append(li);
    }
    if (open.length === 0) ul.append(Object.assign(document.createElement("li"), { textContent: "none" }));
  }
  panel.hidden = false;
}

/** Shows `id`'s tab, opening one when the page has none for it. */
async function showTerminal(id: string): Promise<void> {
  const open = tabs.find((t) => t.id === id && t.conn.status !== "dead" && t.conn.status !== "detached");
  select(open ?? (await openTab(id)));
}

/** A new terminal in a new tab, shown. */
async function newTab(): Promise<void> {
  try {
    select(await openTab(null));
  } catch (e) {
    showEnded(`Could not open a terminal: ${(e as Error).message}`);
  }
}

/** Opens a tab on terminal `id`, or on a new terminal when `id` is null; with `share`
 * (a share link's token), read-only. */
async function openTab(id: string | null, role: Role = "read-write", share?: string): Promise<Tab> {
  const pane = Object.assign(document.createElement("div"), { className: "pane" });
  $("terminal").append(pane);
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, allowProposedApi: false });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.loadAddon(new WebLinksAddon());
  term.open(pane);
  window.ptydRenderer = chooseRenderer(term);
  window.ptydWebgl = webglSupport();
  fit.fit();
  term.attachCustomKeyEventHandler((ev) => keymap(ev, term));
  let termId: string;
  try {
    termId = id ?? (await createTerminal(term.cols, term.rows));
  } catch (e) {
    term.dispose();
    pane.remove();
    throw e;
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  // Each socket opens with a single-use ticket minted with the login cookie.
  const conn = connect(`${proto}//${location.host}/ws/terminal/${termId}`, {
    flowControl: true,
    role,
    share,
  });
  const button = Object.assign(document.createElement("button"), {
    type: "button",
    className: "tab",
    textContent: termId.slice(0, 8),
  });
  button.dataset.id = termId;
  $("tabs").append(button);
  const tab: Tab = {
    id: termId,
    term,
    fit,
    conn,
    pane,
    button,
    title: "",
    ended: null,
    undelivered: 0,
    size: null,
    refused: null,
    role,
    share,
  };
  tabs.push(tab);
  button.addEventListener("click", () => select(tab));
  // The program's own title (OSC 0/2: a shell's prompt, vim's file name), else the id.
  term.onTitleChange((title) => {
    tab.title = title.trim();
    button.textContent = tab.title || termId.slice(0, 8);
    if (tab === current) showTitle(tab);
  });
  conn.on("status", (s) => {
    button.dataset.status = s;
    if (s === "dead") tab.ended = endedText(tab);
    if (s === "detached") {
      tab.ended = "Detached: the terminal runs on. Reopen it from Terminals, until it is idle too long.";
    }
    if (tab === current) showTab(tab);
  });
  conn.on("exit", () => {
    tab.ended = endedText(tab);
    if (tab === current) showTab(tab);
  });
  // Typed while away: kept and sent when the socket is back; the banner says so.
  conn.on("pending", (bytes) => {
    if (tab === current) showPending(bytes);
  });
  conn.on("undelivered", (bytes) => {
    tab.undelivered += bytes.length;
    console.warn(`ptyd: ${bytes.length} typed bytes were not sent`);
  });
  conn.on("error", (e) => {
    console.warn(`ptyd: ${e.code}: ${e.message}`);
    // Closed for good while the terminal runs on: say why, not "Session ended".
    const closedBecause = CLOSED_BECAUSE[e.code];
    if (closedBecause) tab.ended = closedBecause;
    if (e.code === "PermissionDenied") {
      tab.refused = e.message;
      if (tab === current) showViewer(tab);
    }
  });
  conn.on("size", (size) => {
    tab.size = size;
    if (tab === current) showViewer(tab);
  });
  term.onResize(() => {
    if (tab === current) showViewer(tab);
  });
  conn.on("dropped", (_o, bytes) => term.write(`\r\n\x1b[33m[${bytes} bytes of output were lost]\x1b[0m\r\n`));
  attachTerminal(term, conn);
  fitToContainer(pane, fit);
  return tab;
}

/** Shows `tab` (the others stay open, each on its own socket) and follows it in the URL. */
function select(tab: Tab): void {
  current = tab;
  for (const t of tabs) {
    t.pane.hidden = t !== tab;
    t.button.classList.toggle("selected", t === tab);
  }
  window.ptydTerm = tab.term;
  window.ptydConn = tab.conn;
  const query = new URLSearchParams();
  if (tab.role === "read-only") query.set("role", "read-only");
  if (tab.share) query.set("share", tab.share);
  history.replaceState(null, "", `/t/${tab.id}${query.size ? `?${query}` : ""}`);
  // A pane that was hidden has no size of its own until shown.
  tab.fit.fit();
  showTab(tab);
  tab.term.focus();
}

function showTitle(tab: Tab): void {
  document.title = tab.title || `ptyd · ${tab.id.slice(0, 8)}`;
}

function showPending(bytes: number): void {
  $("reconnecting").textContent = bytes
    ? `Connection lost: reconnecting… ${bytes} typed byte${bytes === 1 ? "" : "s"} will be sent when it is back.`
    : "Connection lost: reconnecting…";
}

/** Says when this tab only watches, and when the terminal is smaller than its window. */
function showViewer(tab: Tab): void {
  const role = $("role");
  role.hidden = tab.conn.role !== "read-only";
  // A share link reaches its one terminal only: no list, no new terminals, no detach.
  const shared = tab.share !== undefined;
  $("new").hidden = shared;
  $("terminals").hidden = shared;
  if (shared) $("detach").hidden = true;
  role.textContent = tab.refused ? "Read-only: what you type is not sent" : "Read-only";
  const note = $("size-note");
  const s = tab.size;
  const smaller = s !== null && (s.cols < tab.term.cols || s.rows < tab.term.rows);
  note.hidden = !smaller;
  if (s && smaller) note.textContent = `${s.cols}×${s.rows}: smaller than this window (another viewer's)`;
}

/** The header and the ended box as `tab` has them. */
function showTab(tab: Tab): void {
  showStatus(tab.conn.status);
  showViewer(tab);
  showTitle(tab);
  showPending(tab.conn.pendingInput);
  const s = tab.conn.status;
  $("ended-reopen").hidden = s !== "detached";
  if (s === "dead" || s === "detached" || s === "closed") showEnded(tab.ended ?? endedText(tab));
}

async function main(): Promise<void> {
  $("new").addEventListener("click", () => void newTab());
  $("ended-new").addEventListener("click", () => void newTab());
  $("terminals").addEventListener("click", () => void toggleList());
  $("detach").addEventListener("click", () => {
    current?.conn.detach().catch((e) => console.warn(`ptyd: ${(e as Error).message}`));
  });
  $("ended-reopen").addEventListener("click", () => {
    if (current) void reopen(current);
  });
  try {
    await logIn();
    const id = idFromPath();
    // `?role=read-only` opens the terminal to watch; a share link (`?share=`) does too,
    // with its own credential instead of a login.
    const params = new URL(location.href).searchParams;
    const share = params.get("share") ?? undefined;
    const role = share || params.get("role") === "read-only" ? "read-only" : "read-write";
    select(await openTab(id, role, share));
  } catch (e) {
    showStatus("dead");
    showEnded(`Could not open a terminal: ${(e as Error).message}`);
  }
}

/** A detached tab's terminal, on a new socket in the same tab's place. */
async function reopen(tab: Tab): Promise<void> {
  const at = tabs.indexOf(tab);
  tab.term.dispose();
  tab.pane.remove();
  tab.button.remove();
  tabs.splice(at, 1);
  await showTerminal(tab.id);
}

/** Why this page's socket was closed for good while the terminal runs on. */
const CLOSED_BECAUSE: Record<string, string> = {
  Closed4000: "Taken over: another viewer asked to take this terminal over. It runs on there.",
  Closed4005: "The share link this page was opened with was revoked.",
};

/** Why a session ended, in words, for the reasons that are not its own exit. */
const END_REASONS: Record<string, string> = {
  killed: "it was closed",
  deleted: "it was deleted",
  idle_timeout: "it was idle too long",
  owner_gone: "its owner went away",
  shutdown: "ptyd stopped",
  memory_limit: "it reached its memory limit",
  grace_expired: "the connection was lost for longer than the grace period",
  lost: "ptyd no longer runs it",
};

function endedText(tab: Tab): string {
  const lost = tab.undelivered ? ` ${tab.undelivered} typed bytes were not sent.` : "";
  return endReasonText(tab.conn) + lost;
}

function endReasonText(conn: TerminalConnection): string {
  const exit = conn.exitInfo;
  if (!exit) return "Session ended.";
  const how =
    exit.signal !== null
      ? `killed by signal ${exit.signal}`
      : exit.code !== null
        ? `exited with code ${exit.code}`
        : null;
  const why = exit.endReason ? END_REASONS[exit.endReason] : undefined;
  if (how && why) return `Session ended: ${how}, because ${why}.`;
  if (how) return `Session ended: ${how}.`;
  if (why) return `Session ended, because ${why}.`;
  return "Session ended.";
}

void main();
