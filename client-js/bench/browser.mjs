// Figures for the web terminal in headless Chromium against real ptyd and ptyd-bridge
// (release binaries when built, else debug): page load to a usable prompt, the tab's JS
// heap around `seq 1 200000`, and rendering throughput for 16 MiB of output, beside the
// same 16 MiB read by a plain Node WebSocket client (no rendering) in the same run.
// BENCH_BRIDGE_ARGS passes extra ptyd-bridge flags (e.g. "--flow-high 4194304").
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import WebSocket from "ws";
import { connect } from "../dist/lib/index.js";

const root = resolve(import.meta.dirname, "../..");
if (!process.env.PTYD_BIN_DIR && existsSync(join(root, "target/release/ptyd-bridge"))) {
  process.env.PTYD_BIN_DIR = join(root, "target/release");
}
const { launchBrowser, openTerminal, startStack, waitFor, waitForLine, bufferLines } = await import(
  "../test/browser/harness.mjs"
);

const MIB = 1024 * 1024;
const stack = await startStack(["--grace", "30s", ...(process.env.BENCH_BRIDGE_ARGS ?? "").split(" ").filter(Boolean)]);
const browser = await launchBrowser();
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  const heap = async () => {
    await cdp.send("HeapProfiler.collectGarbage");
    const { metrics } = await cdp.send("Performance.getMetrics");
    return metrics.find((m) => m.name === "JSHeapUsedSize").value / MIB;
  };

  const t0 = performance.now();
  await openTerminal(page, stack.url);
  const loadToPrompt = performance.now() - t0;

  // Keystroke echo in the page: from the write to xterm having parsed the echo.
  const echoes = await page.evaluate(async () => {
    const term = window.ptydTerm;
    const conn = window.ptydConn;
    const out = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await new Promise((ok) => {
        const d = term.onWriteParsed(() => {
          d.dispose();
          ok();
        });
        conn.write("x");
      });
      out.push(performance.now() - t);
    }
    conn.write("\x15"); // ^U: the shell forgets the x's
    return out.sort((a, b) => a - b);
  });
  const pct = (p) => echoes[Math.min(echoes.length - 1, Math.floor((p / 100) * echoes.length))];

  const before = await heap();
  await page.locator("#terminal").click();
  await page.keyboard.type("seq 1 200000");
  await page.keyboard.press("Enter");
  await waitForLine(page, (l) => l.trim() === "200000", "seq's last line", 120_000);
  const after = await heap();

  // 16 MiB of printable output; the marker after it says it has all been rendered.
  const renderRate = async (p) => {
    await p.keyboard.type("clear; head -c 12582912 /dev/urandom | base64 -w 200; echo DONE-''16");
    const t1 = performance.now();
    await p.keyboard.press("Enter");
    await waitFor(
      "the 16 MiB to render",
      async () => (await bufferLines(p)).some((l) => l.trim() === "DONE-16"),
      300_000,
      100,
    );
    return (16 * MIB) / ((performance.now() - t1) / 1000) / MIB;
  };
  const renderer = await page.evaluate(() => window.ptydRenderer);
  const webgl = await page.evaluate(() => window.ptydWebgl);
  const rendered = await renderRate(page);
  const afterFlood = await heap();
  // The other renderer, when the browser has WebGL at all.
  let other = null;
  if (webgl !== "none") {
    const name = renderer === "webgl" ? "dom" : "webgl";
    const p = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    await openTerminal(p, stack.url, `/?renderer=${name}`);
    await p.locator("#terminal").click();
    other = { name, rate: await renderRate(p) };
    await p.close();
  }

  // The same output through the transport alone, in Node: the ceiling without rendering.
  const r = await fetch(`${stack.url}/api/terminals`, { method: "POST", body: "{}", headers: stack.auth });
  const { ws_url } = await r.json();
  const conn = connect(ws_url, { WebSocket, token: stack.token });
  await new Promise((ok) => conn.on("status", (s) => s === "active" && ok()));
  let seen = "";
  const done = new Promise((ok) =>
    conn.on("data", (b) => {
      seen = (seen + Buffer.from(b).toString("latin1")).slice(-64);
      if (seen.includes("DONE-16")) ok();
    }),
  );
  const t2 = performance.now();
  conn.write("head -c 12582912 /dev/urandom | base64 -w 200; echo DONE-''16\r");
  await done;
  const raw = (16 * MIB) / ((performance.now() - t2) / 1000) / MIB;
  conn.close();

  // A reload during top: from the reload to top's screen painted from the snapshot.
  const topLines = () =>
    page.evaluate(() => {
      const b = window.ptydTerm.buffer.active;
      return b.getLine(b.viewportY)?.translateToString(true) ?? "";
    });
  await page.keyboard.type("clear; top -d 100");
  await page.keyboard.press("Enter");
  await waitFor("top to draw", async () => (await topLines()).startsWith("top - "), 10_000, 20);
  const reloads = [];
  for (let i = 0; i < 5; i++) {
    const t3 = performance.now();
    await page.reload();
    await waitFor("top after the reload", async () => (await topLines().catch(() => "")).startsWith("top - "), 10_000, 5);
    reloads.push(performance.now() - t3);
  }
  reloads.sort((a, b) => a - b);
  await page.keyboard.type("q");

  console.log(`page load → usable prompt         ${loadToPrompt.toFixed(0)} ms`);
  console.log(`keystroke echo in the page        p50 ${pct(50).toFixed(2)} ms   p99 ${pct(99).toFixed(2)} ms`);
  console.log(`JS heap before seq 1 200000       ${before.toFixed(1)} MiB`);
  console.log(`JS heap after seq 1 200000        ${after.toFixed(1)} MiB`);
  console.log(`JS heap after 16 MiB more output  ${afterFlood.toFixed(1)} MiB`);
  console.log(`WebGL in this browser             ${webgl} (the page chose the ${renderer} renderer)`);
  console.log(`16 MiB rendered, ${renderer.padEnd(5)} renderer  ${rendered.toFixed(1)} MiB/s   ratio ${(rendered / raw).toFixed(2)}`);
  if (other !== null) {
    console.log(`16 MiB rendered, ${other.name.padEnd(5)} renderer  ${other.rate.toFixed(1)} MiB/s   ratio ${(other.rate / raw).toFixed(2)}`);
  } else {
    console.log("16 MiB rendered, webgl renderer  not measured: this browser has no WebGL 2");
  }
  console.log(`16 MiB to Node, not rendered      ${raw.toFixed(1)} MiB/s`);
  console.log(`reload during top → top painted   ${reloads[2].toFixed(0)} ms median of 5 (first load to prompt ${loadToPrompt.toFixed(0)} ms)`);
} finally {
  await browser.close();
  await stack.stop();
}
