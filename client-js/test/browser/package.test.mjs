// The package as a user gets it: `npm pack` (its prepack builds dist/lib), the tarball
// installed into a scratch project next to xterm.js, a page bundled there from the
// installed files (xterm's CSS included), served from its own origin and embedding a
// terminal of a real ptyd-bridge that allows that origin, in headless Chromium.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { promisify } from "node:util";
import { build } from "esbuild";
import { launchBrowser, startStack, type, waitFor, waitForLine } from "./harness.mjs";

const exec = promisify(execFile);
const CLIENT_JS = resolve(import.meta.dirname, "../..");
const ARTIFACTS = join(CLIENT_JS, "test-results");

/**
 * The environment for npm: none of the `npm_*` settings of an enclosing `npm run`, and a
 * cache of this run's own, so that nothing is shared with other runs or the user's cache.
 */
function npmEnv(work) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_/i.test(k) && k !== "NODE_TEST_CONTEXT") env[k] = v;
  }
  return {
    ...env,
    npm_config_cache: join(work, "npm-cache"),
    npm_config_update_notifier: "false",
    npm_config_audit: "false",
    npm_config_fund: "false",
  };
}

async function npm(work, cwd, args) {
  try {
    return (await exec("npm", args, { cwd, env: npmEnv(work), timeout: 180_000, maxBuffer: 16 << 20 })).stdout;
  } catch (e) {
    throw new Error(`npm ${args.join(" ")} failed in ${cwd}: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

/**
 * Packs client-js from a copy of its sources without dist/ (so prepack has to build it,
 * and the tree the other tests load dist/lib and the page from is left alone).
 */
async function packClient(work) {
  const copy = join(work, "client-js");
  const skip = new Set(["node_modules", "dist", "test-results"].map((d) => join(CLIENT_JS, d)));
  cpSync(CLIENT_JS, copy, {
    recursive: true,
    filter: (src) => !skip.has(src) && !src.endsWith(".tgz"),
  });
  symlinkSync(join(CLIENT_JS, "node_modules"), join(copy, "node_modules"), "dir");
  const out = join(work, "tarballs");
  mkdirSync(out, { recursive: true });
  await npm(work, copy, ["pack", "--pack-destination", out]);
  const [tarball] = readdirSync(out).filter((f) => f.startsWith("ptyd-client-") && f.endsWith(".tgz"));
  assert.ok(tarball, `npm pack left no ptyd-client tarball in ${out}`);
  return join(out, tarball);
}

/** xterm.js as client-js has it installed (the version it is tested with), as a tarball. */
async function packXterm(work) {
  const out = join(work, "tarballs");
  const name = (await npm(work, work, [
    "pack",
    "--ignore-scripts",
    "--pack-destination",
    out,
    join(CLIENT_JS, "node_modules", "@xterm", "xterm"),
  ])).trim().split("\n").pop();
  return join(out, basename(name));
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>packed @ptyd/client</title>
<link rel="stylesheet" href="/main.css">
<div id="terminal" style="width: 900px; height: 500px"></div>
<script type="module" src="/main.js"></script>
`;

// What a user of the package writes: xterm, its stylesheet, the client and its xterm glue.
const MAIN = `import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { connect } from "@ptyd/client";
import { attachTerminal } from "@ptyd/client/xterm";

window.embed = async (bridge, token) => {
  const created = await fetch(bridge + "/api/terminals", {
    method: "POST",
    headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: JSON.stringify({ cols: 80, rows: 24 }),
  });
  if (created.status !== 201) throw new Error("creating a terminal answered " + created.status);
  const { ws_url } = await created.json();
  const term = new Terminal({ cols: 80, rows: 24 });
  term.open(document.getElementById("terminal"));
  const conn = connect(ws_url, { token, flowControl: true });
  attachTerminal(term, conn);
  window.ptydTerm = term;
  await new Promise((ok, fail) =>
    conn.on("status", (s) => (s === "active" ? ok() : s === "dead" && fail(new Error("terminal is dead")))),
  );
  return ws_url;
};
`;

// The declarations both entry points ship, as a TypeScript user meets them.
const TYPES_CHECK = `import { connect, type Status, type TerminalConnection } from "@ptyd/client";
import { attachTerminal, fitToContainer, type Fitter } from "@ptyd/client/xterm";
import { Terminal } from "@xterm/xterm";

const conn: TerminalConnection = connect("ws://127.0.0.1:1/ws/terminal/x", { token: "t", flowControl: true });
const status: Status = "active";
const undo: () => void = attachTerminal(new Terminal(), conn);
const fitter: Fitter = { fit() {} };
const stop: () => void = fitToContainer(document.body, fitter);
// @ts-expect-error: typed, not any
connect(42);
export { status, undo, stop };
`;

/** The scratch project: the tarballs installed, the types checked, the page bundled. */
async function scratchProject(work, tarballs) {
  const app = join(work, "app");
  mkdirSync(app);
  writeFileSync(
    join(app, "package.json"),
    JSON.stringify({ name: "ptyd-client-scratch", version: "0.0.0", private: true, type: "module" }, null, 2),
  );
  // Offline: both tarballs are local and neither has dependencies of its own.
  await npm(work, app, ["install", "--offline", "--no-audit", "--no-fund", ...tarballs]);

  writeFileSync(join(app, "check.ts"), TYPES_CHECK);
  writeFileSync(
    join(app, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: "ES2022",
        module: "ESNext",
        moduleResolution: "Bundler",
        lib: ["ES2022", "DOM"],
        types: [],
      },
      files: ["check.ts"],
    }),
  );
  try {
    await exec(join(CLIENT_JS, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], { cwd: app, timeout: 120_000 });
  } catch (e) {
    throw new Error(`the installed package's types do not check: ${e.stdout}${e.stderr}`);
  }

  writeFileSync(join(app, "main.js"), MAIN);
  writeFileSync(join(app, "index.html"), PAGE);
  const { metafile } = await build({
    absWorkingDir: app,
    entryPoints: ["main.js"],
    outdir: "public",
    bundle: true,
    format: "esm",
    target: "es2022",
    metafile: true,
    logLevel: "silent",
  });
  cpSync(join(app, "index.html"), join(app, "public", "index.html"));
  return { app, public: join(app, "public"), inputs: Object.keys(metafile.inputs) };
}

/** A static server for the bundled page, on a port (so an origin) of its own. */
async function servePage(dir) {
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };
  const server = createServer(async (req, res) => {
    const name = req.url === "/" ? "index.html" : req.url.slice(1);
    const ext = name.slice(name.lastIndexOf("."));
    if (!/^[\w.-]+$/.test(name) || !types[ext]) return res.writeHead(404).end();
    let body;
    try {
      body = await readFile(join(dir, name));
    } catch {
      return res.writeHead(404).end();
    }
    res.writeHead(200, { "content-type": types[ext] }).end(body);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

describe("the packed package, installed and embedded from another origin", () => {
  const run = {};
  before(async () => {
    run.work = mkdtempSync(join(tmpdir(), "ptyd-package-"));
    run.client = await packClient(run.work);
    run.xterm = await packXterm(run.work);
    run.project = await scratchProject(run.work, [run.client, run.xterm]);
    run.site = await servePage(run.project.public);
    run.stack = await startStack(["--allowed-origin", run.site.origin]);
    run.browser = await launchBrowser();
  });
  after(async () => {
    // Each step on its own, so that one failing does not leave the rest running.
    for (const step of [
      () => run.browser?.close(),
      () => run.stack?.stop(),
      () => run.site?.close(),
      () => run.work && rmSync(run.work, { recursive: true, force: true }),
    ]) {
      try {
        await step();
      } catch (e) {
        console.error("cleanup:", e);
      }
    }
  });

  it("the tarball has the built library for both entry points, README, LICENSE and nothing else", async () => {
    const { stdout } = await exec("tar", ["-tzf", run.client]);
    const files = stdout.split("\n").filter(Boolean).map((f) => f.replace(/^package\//, ""));
    for (const f of [
      "package.json",
      "README.md",
      "LICENSE",
      "dist/lib/index.js",
      "dist/lib/index.d.ts",
      "dist/lib/xterm.js",
      "dist/lib/xterm.d.ts",
      "dist/lib/connection.d.ts",
    ]) {
      assert.ok(files.includes(f), `${f} is packed (packed: ${files.join(", ")})`);
    }
    const stray = files.filter((f) => !["package.json", "README.md", "LICENSE"].includes(f) && !f.startsWith("dist/lib/"));
    assert.deepEqual(stray, [], "nothing but dist/lib, README, LICENSE and package.json is packed");

    const installed = join(run.project.app, "node_modules", "@ptyd", "client");
    const pkg = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
    assert.equal(pkg.repository?.directory, "client-js");
    assert.match(pkg.repository?.url ?? "", /^git\+/);
    assert.equal(pkg.license, "MIT OR Apache-2.0");
    assert.match(readFileSync(join(installed, "LICENSE"), "utf8"), /MIT License/);
    assert.match(readFileSync(join(installed, "README.md"), "utf8"), /import "@xterm\/xterm\/css\/xterm\.css"/);
  });

  it("the page is bundled from the installed package, xterm's stylesheet included", () => {
    const inputs = run.project.inputs;
    for (const f of [
      "node_modules/@ptyd/client/dist/lib/index.js",
      "node_modules/@ptyd/client/dist/lib/xterm.js",
      "node_modules/@xterm/xterm/css/xterm.css",
    ]) {
      assert.ok(inputs.includes(f), `${f} went into the bundle (inputs: ${inputs.join(", ")})`);
    }
    assert.ok(!inputs.some((f) => f.includes("..")), `nothing outside the scratch project: ${inputs.join(", ")}`);
  });

  it("a page on another origin runs a command in a styled terminal", async () => {
    assert.notEqual(new URL(run.site.origin).origin, new URL(run.stack.url).origin);
    const page = await run.browser.newPage({ viewport: { width: 1000, height: 600 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(run.site.origin + "/");
    await page.evaluate(([b, t]) => window.embed(b, t), [run.stack.url, run.stack.token]);
    await waitForLine(page, (l) => /[$#] ?$/.test(l.trimEnd()), "a shell prompt");
    await type(page, "echo packed-$((6*7))");
    await page.keyboard.press("Enter");
    await waitForLine(page, (l) => l.trim() === "packed-42", "packed-42 in the terminal's buffer");
    // Drawn, not only parsed: a row of xterm's DOM renderer shows it.
    await waitFor("packed-42 on the rendered rows", () =>
      page.evaluate(() =>
        [...document.querySelectorAll(".xterm-rows > div")].some((r) => r.textContent.trim() === "packed-42"),
      ),
    );

    // xterm's stylesheet applies: the input textarea is out of sight, the terminal laid out.
    const style = await page.evaluate(() => {
      const textarea = getComputedStyle(document.querySelector(".xterm-helper-textarea"));
      return {
        textareaOpacity: textarea.opacity,
        textareaPosition: textarea.position,
        xtermPosition: getComputedStyle(document.querySelector(".xterm")).position,
        rule: [...document.styleSheets].some((s) =>
          [...s.cssRules].some((r) => r.selectorText?.includes(".xterm-helper-textarea")),
        ),
      };
    });
    assert.deepEqual(style, {
      textareaOpacity: "0",
      textareaPosition: "absolute",
      xtermPosition: "relative",
      rule: true,
    });
    assert.deepEqual(errors, []);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.locator("#terminal").screenshot({ path: join(ARTIFACTS, "package-embed.png") });
    await page.close();
  });
});
