import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { connect, type Status, type WebSocketLike } from "../src/index.js";

/** A WebSocket the test drives by hand. */
class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: Array<string | Uint8Array> = [];
  closedWith: number | null = null;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string | Uint8Array): void {
    this.sent.push(data);
  }
  close(code = 1000): void {
    this.closedWith = code;
    this.readyState = 3;
  }
  // The server's side.
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  control(msg: object): void {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  output(text: string): void {
    this.onmessage?.({ data: new TextEncoder().encode(text).buffer });
  }
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  controls(): Array<Record<string, unknown>> {
    return this.sent.filter((s): s is string => typeof s === "string").map((s) => JSON.parse(s));
  }
}

const URL_ = "ws://127.0.0.1:3000/ws/terminal/6f1c0000-0000-4000-8000-000000000001";
const ID = "6f1c0000-0000-4000-8000-000000000001";

function hello(sock: FakeSocket, offset = 0): void {
  sock.open();
  sock.control({ type: "hello", id: ID, offset, end: offset, dropped: 0, version: 1 });
}

function last(): FakeSocket {
  return FakeSocket.all[FakeSocket.all.length - 1];
}

const fetchAlive = vi.fn(async () => new Response("{}", { status: 200 }));

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers();
  fetchAlive.mockClear();
});
afterEach(() => vi.useRealTimers());

