// The transport to one ptyd-bridge terminal: the WebSocket protocol of bridge/PROTOCOL.md,
// offsets, reconnection within the grace, and flow-control acks. No UI: it runs in a
// browser or in Node (given a WebSocket implementation).

/** Where a connection stands. */
export type Status = "connecting" | "active" | "reconnecting" | "detached" | "dead" | "closed";

/** What a viewer may do. */
export type Role = "read-write" | "read-only";

/** How the program ended. */
export interface ExitInfo {
  code: number | null;
  signal: number | null;
  /**
   * Why, as ptyd recorded it: "exited", "killed", "idle_timeout", "owner_gone",
   * "shutdown" (others may come); or the bridge's: "deleted" (the socket closed because
   * the terminal was deleted), "grace_expired" (found dead after the connection was lost
   * for longer than the grace), "lost" (ptyd no longer runs it) — then `code` and
   * `signal` are null. Null when unknown.
   */
  endReason: string | null;
}

/** A refused message or failed operation, as the bridge or the connection reports it. */
export interface ErrorInfo {
  code: string;
  message: string;
}

/** The WebSocket surface used here: the browser's, or `ws` in Node. */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ConnectOptions {
  /** The WebSocket class; defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** `fetch`, to ask whether a lost terminal is dead; defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /**
   * The bridge's token, for clients without the login cookie (Node, another origin). It
   * is sent only as a bearer header to mint tickets, never in a URL, and turns tickets on.
   */
  token?: string;
  /**
   * Open every socket with a single-use ticket from `POST /api/terminals/{id}/ticket`
   * (authenticated by the cookie, or by `token`). On by default wherever `fetch` exists.
   * Off: the upgrade relies on the cookie (or a bridge run with `--no-auth`).
   */
  tickets?: boolean;
  /** Resume after this output offset (e.g. one saved before a page reload). */
  since?: number;
  /**
   * Start from the terminal's screen when the bytes since the last offset are no longer
   * all kept (or on a first connect): a `snapshot` event, then live output. On by
   * default; off, a socket starts from the bytes the bridge still has.
   */
  screen?: boolean;
  /**
   * This viewer's role: `read-write` (the default) types into the terminal and counts for
   * its size; `read-only` watches (what it writes is refused with an `error` event).
   */
  role?: Role;
  /**
   * A share link's token (`POST /api/terminals/{id}/share`): opens this one terminal,
   * read-only, without the bridge's token. Sent as `Authorization: Share <token>` to mint
   * tickets; never put in a socket's URL.
   */
  share?: string;
  /**
   * Take the terminal over from the viewers already there (each is closed with 4000)
   * instead of joining them. Off by default.
   */
  takeover?: boolean;
  /**
   * How long to keep reconnecting after a drop, in ms. By default the grace the bridge
   * announces in `hello` (10 s unless configured).
   */
  grace?: number;
  /** First and largest delay between reconnection attempts, in ms. */
  backoff?: { initial: number; max: number };
  /**
   * Flow control: when true, output counts as handled only once `rendered()` says so,
   * and the bridge pauses while too much is outstanding. Off: output flows freely.
   */
  flowControl?: boolean;
  /**
   * With flow control, acknowledge at least every this many rendered bytes (default
   * 64 KiB; below the bridge's `--flow-low`, so output keeps flowing while the rest renders).
   */
  ackEvery?: number;
  /** Most input bytes kept while not connected (default 64 KiB); more is `undelivered`. */
  maxPendingInput?: number;
}

export interface ConnectionEvents {
  /** Terminal output; `end` is the offset just past its last byte. */
  data: (bytes: Uint8Array, end: number) => void;
  status: (status: Status) => void;
  exit: (exit: ExitInfo) => void;
  error: (error: ErrorInfo) => void;
  /** Output in [offset, offset + bytes) was lost (it left the replay window). */
  dropped: (offset: number, bytes: number) => void;
  /**
   * The terminal's screen as bytes that reproduce it in a fresh terminal of `size`:
   * reset the terminal and write them. Live output (`data`) continues from there.
   */
  snapshot: (bytes: Uint8Array, size: { cols: number; rows: number }) => void;
  /**
   * The terminal's size as the bridge sets it from its read-write viewers' windows
   * (`--resize-policy`): a window larger than this shows it smaller than itself.
   */
  size: (size: { cols: number; rows: number }) => void;
  /** Input written while not active waits: this many bytes now (0 once sent). */
  pending: (bytes: number) => void;
  /** Input that waited was never sent: the terminal ended first, or the queue was full. */
  undelivered: (bytes: Uint8Array) => void;
}

