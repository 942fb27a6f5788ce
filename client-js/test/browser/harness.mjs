// Real ptyd and ptyd-bridge processes (from target/debug) and a headless Debian Chromium,
// each test run in its own temporary directory on its own port.
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "../../..");
const BIN = process.env.PTYD_BIN_DIR ?? join(ROOT, "target", "debug");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export async function waitFor(what, check, timeout = 10_000, every = 25) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
}

/** The token each stack's bridge generated, by its base URL, for `openTerminal`. */
const tokens = new Map();

/**
 * ptyd and ptyd-bridge, with `bridgeArgs` (e.g. a short --grace). Unless the arguments
 * configure authentication, the bridge generates its token as for a user, and `token` and
 * `loginUrl` come from the login line it prints.
 */
export async function startStack(bridgeArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), "ptyd-browser-"));
  const socket = join(dir, "ptyd.sock");
  // A home without rc files keeps the shell's prompt and behaviour plain; the runtime
  // directory (where the bridge keeps its token) is this stack's own.
  const env = {
    ...process.env,
    HOME: dir,
    XDG_RUNTIME_DIR: dir,
    SHELL: "/bin/bash",
    PTYD_SOCKET: socket,
    RUST_LOG: "info",
  };
  for (const k of Object.keys(env)) if (k.startsWith("PTYD_BRIDGE_")) delete env[k];
  const generated = !bridgeArgs.some((a) => ["--token", "--token-file", "--no-auth"].includes(a));
  delete env.PROMPT_COMMAND;
  const procs = [];
  const stop = async () => {
    for (const p of [...procs].reverse()) {
      p.kill("SIGTERM");
      await new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.on("exit", r)));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const ptyctl = async (...args) => (await run(join(BIN, "ptyctl"), args, { env })).stdout;
  let log = "";
  let url, loginUrl;
  // A stack that fails to start leaves no process or directory behind either.
  try {
    const daemon = spawn(join(BIN, "ptyd"), ["--socket", socket], { env, stdio: ["ignore", "ignore", "pipe"] });
    procs.push(daemon);
    await waitFor("ptyd to answer", () => ptyctl("ls").then(() => true, () => false));
    const bridge = spawn(
      join(BIN, "ptyd-bridge"),
      ["--no-spawn-daemon", "--listen", "127.0.0.1:0", ...bridgeArgs],
      { env, stdio: ["ignore", "pipe", "pipe"] },
    );
    procs.push(bridge);
    bridge.stderr.on("data", (d) => (log += d));
    [url, loginUrl] = await new Promise((ok, fail) => {
      let out = "";
      bridge.stdout.on("data", (d) => {
        out += d;
        const m = out.match(/listening on (http:\/\/\S+)/);
        const login = out.match(/open (http:\/\/\S+) to log in/);
        if (m && (login || !generated)) ok([m[1], login?.[1]]);
      });
      bridge.on("exit", (code) => fail(new Error(`ptyd-bridge exited (${code}): ${log}`)));
    });
  } catch (e) {
    await stop();
    throw e;
  }
  const token = loginUrl ? new URL(loginUrl).searchParams.get("token") : undefined;
  if (token) tokens.set(url, token);
  return {
    url,
    token,
    loginUrl,
    /** Headers for API calls from Node. */
    auth: token ? { authorization: `Bearer ${token}` } : {},
    dir,
    ptyctl,
    bridgeLog: () => log,
    stop,
  };
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  // Root (as in CI) cannot use Chromium's sandbox.
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}

/** The terminal's whole buffer (scrollback included), one string per row. */
export async function bufferLines(page) {
  return page.evaluate(() => {
    const b = window.ptydTerm.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines;
  });
}

export async function waitForLine(page, predicate, what, timeout = 10_000) {
  return waitFor(what, async () => (await bufferLines(page)).find(predicate), timeout, 50);
}

/**
 * Opens `path` (logging in with the stack's generated token, as the printed login URL
 * does, unless `path` carries a token of its own), waits for Active and a prompt.
 */
export async function openTerminal(page, base, path = "/") {
  const token = tokens.get(base);
  if (token && !path.includes("token=")) {
    path += `${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
  }
  await page.goto(base + path);
  await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
  await waitForLine(page, (l) => /[$#] ?$/.test(l.trimEnd()), "a shell prompt");
  const id = new URL(page.url()).pathname.split("/").pop();
  return id;
}

export async function type(page, text) {
  await page.locator("#terminal").click();
  await page.keyboard.type(text);
}

export function readArtifact(path) {
  return readFileSync(path);
}