describe("connect", () => {
  it("tracks offsets, emits data with its end offset, and goes active on hello", () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const statuses: Status[] = [];
    const data: Array<[string, number]> = [];
    conn.on("status", (s) => statuses.push(s));
    conn.on("data", (b, end) => data.push([new TextDecoder().decode(b), end]));
    expect(conn.status).toBe("connecting");
    expect(last().url).toBe(`${URL_}?screen=auto`);
    expect(last().binaryType).toBe("arraybuffer");
    hello(last(), 100);
    last().output("abc");
    last().output("de");
    expect(statuses).toEqual(["active"]);
    expect(conn.id).toBe(ID);
    expect(conn.offset).toBe(105);
    expect(data).toEqual([
      ["abc", 103],
      ["de", 105],
    ]);
  });

  it("sends input as binary and resize as JSON, and nothing else unasked", () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    conn.write("early"); // not active yet: kept, and sent first once it is
    hello(last());
    conn.write("ls\r");
    conn.resize(120, 40);
    const sock = last();
    expect(sock.sent.length).toBe(3);
    expect(new TextDecoder().decode(sock.sent[0] as Uint8Array)).toBe("early");
    expect(new TextDecoder().decode(sock.sent[1] as Uint8Array)).toBe("ls\r");
    expect(JSON.parse(sock.sent[2] as string)).toEqual({ type: "resize", cols: 120, rows: 40 });
  });

  it("reconnects with since= after a drop, with growing delays", async () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive, grace: 10_000 });
    hello(last());
    last().output("12345");
    last().drop(1006);
    expect(conn.status).toBe("reconnecting");
    expect(FakeSocket.all.length).toBe(1);
    await vi.advanceTimersByTimeAsync(250);
    expect(FakeSocket.all.length).toBe(2);
    expect(new URL(last().url).searchParams.get("since")).toBe("5");
    last().drop(1006); // still down
    await vi.advanceTimersByTimeAsync(499);
    expect(FakeSocket.all.length).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeSocket.all.length).toBe(3);
    hello(last(), 5);
    expect(conn.status).toBe("active");
    last().output("6");
    expect(conn.offset).toBe(6);
  });

  it("is dead once the grace has passed without a successful reconnect", async () => {
    const offline = vi.fn(async () => {
      throw new TypeError("network down");
    });
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: offline, grace: 1_000 });
    hello(last());
    last().drop(1006);
    for (let i = 0; i < 10 && conn.status === "reconnecting"; i++) {
      await vi.advanceTimersByTimeAsync(300);
      if (last().readyState === 0) last().drop(1006);
    }
    expect(conn.status).toBe("dead");
  });

  it("keeps reconnecting for the grace hello announced, and longer while the API says it waits", async () => {
    let alive = true;
    const api = vi.fn(async () => new Response("{}", { status: alive ? 200 : 410 }));
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: api });
    last().open();
    last().control({ type: "hello", id: ID, offset: 0, end: 0, dropped: 0, version: 1, grace_ms: 60_000 });
    last().drop(1006);
    // Well past the default 10 s, still trying: the bridge said 60 s.
    for (let t = 0; t < 30_000; t += 2_000) {
      await vi.advanceTimersByTimeAsync(2_000);
      if (last().readyState === 0) last().drop(1006);
    }
    expect(conn.status).toBe("reconnecting");
    alive = false; // the bridge's grace ran out
    for (let i = 0; i < 5 && conn.status === "reconnecting"; i++) {
      await vi.advanceTimersByTimeAsync(2_000);
      if (last().readyState === 0) last().drop(1006);
    }
    expect(conn.status).toBe("dead");
  });

  it("is dead at once when the API says the terminal is gone (410)", async () => {
    const gone = vi.fn(async () => new Response("{}", { status: 410 }));
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: gone });
    hello(last());
    last().drop(1006);
    await vi.advanceTimersByTimeAsync(250);
    expect(gone).toHaveBeenCalledWith(
      `http://127.0.0.1:3000/api/terminals/${ID}`,
      expect.anything(),
    );
    expect(conn.status).toBe("dead");
    expect(FakeSocket.all.length).toBe(1);
  });

  it("reports exit and ends dead without reconnecting", async () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const exits: unknown[] = [];
    conn.on("exit", (e) => exits.push(e));
    hello(last());
    last().control({ type: "exit", code: 3, signal: null, end_reason: "exited" });
    last().drop(1000, "process exited with code 3");
    expect(exits).toEqual([{ code: 3, signal: null, endReason: "exited" }]);
    expect(conn.status).toBe("dead");
    await vi.advanceTimersByTimeAsync(5_000);
    expect(FakeSocket.all.length).toBe(1);
  });

  it("keeps input written before the socket is active and sends it once, in order", async () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const pending: number[] = [];
    conn.on("pending", (n) => pending.push(n));
    conn.write("echo one\r");
    conn.write(new Uint8Array([0x61]));
    expect(conn.pendingInput).toBe(10);
    hello(last());
    const text = (d: string | Uint8Array) => (typeof d === "string" ? null : new TextDecoder().decode(d));
    expect(last().sent.map(text).filter((t) => t !== null)).toEqual(["echo one\r", "a"]);
    expect(pending).toEqual([9, 10, 0]);
    // Typed while reconnecting: sent on the next socket, not before, not twice.
    last().drop(1006);
    conn.write("echo two\r");
    await vi.advanceTimersByTimeAsync(1_000);
    const second = last();
    expect(second.sent.map(text).filter((t) => t !== null)).toEqual([]);
    hello(second, 20);
    expect(second.sent.map(text).filter((t) => t !== null)).toEqual(["echo two\r"]);
    expect(conn.pendingInput).toBe(0);
  });

  it("reports input it could not send instead of dropping it silently", async () => {
    const conn = connect(URL_, {
      WebSocket: FakeSocket,
      tickets: false,
      fetch: fetchAlive,
      maxPendingInput: 8,
    });
    const lost: string[] = [];
    conn.on("undelivered", (b) => lost.push(new TextDecoder().decode(b)));
    conn.write("12345");
    conn.write("67890"); // past the bound
    expect(lost).toEqual(["67890"]);
    hello(last());
    last().control({ type: "exit", code: 0, signal: null });
    last().drop(1000, "process exited with code 0");
    conn.write("late");
    expect(lost).toEqual(["67890", "late"]);
    // A terminal that dies while input waits reports that input.
    const other = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const lost2: string[] = [];
    other.on("undelivered", (b) => lost2.push(new TextDecoder().decode(b)));
    other.write("queued");
    last().drop(4002, "terminal deleted");
    expect(lost2).toEqual(["queued"]);
  });

  it("reports a deleted terminal as an exit with that reason", async () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const exits: unknown[] = [];
    conn.on("exit", (e) => exits.push(e));
    hello(last());
    last().drop(4002, "terminal deleted");
    expect(exits).toEqual([{ code: null, signal: null, endReason: "deleted" }]);
    expect(conn.status).toBe("dead");
  });

  it("does not fight another tab that took the terminal over", async () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const errors: string[] = [];
    conn.on("error", (e) => errors.push(e.code));
    hello(last());
    last().drop(4000, "taken over by another connection");
    await vi.advanceTimersByTimeAsync(5_000);
    expect(conn.status).toBe("closed");
    expect(errors).toEqual(["Closed4000"]);
    expect(FakeSocket.all.length).toBe(1);
  });

  it("detach asks the bridge, then ends detached without reconnecting or losing input silently", async () => {
    const calls: Array<[string, RequestInit | undefined]> = [];
    const api = vi.fn(async (url: string | URL | Request, init?: RequestInit) => {
      calls.push([String(url), init]);
      return new Response(JSON.stringify({ id: ID, status: "Detached" }), { status: 200 });
    });
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: api, token: "s3cret" });
    const undelivered: number[] = [];
    conn.on("undelivered", (b) => undelivered.push(b.length));
    hello(last());
    await conn.detach();
    expect(calls[0][0]).toBe(`http://127.0.0.1:3000/api/terminals/${ID}/detach`);
    expect(calls[0][1]?.method).toBe("POST");
    expect((calls[0][1]?.headers as Record<string, string>).authorization).toBe("Bearer s3cret");
    // The bridge closes the socket with 4003.
    last().drop(4003, "terminal detached: it runs on");
    await vi.advanceTimersByTimeAsync(5_000);
    expect(conn.status).toBe("detached");
    expect(FakeSocket.all.length).toBe(1);
    conn.write("late");
    expect(undelivered).toEqual([4]);
  });

  it("a refused detach says why and leaves the connection as it was", async () => {
    const api = vi.fn(
      async () =>
        new Response(JSON.stringify({ error: "Gone", message: "terminal is dead" }), { status: 410 }),
    );
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: api });
    hello(last());
    await expect(conn.detach()).rejects.toThrow("Gone: terminal is dead");
    expect(conn.status).toBe("active");
  });

  it("asks for its role and a takeover, and follows the size the bridge sets", async () => {
    const conn = connect(URL_, {
      WebSocket: FakeSocket,
      tickets: false,
      fetch: fetchAlive,
      role: "read-only",
      takeover: true,
    });
    const first = new URL(last().url);
    expect(first.searchParams.get("role")).toBe("read-only");
    expect(first.searchParams.get("takeover")).toBe("1");
    const sizes: Array<{ cols: number; rows: number }> = [];
    conn.on("size", (s) => sizes.push(s));
    last().open();
    last().control({ type: "hello", id: ID, offset: 0, end: 0, dropped: 0, version: 3, role: "read-only" });
    expect(conn.role).toBe("read-only");
    last().control({ type: "size", cols: 80, rows: 24 });
    expect(sizes).toEqual([{ cols: 80, rows: 24 }]);
    // A reconnect joins whoever is there then: no second takeover.
    last().drop(1006);
    await vi.advanceTimersByTimeAsync(300);
    expect(new URL(last().url).searchParams.has("takeover")).toBe(false);
    expect(new URL(last().url).searchParams.get("role")).toBe("read-only");
  });

  it("takes the frame after a hello that announces a snapshot as the screen, not output", () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const snaps: Array<[string, number, number]> = [];
    const data: Array<[string, number]> = [];
    conn.on("snapshot", (b, size) => snaps.push([new TextDecoder().decode(b), size.cols, size.rows]));
    conn.on("data", (b, end) => data.push([new TextDecoder().decode(b), end]));
    last().open();
    last().control({ type: "hello", id: ID, offset: 500, end: 500, dropped: 490, version: 2, snapshot: 9, cols: 80, rows: 24 });
    last().output("\x1b[Hscreen");
    last().output("live");
    expect(snaps).toEqual([["\x1b[Hscreen", 80, 24]]);
    expect(data).toEqual([["live", 504]]);
    expect(conn.offset).toBe(504);
    // Without `screen`, the socket asks for bytes only.
    connect(URL_, { WebSocket: FakeSocket, tickets: false, screen: false });
    expect(last().url).toBe(URL_);
  });

  it("follows dropped notices", () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive, since: 10 });
    const u = new URL(last().url);
    expect(u.searchParams.get("since")).toBe("10");
    const drops: Array<[number, number]> = [];
    conn.on("dropped", (o, b) => drops.push([o, b]));
    last().open();
    last().control({ type: "hello", id: ID, offset: 50, end: 60, dropped: 40, version: 1 });
    last().control({ type: "dropped", offset: 10, bytes: 40 });
    expect(drops).toEqual([[10, 40]]);
    expect(conn.offset).toBe(50);
  });

  it("with a token, opens every socket with a fresh ticket and never puts the token in a URL", async () => {
    let minted = 0;
    const calls: Array<[string, RequestInit | undefined]> = [];
    const api = vi.fn(async (url: string | URL | Request, init?: RequestInit) => {
      calls.push([String(url), init]);
      if (String(url).endsWith("/ticket")) {
        minted++;
        return new Response(JSON.stringify({ ticket: `t${minted}` }), { status: 201 });
      }
      return new Response("{}", { status: 200 });
    });
    const conn = connect(URL_, { WebSocket: FakeSocket, fetch: api, token: "s3cret", since: 10 });
    await vi.advanceTimersByTimeAsync(0);
    const first = new URL(last().url);
    expect(first.searchParams.get("ticket")).toBe("t1");
    expect(first.searchParams.get("since")).toBe("10");
    expect(first.searchParams.has("token")).toBe(false);
    expect(calls[0][0]).toBe(`http://127.0.0.1:3000/api/terminals/${ID}/ticket`);
    expect(calls[0][1]?.method).toBe("POST");
    expect((calls[0][1]?.headers as Record<string, string>).authorization).toBe("Bearer s3cret");
    hello(last(), 20);
    last().drop(1006);
    await vi.advanceTimersByTimeAsync(300);
    const second = new URL(last().url);
    expect(second.searchParams.get("ticket")).toBe("t2");
    expect(second.searchParams.get("since")).toBe("20");
    expect(conn.status).toBe("reconnecting");
  });

  it("a refused ticket closes with the bridge's reason; a gone terminal is dead", async () => {
    const refuse = vi.fn(
      async () => new Response(JSON.stringify({ error: "Unauthorized", message: "no" }), { status: 401 }),
    );
    const conn = connect(URL_, { WebSocket: FakeSocket, fetch: refuse });
    const errors: string[] = [];
    conn.on("error", (e) => errors.push(e.code));
    await vi.advanceTimersByTimeAsync(0);
    expect(conn.status).toBe("closed");
    expect(errors).toEqual(["Unauthorized"]);
    expect(FakeSocket.all.length).toBe(0);
    const gone = vi.fn(async () => new Response("{}", { status: 410 }));
    const dead = connect(URL_, { WebSocket: FakeSocket, fetch: gone });
    await vi.advanceTimersByTimeAsync(0);
    expect(dead.status).toBe("dead");
  });

  it("ignores control messages it does not know, and reports unreadable ones", () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    const errors: string[] = [];
    conn.on("error", (e) => errors.push(e.code));
    hello(last());
    last().control({ type: "something_new", x: 1 });
    last().onmessage?.({ data: "{not json" });
    expect(errors).toEqual(["BadMessage"]);
    expect(conn.status).toBe("active");
  });
});

describe("flow control", () => {
  it("acks after hello, every ackEvery bytes rendered, and when caught up", () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive, flowControl: true, ackEvery: 10 });
    hello(last(), 100);
    const acks = () => last().controls().filter((m) => m.type === "ack").map((m) => m.offset);
    expect(acks()).toEqual([100]);
    last().output("x".repeat(30)); // received up to 130
    conn.rendered(105); // 5 rendered: not yet worth an ack
    expect(acks()).toEqual([100]);
    conn.rendered(112); // 12 since the last ack
    expect(acks()).toEqual([100, 112]);
    conn.rendered(130); // caught up: always acked, so the bridge never stays paused
    expect(acks()).toEqual([100, 112, 130]);
    conn.rendered(120); // stale
    expect(acks()).toEqual([100, 112, 130]);
  });

  it("sends no acks without flow control", () => {
    const conn = connect(URL_, { WebSocket: FakeSocket, tickets: false, fetch: fetchAlive });
    hello(last());
    last().output("abc");
    conn.rendered(3);
    expect(last().controls()).toEqual([]);
  });
});