type Handlers = { [K in keyof ConnectionEvents]: Set<ConnectionEvents[K]> };

/** Close codes after which reconnecting makes no sense. */
const FINAL_CLOSES = new Set([4000, 4002, 4004, 4005, 1008]);
const OPEN = 1;

/** One terminal's connection; see `connect`. */
export class TerminalConnection {
  /** The terminal id, from the bridge's `hello`. */
  id: string | null = null;
  /** Offset just past the last output byte received. */
  offset: number;
  status: Status = "connecting";
  /** How the program ended, once it has. */
  exitInfo: ExitInfo | null = null;
  /** This viewer's role, as the bridge's `hello` said. */
  role: Role = "read-write";

  private ws: WebSocketLike | null = null;
  private readonly handlers: Handlers = {
    data: new Set(),
    status: new Set(),
    exit: new Set(),
    error: new Set(),
    dropped: new Set(),
    snapshot: new Set(),
    size: new Set(),
    pending: new Set(),
    undelivered: new Set(),
  };
  /** Input written while connecting or reconnecting, sent in order once active. */
  private queued: Uint8Array[] = [];
  private queuedBytes = 0;
  private readonly opts: Required<Omit<ConnectOptions, "since" | "token" | "fetch" | "share">> &
    Pick<ConnectOptions, "token" | "fetch" | "share">;
  private opening = 0;
  /** Set by a hello that announced a snapshot, until its frame arrives. */
  private snapshotSize: { cols: number; rows: number } | null = null;
  private resumable: boolean;
  private acked = 0;
  private lostAt = 0;
  private delay: number;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private exited = false;
  private readonly graceFixed: boolean;

