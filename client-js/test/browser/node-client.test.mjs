// The library from Node, as a JS agent would use it: `ws` for the WebSocket, real ptyd
// and ptyd-bridge behind it.
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { connect } from "../../dist/lib/index.js";
import { startStack } from "./harness.mjs";

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

it("drives a terminal from Node and sees its exit", async () => {
  const r = await fetch(`${stack.url}/api/terminals`, { method: "POST", body: "{}", headers: stack.auth });
  assert.equal(r.status, 201);
  const { ws_url } = await r.json();
  // The token mints a ticket per socket; it never goes into the URL.
  const conn = connect(ws_url, { WebSocket, token: stack.token });
  let output = "";
  conn.on("data", (bytes) => (output += Buffer.from(bytes).toString("utf8")));
  const exited = new Promise((ok) => conn.on("exit", ok));
  const dead = new Promise((ok) => conn.on("status", (s) => s === "dead" && ok()));
  await new Promise((ok) => conn.on("status", (s) => s === "active" && ok()));
  conn.write("echo from-no''de; exit 7\r");
  const exit = await exited;
  await dead;
  assert.deepEqual(exit, { code: 7, signal: null, endReason: "exited" });
  assert.match(output, /^from-node\r?$/m);
  assert.ok(conn.offset >= output.length, "the offset counts every byte received");
});