  constructor(
    readonly url: string,
    options: ConnectOptions = {},
  ) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error("no WebSocket implementation: pass options.WebSocket");
    this.opts = {
      WebSocket: WS,
      fetch: options.fetch ?? globalThis.fetch?.bind(globalThis),
      token: options.token,
      share: options.share,
      tickets: options.tickets ?? (options.fetch ?? globalThis.fetch) !== undefined,
      screen: options.screen ?? true,
      role: options.role ?? (options.share ? "read-only" : "read-write"),
      takeover: options.takeover ?? false,
      grace: options.grace ?? 10_000,
      backoff: options.backoff ?? { initial: 250, max: 2_000 },
      flowControl: options.flowControl ?? false,
      ackEvery: options.ackEvery ?? 64 * 1024,
      maxPendingInput: options.maxPendingInput ?? 64 * 1024,
    };
    this.graceFixed = options.grace !== undefined;
    this.offset = options.since ?? 0;
    this.resumable = options.since !== undefined;
    this.delay = this.opts.backoff.initial;
    this.open();
  }

  on<K extends keyof ConnectionEvents>(event: K, handler: ConnectionEvents[K]): () => void {
    this.handlers[event].add(handler);
    return () => this.handlers[event].delete(handler);
  }

  /**
   * Sends input (a string is encoded as UTF-8). While connecting or reconnecting it waits
   * (in order, up to `maxPendingInput` bytes) and goes out once the socket is back; input
   * that can never go (the terminal ended, the queue is full) is reported as
   * `undelivered`, never silently dropped.
   */
  write(data: string | Uint8Array): void {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    if (bytes.length === 0) return;
    if (this.status === "active" && this.ws && this.queued.length === 0) {
      this.ws.send(bytes);
      return;
    }
    if (this.status === "dead" || this.status === "closed" || this.status === "detached") {
      this.emit("undelivered", bytes);
      return;
    }
    if (this.queuedBytes + bytes.length > this.opts.maxPendingInput) {
      this.emit("undelivered", bytes);
      return;
    }
    this.queued.push(bytes);
    this.queuedBytes += bytes.length;
    this.emit("pending", this.queuedBytes);
  }

  /** Input waiting for the socket, in bytes. */
  get pendingInput(): number {
    return this.queuedBytes;
  }

  /** Sends what waited, in order, now that the socket is active. */
  private flushQueued(): void {
    if (this.queued.length === 0 || !this.ws) return;
    for (const bytes of this.queued) this.ws.send(bytes);
    this.queued = [];
    this.queuedBytes = 0;
    this.emit("pending", 0);
  }

  /** The terminal ended with input still waiting: say it was never sent. */
  private dropQueued(): void {
    if (this.queued.length === 0) return;
    const all = new Uint8Array(this.queuedBytes);
    let at = 0;
    for (const bytes of this.queued) {
      all.set(bytes, at);
      at += bytes.length;
    }
    this.queued = [];
    this.queuedBytes = 0;
    this.emit("pending", 0);
    this.emit("undelivered", all);
  }

  /** Asks for a new terminal size. */
  resize(cols: number, rows: number): void {
    this.sendControl({ type: "resize", cols, rows });
  }

  /**
   * With flow control: the output before `offset` has been rendered. Acks go out every
   * `ackEvery` bytes, and whenever everything received is rendered, so a pause always ends.
   */
  rendered(offset: number): void {
    if (!this.opts.flowControl || offset <= this.acked) return;
    if (offset - this.acked >= this.opts.ackEvery || offset >= this.offset) {
      this.acked = offset;
      this.sendControl({ type: "ack", offset });
    }
  }

  /**
   * Keeps the terminal on purpose (`POST /api/terminals/{id}/detach`): it runs on beyond
   * the grace, until ptyd's idle timeout or a `DELETE`, and appears in the terminal list,
   * from which a new connection reopens it with its screen. This connection ends with
   * status `detached`. Rejects with the bridge's reason when it refuses.
   */
  async detach(): Promise<void> {
    const id = this.terminalId();
    const fetchFn = this.opts.fetch;
    if (!id || !fetchFn) throw new Error("detach needs fetch and the terminal's id");
    const r = await fetchFn(this.apiUrl(`/api/terminals/${id}/detach`), {
      method: "POST",
      headers: this.authHeaders(),
      credentials: "include",
    });
    if (!r.ok) {
      let body: { error?: string; message?: string } = {};
      try {
        body = await r.json();
      } catch {
        // Not JSON: the status says enough.
      }
      throw new Error(`${body.error ?? `HTTP${r.status}`}: ${body.message ?? "detach refused"}`);
    }
    // The bridge closes the socket with 4003; without one open, this is the end already.
    if (!this.ws) this.finishDetached();
  }

  private finishDetached(): void {
    this.opening++;
    this.clearRetry();
    this.setStatus("detached");
    this.dropQueued();
  }

  /** Closes this connection for good; the terminal keeps running for its grace. */
  close(): void {
    this.opening++;
    this.clearRetry();
    this.setStatus("closed");
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "client closed");
  }

  private socketUrl(ticket?: string): string {
    const u = new URL(this.url);
    u.searchParams.delete("ticket");
    if (this.resumable) u.searchParams.set("since", String(this.offset));
    if (this.opts.screen) u.searchParams.set("screen", "auto");
    if (this.opts.role !== "read-write") u.searchParams.set("role", this.opts.role);
    // Taking over once is enough: a reconnect joins whoever is there then.
    if (this.opts.takeover && this.id === null) u.searchParams.set("takeover", "1");
    if (ticket) u.searchParams.set("ticket", ticket);
    return u.toString();
  }

  /** The bridge's HTTP URL for `path`, from the socket URL. */
  private apiUrl(path: string): string {
    const api = new URL(this.url);
    api.protocol = api.protocol === "wss:" ? "https:" : "http:";
    api.pathname = api.pathname.replace(/\/ws\/terminal\/[^/]+$/, "") + path;
    api.search = "";
    return api.toString();
  }

  private terminalId(): string | undefined {
    return this.id ?? new URL(this.url).pathname.split("/").pop();
  }

  private authHeaders(): Record<string, string> {
    if (this.opts.share) return { authorization: `Share ${this.opts.share}` };
    return this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {};
  }

  private open(): void {
    if (!this.opts.tickets) {
      this.openSocket(this.socketUrl());
      return;
    }
    // A newer attempt (or close()) makes an older ticket request moot.
    const attempt = ++this.opening;
    void this.mintTicket().then(
      (ticket) => {
        if (attempt === this.opening && this.status !== "closed" && this.status !== "dead") {
          this.openSocket(this.socketUrl(ticket));
        }
      },
      (err: TicketError) => {
        if (attempt !== this.opening || this.status === "closed" || this.status === "dead") return;
        if (err.kind === "gone") {
          this.setStatus("dead");
        } else if (err.kind === "refused") {
          this.emit("error", { code: err.code, message: err.message });
          this.setStatus("closed");
        } else {
          // The bridge is unreachable right now: like a dropped socket, retry in the grace.
          this.onClose(1006, err.message);
        }
      },
    );
  }

  /** A single-use ticket for this terminal's socket. */
  private async mintTicket(): Promise<string> {
    const id = this.terminalId();
    const fetchFn = this.opts.fetch;
    if (!id || !fetchFn) throw new TicketError("refused", "NoFetch", "tickets need fetch and an id");
    let r: Response;
    try {
      r = await fetchFn(this.apiUrl(`/api/terminals/${id}/ticket`), {
        method: "POST",
        headers: this.authHeaders(),
        credentials: "include",
      });
    } catch (e) {
      throw new TicketError("network", "Network", String(e));
    }
    if (r.status === 201) return String((await r.json()).ticket);
    let body: { error?: string; message?: string; end_reason?: string } = {};
    try {
      body = await r.json();
    } catch {
      // Not JSON: a proxy's page; the status says enough.
    }
    const code = body.error ?? `HTTP${r.status}`;
    const message = body.message ?? `ticket request answered ${r.status}`;
    if (r.status === 410) this.endedWhileAway(body.end_reason ?? null);
    if (r.status === 404 || r.status === 410) throw new TicketError("gone", code, message);
    if (r.status >= 500) throw new TicketError("network", code, message);
    throw new TicketError("refused", code, message);
  }

  private openSocket(url: string): void {
    const ws = new this.opts.WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.onMessage(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // A close event follows; it carries what there is to know.
    };
  }

  private onMessage(data: unknown): void {
    if (typeof data === "string") {
      this.onControl(data);
      return;
    }
    const bytes = toBytes(data);
    if (!bytes) return;
    if (this.snapshotSize) {
      // The frame right after a hello that announced a snapshot: the screen, not output.
      const size = this.snapshotSize;
      this.snapshotSize = null;
      this.emit("snapshot", bytes, size);
      return;
    }
    this.offset += bytes.length;
    this.emit("data", bytes, this.offset);
  }

  private onControl(text: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text);
    } catch {
      this.emit("error", { code: "BadMessage", message: `unreadable control message: ${text}` });
      return;
    }
    switch (msg.type) {
      case "hello": {
        this.id = String(msg.id);
        this.offset = Number(msg.offset);
        this.snapshotSize =
          Number(msg.snapshot ?? 0) > 0 ? { cols: Number(msg.cols), rows: Number(msg.rows) } : null;
        this.resumable = true;
        // A bridge before protocol 3 has no roles: every socket is read-write there.
        this.role = msg.role === "read-only" ? "read-only" : "read-write";
        if (!this.graceFixed && typeof msg.grace_ms === "number") this.opts.grace = msg.grace_ms;
        this.delay = this.opts.backoff.initial;
        this.lostAt = 0;
        this.setStatus("active");
        if (this.opts.flowControl) {
          // The first ack turns flow control on for this socket.
          this.acked = this.offset;
          this.sendControl({ type: "ack", offset: this.offset });
        }
        this.flushQueued();
        break;
      }
      case "size": {
        this.emit("size", { cols: Number(msg.cols), rows: Number(msg.rows) });
        break;
      }
      case "dropped": {
        const offset = Number(msg.offset);
        const bytes = Number(msg.bytes);
        this.offset = Math.max(this.offset, offset + bytes);
        this.emit("dropped", offset, bytes);
        break;
      }
      case "exit": {
        this.exited = true;
        this.exitInfo = {
          code: (msg.code as number) ?? null,
          signal: (msg.signal as number) ?? null,
          endReason: (msg.end_reason as string) ?? null,
        };
        this.emit("exit", this.exitInfo);
        break;
      }
      case "error":
        this.emit("error", { code: String(msg.code), message: String(msg.message) });
        break;
      case "pong":
        break;
      default:
        // A newer bridge may add messages; ignoring them is what the protocol asks.
        break;
    }
  }

  private onClose(code: number, reason: string): void {
    this.ws = null;
    if (this.status === "closed" || this.status === "dead" || this.status === "detached") return;
    if (code === 4003 && !this.exited) {
      // Detached (by this page or another client): kept, so nothing to reconnect to here.
      this.finishDetached();
      return;
    }
    if (this.exited || code === 4002 || code === 4004) {
      if (code === 4002 && !this.exitInfo) {
        // Deleted through the API: no exit message comes, but the reason is known.
        this.exitInfo = { code: null, signal: null, endReason: "deleted" };
        this.emit("exit", this.exitInfo);
      }
      this.setStatus("dead");
      return;
    }
    if (FINAL_CLOSES.has(code)) {
      this.emit("error", { code: `Closed${code}`, message: reason || `closed with ${code}` });
      this.setStatus(code === 1008 ? "dead" : "closed");
      return;
    }
    if (!this.lostAt) this.lostAt = Date.now();
    this.setStatus("reconnecting");
    // The bridge closes a socket that was idle (1000, "idle timeout …"): nothing is wrong,
    // so come back at once instead of after the backoff (a failure then backs off as usual).
    if (code === 1000 && reason.startsWith("idle")) {
      void this.retry();
      return;
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const left = this.lostAt + this.opts.grace - Date.now();
    if (left <= 0) {
      void this.giveUp();
      return;
    }
    const wait = Math.min(this.delay, left);
    this.delay = Math.min(this.delay * 2, this.opts.backoff.max);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.retry();
    }, wait);
  }

  private async retry(): Promise<void> {
    if (this.status !== "reconnecting") return;
    // A browser cannot see an upgrade's 410; the API says whether the terminal is gone.
    if ((await this.terminalState()) === "gone") {
      this.setStatus("dead");
      return;
    }
    if (this.status === "reconnecting") this.open();
  }

  /** The grace is over; unless the API says the terminal still waits, it is dead. */
  private async giveUp(): Promise<void> {
    if ((await this.terminalState()) === "waiting" && this.status === "reconnecting") {
      this.lostAt = Date.now();
      this.scheduleRetry();
      return;
    }
    // Gone, or unreachable past the grace: either way the grace ended it (unless a 410
    // named another reason already).
    this.endedWhileAway("grace_expired");
    this.setStatus("dead");
  }

  /** A terminal found dead while away: the API's 410 says why (e.g. "grace_expired"). */
  private endedWhileAway(endReason: string | null): void {
    if (this.exitInfo || !endReason) return;
    this.exitInfo = { code: null, signal: null, endReason };
    this.emit("exit", this.exitInfo);
  }

  /** From the API: "gone" (404/410), "waiting" (200: still there), or "unknown". */
  private async terminalState(): Promise<"gone" | "waiting" | "unknown"> {
    const id = this.terminalId();
    const fetchFn = this.opts.fetch;
    if (!id || !fetchFn) return "unknown";
    try {
      const r = await fetchFn(this.apiUrl(`/api/terminals/${id}`), {
        headers: this.authHeaders(),
        credentials: "include",
      });
      if (r.status === 410) {
        const body = (await r.json().catch(() => null)) as { end_reason?: string } | null;
        this.endedWhileAway(body?.end_reason ?? null);
      }
      if (r.status === 404 || r.status === 410) return "gone";
      return r.ok ? "waiting" : "unknown";
    } catch {
      return "unknown";
    }
  }

  private sendControl(msg: Record<string, unknown>): void {
    if (this.ws && this.ws.readyState === OPEN) this.ws.send(JSON.stringify(msg));
  }

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private setStatus(status: Status): void {
    if (this.status === status) return;
    this.status = status;
    if (status === "dead" || status === "closed") {
      this.clearRetry();
      this.dropQueued();
    }
    this.emit("status", status);
  }

  private emit<K extends keyof ConnectionEvents>(
    event: K,
    ...args: Parameters<ConnectionEvents[K]>
  ): void {
    for (const h of this.handlers[event]) (h as (...a: unknown[]) => void)(...args);
  }
}

/** Why a ticket could not be had: the terminal is gone, the bridge refused, or no answer. */
class TicketError extends Error {
  constructor(
    readonly kind: "gone" | "refused" | "network",
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function toBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/**
 * Connects to a terminal's WebSocket URL (`ws://host/ws/terminal/<id>`), e.g. the
 * `ws_url` of `POST /api/terminals`.
 */
export function connect(url: string, options: ConnectOptions = {}): TerminalConnection {
  return new TerminalConnection(url, options);
}
