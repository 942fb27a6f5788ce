// The web terminal in a real headless Chromium against real ptyd and ptyd-bridge.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  bufferLines,
  launchBrowser,
  openTerminal,
  startStack,
  type,
  waitFor,
  waitForLine,
} from "./harness.mjs";

const ARTIFACTS = resolve(import.meta.dirname, "../../test-results");

/** ptyd, ptyd-bridge (with `bridgeArgs`) and Chromium for the tests of one `describe`. */
function useStack(bridgeArgs) {
  const run = {};
  before(async () => {
    run.stack = await startStack(bridgeArgs);
    run.browser = await launchBrowser();
  });
  after(async () => {
    await run.browser?.close();
    await run.stack?.stop();
  });
  return run;
}

/** The network goes away: new connections fail, and the open socket is cut. (The page
 * shows it only after a second; the connection knows at once.) */
async function cutTheNetwork(context, page) {
  await context.setOffline(true);
  await page.evaluate(() => window.ptydConn["ws"]?.close());
  await page.waitForFunction(() => window.ptydConn.status === "reconnecting");
}

/** A visitor without the token: the page says why and opens no terminal. */
async function expectNoTerminal(run) {
  const page = await run.browser.newPage();
  await page.goto(run.stack.url + "/");
  await page.waitForSelector('#status[data-status="dead"]');
  assert.match(await page.locator("#ended-text").textContent(), /Unauthorized/);
  await page.close();
}

async function enter(page, command) {
  await type(page, command);
  await page.keyboard.press("Enter");
}

describe("web terminal", () => {
  const run = useStack(["--grace", "8s"]);

  it("runs echo hello, and a screenshot is saved", async () => {
    const page = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    await openTerminal(page, run.stack.url);
    assert.match(new URL(page.url()).pathname, /^\/t\/[0-9a-f-]{36}$/, "/ became /t/<id>");
    await enter(page, "echo hel''lo");
    await waitForLine(page, (l) => l.trim() === "hello", "hello");
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.locator("#terminal").screenshot({ path: resolve(ARTIFACTS, "terminal.png") });
    assert.equal(await page.locator("#status").textContent(), "Active");
    await page.close();
  });

  it("says how and why the session ended", async () => {
    const page = await run.browser.newPage();
    await openTerminal(page, run.stack.url);
    await enter(page, "exit 7");
    await page.waitForSelector('#status[data-status="dead"]', { timeout: 10_000 });
    assert.equal(await page.locator("#ended-text").textContent(), "Session ended: exited with code 7.");
    // Deleted through the API: the box says so.
    await openTerminal(page, run.stack.url);
    const id = new URL(page.url()).pathname.split("/").pop();
    const closed = await page.evaluate(
      async (id) => (await fetch(`/api/terminals/${id}`, { method: "DELETE" })).status,
      id,
    );
    assert.ok(closed < 300, `DELETE answered ${closed}`);
    await page.waitForSelector('#status[data-status="dead"]', { timeout: 10_000 });
    assert.equal(await page.locator("#ended-text").textContent(), "Session ended, because it was deleted.");
    await page.close();
  });

  it("follows the browser window's size into the shell", async () => {
    const page = await run.browser.newPage({ viewport: { width: 800, height: 500 } });
    await openTerminal(page, run.stack.url);
    const sizeAfter = async (marker) => {
      await enter(page, `echo ${marker}=$(stty size | tr ' ' x)`);
      const line = await waitForLine(page, (l) => l.startsWith(`${marker}=`), marker);
      return line.slice(marker.length + 1).trim();
    };
    const small = await sizeAfter("small");
    const smallTerm = await page.evaluate(() => `${window.ptydTerm.rows}x${window.ptydTerm.cols}`);
    assert.equal(small, smallTerm, "stty size matches the terminal");
    await page.setViewportSize({ width: 1300, height: 900 });
    await waitFor("the terminal to grow", () =>
      page.evaluate((s) => `${window.ptydTerm.rows}x${window.ptydTerm.cols}` !== s, smallTerm),
    );
    await enter(page, "clear");
    const large = await sizeAfter("large");
    const largeTerm = await page.evaluate(() => `${window.ptydTerm.rows}x${window.ptydTerm.cols}`);
    assert.notEqual(large, small);
    assert.equal(large, largeTerm, "stty size follows the window");
    await page.close();
  });

  it("renders seq 1 200000 to the end and still answers a keystroke within a second", async () => {
    const page = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    await openTerminal(page, run.stack.url);
    await enter(page, "seq 1 200000");
    await waitForLine(page, (l) => l.trim() === "200000", "the last line of seq", 120_000);
    await waitForLine(page, (l) => /[$#] ?$/.test(l.trimEnd()) && !l.includes("seq"), "the prompt after seq");
    const started = Date.now();
    await type(page, "x");
    await waitFor(
      "the keystroke's echo",
      async () => (await bufferLines(page)).some((l) => /[$#] x$/.test(l.trimEnd())),
      5_000,
      10,
    );
    const took = Date.now() - started;
    console.log(`keystroke echo after seq 1 200000: ${took} ms`);
    assert.ok(took < 1000, `the keystroke took ${took} ms to echo: the tab is frozen`);
    await page.close();
  });

  it("copies the selection with Ctrl+Shift+C and takes a paste", async () => {
    const context = await run.browser.newContext();
    await context.grantPermissions(["clipboard-read", "clipboard-write"]);
    const page = await context.newPage();
    await openTerminal(page, run.stack.url);
    await enter(page, "echo copy''-me");
    await waitForLine(page, (l) => l.trim() === "copy-me", "copy-me");
    await page.evaluate(() => {
      const b = window.ptydTerm.buffer.active;
      for (let i = 0; i < b.length; i++) {
        if (b.getLine(i).translateToString(true).trim() === "copy-me") window.ptydTerm.selectLines(i, i);
      }
    });
    await page.keyboard.press("Control+Shift+C");
    await waitFor("the clipboard", async () =>
      (await page.evaluate(() => navigator.clipboard.readText())).includes("copy-me"),
    );
    // Headless Chromium has no system clipboard for Ctrl+V: deliver the paste event the
    // browser would fire on xterm's textarea.
    await page.locator("#terminal").click();
    await page.evaluate(() => {
      const data = new DataTransfer();
      data.setData("text/plain", "echo pas''ted");
      const target = document.querySelector("#terminal textarea");
      target.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true }));
    });
    await page.keyboard.press("Enter");
    await waitForLine(page, (l) => l.trim() === "pasted", "the pasted command's output");
    await context.close();
  });

  it("keeps Ctrl+V for the terminal and leaves Ctrl+Shift+V to the browser's paste", async () => {
    const page = await run.browser.newPage();
    await openTerminal(page, run.stack.url);
    // What the page sends to the terminal, recorded.
    await page.evaluate(() => {
      window.sentKeys = [];
      const conn = window.ptydConn;
      const write = conn.write.bind(conn);
      conn.write = (data) => {
        window.sentKeys.push(typeof data === "string" ? data : new TextDecoder().decode(data));
        write(data);
      };
    });
    await page.locator("#terminal").click();
    await page.keyboard.press("Control+V");
    await waitFor("^V to be sent", async () =>
      (await page.evaluate(() => window.sentKeys.join(""))).includes("\x16"),
    );
    await page.keyboard.press("Control+Shift+V");
    await page.keyboard.press("Control+Shift+C");
    const sent = await page.evaluate(() => window.sentKeys.join(""));
    assert.equal(sent.split("\x16").length - 1, 1, `only Ctrl+V sent ^V: ${JSON.stringify(sent)}`);
    assert.ok(!sent.includes("\x03"), "Ctrl+Shift+C is copy, not an interrupt");
    await page.close();
  });

  it("draws with WebGL when a GPU draws it, else with the DOM, chosen at run time", async () => {
    const page = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    await openTerminal(page, run.stack.url);
    const webgl = await page.evaluate(() => window.ptydWebgl);
    const renderer = await page.evaluate(() => window.ptydRenderer);
    // Headless Chromium draws WebGL with SwiftShader (the CPU): the DOM is faster there.
    assert.equal(renderer, webgl === "hardware" ? "webgl" : "dom", `WebGL: ${webgl}`);
    await enter(page, "echo drawn-by-$((6*7))");
    await waitForLine(page, (l) => l.trim() === "drawn-by-42", "output drawn");
    // Asked for WebGL, where the browser has it at all: drawn on a canvas.
    if (webgl !== "none") {
      const gl = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
      await openTerminal(gl, run.stack.url, "/?renderer=webgl");
      assert.equal(await gl.evaluate(() => window.ptydRenderer), "webgl");
      assert.ok(await gl.locator(".xterm-screen canvas").count(), "WebGL draws on a canvas");
      await enter(gl, "echo on-the-can''vas");
      await waitForLine(gl, (l) => l.trim() === "on-the-canvas", "output drawn with WebGL");
      await gl.close();
    }
    // Asked for the DOM renderer: rows are DOM elements with the text.
    const dom = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    await openTerminal(dom, run.stack.url, "/?renderer=dom");
    assert.equal(await dom.evaluate(() => window.ptydRenderer), "dom");
    await enter(dom, "echo in-the-d''om");
    await waitFor("the DOM rows to show it", async () =>
      (await dom.locator(".xterm-rows").textContent()).includes("in-the-dom"),
    );
    await page.close();
    await dom.close();
  });

  it("follows the program's window title", async () => {
    const page = await run.browser.newPage();
    await openTerminal(page, run.stack.url);
    assert.match(await page.title(), /^ptyd · [0-9a-f]{8}$/);
    await enter(page, "printf '\\033]0;hello\\007'");
    await waitFor("the title", async () => (await page.title()) === "hello");
    await page.close();
  });

  it("keeps what is typed while reconnecting and runs it exactly once", async () => {
    const context = await run.browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    await openTerminal(page, run.stack.url);
    await cutTheNetwork(context, page);
    await enter(page, "echo typed-off''line");
    await waitFor("the banner to say input waits", async () =>
      /typed bytes? will be sent/.test(await page.locator("#reconnecting").textContent()),
    );
    assert.equal((await bufferLines(page)).some((l) => l.trim() === "typed-offline"), false);
    await context.setOffline(false);
    await page.waitForSelector('#status[data-status="active"]', { timeout: 15_000 });
    await waitForLine(page, (l) => l.trim() === "typed-offline", "the command typed while away");
    // A later command's output: anything sent twice would have come before it.
    await enter(page, "echo after''wards");
    await waitForLine(page, (l) => l.trim() === "afterwards", "a later command");
    const runs = (await bufferLines(page)).filter((l) => l.trim() === "typed-offline").length;
    assert.equal(runs, 1, "typed while away, run once");
    assert.equal(await page.evaluate(() => window.ptydConn.pendingInput), 0);
    await context.close();
  });

  it("stays open while ptyd is upgraded, and shows every line of a counter once", async () => {
    const page = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    await openTerminal(page, run.stack.url);
    // Every status the page goes through from here on.
    await page.evaluate(() => {
      window.statuses = [];
      window.ptydConn.on("status", (s) => window.statuses.push(s));
    });
    await enter(page, "for i in $(seq 1 200); do echo c-$i; sleep 0.01; done; echo coun''ted");
    await waitForLine(page, (l) => l.trim() === "c-20", "the counter to be running");
    const said = await run.stack.ptyctl("upgrade");
    assert.match(said, /upgraded ptyd \(pid \d+\) from .* \d+ sessions carried/);
    await waitForLine(page, (l) => l.trim() === "counted", "the counter to finish", 20_000);
    const lines = (await bufferLines(page)).map((l) => l.trim());
    for (let i = 1; i <= 200; i++) {
      assert.equal(lines.filter((l) => l === `c-${i}`).length, 1, `c-${i} shown once`);
    }
    // The socket never closed: no reconnect, no notice.
    assert.deepEqual(await page.evaluate(() => window.statuses), []);
    await enter(page, "echo after-up''grade");
    await waitForLine(page, (l) => l.trim() === "after-upgrade", "a command typed after the upgrade");
    await page.close();
  });

  it("shows reconnecting, then output printed meanwhile exactly once", async () => {
    const context = await run.browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    const id = await openTerminal(page, run.stack.url);
    await cutTheNetwork(context, page);
    await page.waitForSelector("#reconnecting", { state: "visible" });
    // The notice is in the header: it covers none of the terminal.
    const notice = await page.locator("#reconnecting").boundingBox();
    const screen = await page.locator("#terminal").boundingBox();
    assert.ok(notice.y + notice.height <= screen.y, `notice ${JSON.stringify(notice)} over ${JSON.stringify(screen)}`);
    // Meanwhile the program prints.
    await run.stack.ptyctl("send", id, "echo while-aw''ay", "--enter");
    await waitFor("ptyd to hold the output", async () =>
      (await run.stack.ptyctl("read", id, "--since", "0")).includes("while-away"),
    );
    // Still away: what follows can only come from the bridge's replay.
    assert.equal(await page.locator("#status").getAttribute("data-status"), "reconnecting");
    assert.equal((await bufferLines(page)).some((l) => l.trim() === "while-away"), false);
    await context.setOffline(false);
    await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
    await waitForLine(page, (l) => l.trim() === "while-away", "the output printed while away");
    await new Promise((r) => setTimeout(r, 300));
    const seen = (await bufferLines(page)).filter((l) => l.trim() === "while-away").length;
    assert.equal(seen, 1, "printed once: nothing lost, nothing doubled");
    assert.equal(await page.locator("#reconnecting").isVisible(), false);
    await context.close();
  });
});

describe("a detached terminal", () => {
  const run = useStack(["--grace", "1s"]);

  it("outlives the grace and reopens from the Terminals list with its screen", async () => {
    const page = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    const id = await openTerminal(page, run.stack.url);
    await enter(page, "K=still-here; echo detached-mar''ker");
    await waitForLine(page, (l) => l.trim() === "detached-marker", "the marker");
    await page.click("#detach");
    await page.waitForSelector('#status[data-status="detached"]');
    assert.match(await page.locator("#ended-text").textContent(), /Detached: the terminal runs on/);
    // A terminal merely left goes when the grace ends; by then the detached one, left
    // earlier, has outlived the grace.
    const other = await run.browser.newPage();
    const otherId = await openTerminal(other, run.stack.url);
    await other.close();
    const statuses = () =>
      page.evaluate(async () => {
        const { terminals } = await (await fetch("/api/terminals")).json();
        return Object.fromEntries(terminals.map((t) => [t.id, t.status]));
      });
    await waitFor("the left terminal to die at the grace", async () => (await statuses())[otherId] === "Dead");
    assert.equal((await statuses())[id], "Detached");
    // Reopened from the list: its screen, its shell.
    await page.click("#terminals");
    await page.click(`#list-items a[href="/t/${id}"]`);
    await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
    await waitForLine(page, (l) => l.trim() === "detached-marker", "the screen it had");
    await enter(page, 'echo "$K"');
    await waitForLine(page, (l) => l.trim() === "still-here", "the same shell");
    await page.screenshot({ path: join(ARTIFACTS, "detached-reopened.png") });
    await page.close();
  });
});

describe("tabs", () => {
  const run = useStack(["--grace", "1s"]);

  it("hold a terminal each, and switching between them disconnects none", async () => {
    const page = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    await openTerminal(page, run.stack.url);
    const tabIds = () =>
      page.evaluate(() => [...document.querySelectorAll("#tabs .tab")].map((b) => b.dataset.id));
    for (const n of [2, 3]) {
      await page.click("#new");
      await waitFor(`tab ${n}`, async () => (await tabIds()).length === n);
      await page.waitForSelector('#status[data-status="active"]');
      await waitForLine(page, (l) => /[$#] ?$/.test(l.trimEnd()), `a prompt in tab ${n}`);
    }
    const ids = await tabIds();
    assert.equal(new Set(ids).size, 3, "three terminals");
    assert.equal(new URL(page.url()).pathname, `/t/${ids[2]}`, "the URL follows the tab shown");
    for (const [i, id] of ids.entries()) {
      await page.click(`#tabs .tab[data-id="${id}"]`);
      await page.waitForSelector('#status[data-status="active"]');
      await enter(page, `echo in-tab-${i}`);
      await waitForLine(page, (l) => l.trim() === `in-tab-${i}`, `tab ${i}'s own output`);
    }
    // Every terminal still has its socket, however long it was not shown: none is even
    // Disconnected (whose grace here is 1 s).
    const statuses = async () =>
      page.evaluate(async () => {
        const { terminals } = await (await fetch("/api/terminals")).json();
        return Object.fromEntries(terminals.map((t) => [t.id, t.status]));
      });
    for (const id of ids) assert.equal((await statuses())[id], "Active", id);
    // Back on the first tab: its own screen, and it still takes input.
    await page.click(`#tabs .tab[data-id="${ids[0]}"]`);
    const lines = (await bufferLines(page)).map((l) => l.trim());
    assert.ok(lines.includes("in-tab-0") && !lines.includes("in-tab-1"), "tab 0 shows its own terminal");
    await enter(page, "echo again-in-tab-0");
    await waitForLine(page, (l) => l.trim() === "again-in-tab-0", "input after switching back");
    await page.screenshot({ path: join(ARTIFACTS, "tabs.png") });
    await page.close();
  });
});

describe("several viewers of one terminal", () => {
  const run = useStack(["--grace", "8s"]);

  it("share its output; a read-only one cannot type and is told; one leaving leaves the other", async () => {
    const writer = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    const id = await openTerminal(writer, run.stack.url);
    const watcher = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    await openTerminal(watcher, run.stack.url, `/t/${id}?role=read-only`);
    // The writer was not taken over: both are Active, both see what it types.
    assert.equal(await writer.locator("#status").getAttribute("data-status"), "active");
    assert.equal(await watcher.locator("#role").isVisible(), true, "the watcher says it is read-only");
    await enter(writer, "echo seen-by-b''oth");
    await waitForLine(writer, (l) => l.trim() === "seen-by-both", "the writer's own output");
    await waitForLine(watcher, (l) => l.trim() === "seen-by-both", "the same output for the watcher");
    // The watcher types: refused, told, never run.
    await enter(watcher, "echo from-the-wat''cher");
    await waitFor("the watcher to be told", async () =>
      /what you type is not sent/.test(await watcher.locator("#role").textContent()),
    );
    await enter(writer, "echo after-the-wat''cher");
    await waitForLine(writer, (l) => l.trim() === "after-the-watcher", "a later command");
    const lines = (await bufferLines(writer)).map((l) => l.trim());
    assert.equal(lines.includes("from-the-watcher"), false, "a read-only viewer's input ran");
    // The writer leaves: the watcher stays Active and still sees the terminal.
    await writer.close();
    await run.stack.ptyctl("send", id, "echo still-wat''ching", "--enter");
    await waitForLine(watcher, (l) => l.trim() === "still-watching", "output after the writer left");
    assert.equal(await watcher.locator("#status").getAttribute("data-status"), "active");
    await watcher.close();
  });

  it("through a share link, open read-only without the token, until revoked", async () => {
    const owner = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
    const id = await openTerminal(owner, run.stack.url);
    const link = await owner.evaluate(async (id) => {
      const r = await fetch(`/api/terminals/${id}/share`, { method: "POST" });
      return (await r.json()).url;
    }, id);
    // Someone else's browser: no cookie, no token, only the link.
    const guest = await run.browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await guest.newPage();
    await page.goto(link);
    await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
    assert.equal(await page.locator("#role").isVisible(), true);
    assert.equal(await page.locator("#new").isVisible(), false, "a share link opens only its terminal");
    await enter(owner, "echo for-the-gu''est");
    await waitForLine(page, (l) => l.trim() === "for-the-guest", "the owner's output");
    await enter(page, "echo from-the-gu''est");
    await waitFor("the guest to be told", async () =>
      /what you type is not sent/.test(await page.locator("#role").textContent()),
    );
    // Revoked: the guest's socket closes for good.
    await owner.evaluate(async (id) => fetch(`/api/terminals/${id}/share`, { method: "DELETE" }), id);
    await page.waitForSelector('#status[data-status="closed"]', { timeout: 10_000 });
    const lines = (await bufferLines(owner)).map((l) => l.trim());
    assert.equal(lines.includes("from-the-guest"), false, "the guest's input ran");
    await guest.close();
    await owner.close();
  });

  it("a page taken over says so instead of 'Session ended'", async () => {
    const context = await run.browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    const id = await openTerminal(page, run.stack.url);
    // Another client (logged in with the same cookie) asks to take the terminal over.
    const other = await context.newPage();
    await other.goto(run.stack.url + "/assets/app.css");
    const opened = await other.evaluate(async (id) => {
      const { ticket } = await (await fetch(`/api/terminals/${id}/ticket`, { method: "POST" })).json();
      const ws = new WebSocket(`ws://${location.host}/ws/terminal/${id}?takeover=1&ticket=${ticket}`);
      return new Promise((ok) => {
        ws.addEventListener("message", () => ok(true), { once: true });
        ws.addEventListener("close", () => ok(false), { once: true });
      });
    }, id);
    assert.equal(opened, true);
    await page.waitForSelector('#status[data-status="closed"]', { timeout: 10_000 });
    assert.match(await page.locator("#ended-text").textContent(), /^Taken over: another viewer/);
    await context.close();
  });

  it("of different sizes give the program the smaller size, and say so in the larger", async () => {
    const large = await run.browser.newPage({ viewport: { width: 1000, height: 700 } });
    const id = await openTerminal(large, run.stack.url);
    const small = await run.browser.newPage({ viewport: { width: 600, height: 400 } });
    await openTerminal(small, run.stack.url, `/t/${id}`);
    const size = (p) => p.evaluate(() => [window.ptydTerm.rows, window.ptydTerm.cols]);
    const [[bigRows, bigCols], [smallRows, smallCols]] = [await size(large), await size(small)];
    assert.ok(smallRows < bigRows && smallCols < bigCols, "two window sizes");
    await enter(large, "stty size");
    await waitForLine(large, (l) => l.trim() === `${smallRows} ${smallCols}`, "the smaller size in stty");
    await waitFor("the larger window to say the terminal is smaller", async () =>
      (await large.locator("#size-note").isVisible()) &&
      (await large.locator("#size-note").textContent()).startsWith(`${smallCols}×${smallRows}`),
    );
    assert.equal(await small.locator("#size-note").isVisible(), false);
    await large.screenshot({ path: join(ARTIFACTS, "viewers-smaller.png") });
    await large.close();
    await small.close();
  });
});

describe("the bridge's idle close", () => {
  const run = useStack(["--grace", "8s", "--idle-timeout", "1s"]);

  it("reconnects without ever showing it", async () => {
    const page = await run.browser.newPage();
    await openTerminal(page, run.stack.url);
    // Record whether the banner or the badge ever say reconnecting.
    await page.evaluate(() => {
      window.reconnectShown = false;
      const seen = () => {
        if (!document.querySelector("#reconnecting").hidden) window.reconnectShown = true;
        if (document.querySelector("#status").dataset.status === "reconnecting") {
          window.reconnectShown = true;
        }
      };
      new MutationObserver(seen).observe(document.body, { attributes: true, subtree: true });
    });
    const sockets = await page.evaluate(() => window.ptydConn["opening"]);
    // Idle for more than two idle timeouts: the bridge closes the socket each time.
    await waitFor("two idle closes", async () =>
      (await page.evaluate(() => window.ptydConn["opening"])) >= sockets + 2,
    );
    await page.waitForSelector('#status[data-status="active"]');
    assert.equal(await page.evaluate(() => window.reconnectShown), false);
    await enter(page, "echo still-th''ere");
    await waitForLine(page, (l) => l.trim() === "still-there", "the terminal after idle closes");
    await page.close();
  });
});

describe("after the grace", () => {
  const run = useStack(["--grace", "1s"]);

  it("says the session ended and offers a new terminal", async () => {
    const context = await run.browser.newContext();
    const page = await context.newPage();
    await openTerminal(page, run.stack.url);
    await cutTheNetwork(context, page);
    await new Promise((r) => setTimeout(r, 2_000)); // past the bridge's 1 s grace
    await context.setOffline(false);
    await page.waitForSelector('#status[data-status="dead"]', { timeout: 15_000 });
    assert.equal(
      await page.locator("#ended-text").textContent(),
      "Session ended, because the connection was lost for longer than the grace period.",
    );
    assert.equal(await page.locator("#ended-new").isVisible(), true);
    // The button opens a fresh terminal.
    await page.locator("#ended-new").click();
    await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
    await context.close();
  });

  it("lists open terminals one click away", async () => {
    const page = await run.browser.newPage();
    const id = await openTerminal(page, run.stack.url);
    await page.locator("#terminals").click();
    const link = page.locator(`#list-items a[href="/t/${id}"]`);
    await link.waitFor({ timeout: 5_000 });
    assert.match(await link.textContent(), /Active/);
    await page.close();
  });
});

describe("with an auth token", () => {
  const run = useStack(["--token", "s3cret-token"]);

  it("logs in from ?token= and then works like any terminal", async () => {
    const page = await run.browser.newPage();
    await openTerminal(page, run.stack.url, "/?token=s3cret-token");
    assert.doesNotMatch(page.url(), /token/, "the token leaves the address bar");
    await enter(page, "echo to''ken-ok");
    await waitForLine(page, (l) => l.trim() === "token-ok", "token-ok");
    await page.close();
  });

  it("without the token says why instead of opening a terminal", () => expectNoTerminal(run));
});

describe("with the generated token (the default)", () => {
  const run = useStack([]);

  it("the printed login URL opens a terminal and leaves the address bar", async () => {
    assert.ok(run.stack.loginUrl, "the bridge printed a login URL");
    const page = await run.browser.newPage();
    await page.goto(run.stack.loginUrl);
    await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
    assert.doesNotMatch(page.url(), /token/, "the token leaves the address bar");
    await enter(page, "echo lo''gged-in");
    await waitForLine(page, (l) => l.trim() === "logged-in", "logged-in");
    // A reload keeps working: the cookie, and a fresh ticket for the new socket.
    await page.reload();
    await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
    await page.close();
  });

  it("a visitor without the token gets no terminal", () => expectNoTerminal(run));
});

/** A static server on its own port for the embedding page and the built library. */
async function embeddingSite() {
  const { createServer } = await import("node:http");
  const { readFile } = await import("node:fs/promises");
  const lib = resolve(import.meta.dirname, "../../dist/lib");
  const page = `<!doctype html><meta charset="utf-8"><title>embed</title>
<script type="module">
import { connect } from "/lib/index.js";
window.openRemote = async (bridge, token) => {
  const r = await fetch(bridge + "/api/terminals", {
    method: "POST",
    headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: "{}",
  });
  if (r.status !== 201) throw new Error("create answered " + r.status);
  const { ws_url } = await r.json();
  const conn = connect(ws_url, { token });
  let out = "";
  conn.on("data", (b) => (out += new TextDecoder().decode(b)));
  await new Promise((ok) => conn.on("status", (s) => s === "active" && ok()));
  conn.write("echo cross-ori''gin\\r");
  const deadline = Date.now() + 10000;
  while (!/^cross-origin\\r?$/m.test(out)) {
    if (Date.now() > deadline) throw new Error("no echo: " + out);
    await new Promise((ok) => setTimeout(ok, 20));
  }
  conn.close();
  return out;
};
</script>`;
  const server = createServer(async (req, res) => {
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(page);
    } else if (req.url?.startsWith("/lib/") && !req.url.includes("..")) {
      try {
        const body = await readFile(join(lib, req.url.slice(5)));
        res.writeHead(200, { "content-type": "text/javascript" }).end(body);
      } catch {
        res.writeHead(404).end();
      }
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

describe("embedded in a page of another origin (CORS)", () => {
  const run = {};
  before(async () => {
    run.allowed = await embeddingSite();
    run.other = await embeddingSite();
    run.stack = await startStack(["--allowed-origin", run.allowed.origin]);
    run.browser = await launchBrowser();
  });
  after(async () => {
    await run.browser?.close();
    await run.stack?.stop();
    run.allowed?.close();
    run.other?.close();
  });

  it("an allowed origin creates and drives a terminal with the library", async () => {
    const page = await run.browser.newPage();
    await page.goto(run.allowed.origin + "/");
    const out = await page.evaluate(([b, t]) => window.openRemote(b, t), [run.stack.url, run.stack.token]);
    assert.match(out, /^cross-origin\r?$/m);
    await page.close();
  });

  it("another origin is refused by the browser's CORS check", async () => {
    const page = await run.browser.newPage();
    await page.goto(run.other.origin + "/");
    const err = await page.evaluate(
      ([b, t]) => window.openRemote(b, t).then(() => "worked", (e) => String(e)),
      [run.stack.url, run.stack.token],
    );
    assert.match(err, /Failed to fetch|403/, err);
    await page.close();
  });
});

/** The rows the terminal shows now (not its scrollback), trailing blanks trimmed. */
async function visibleLines(page) {
  return page.evaluate(() => {
    const b = window.ptydTerm.buffer.active;
    const lines = [];
    for (let i = 0; i < window.ptydTerm.rows; i++) {
      lines.push(b.getLine(b.viewportY + i).translateToString(true).trimEnd());
    }
    return lines;
  });
}

describe("a reload shows the screen that is there", () => {
  const run = useStack(["--grace", "8s"]);

  it("after a drop longer than the replay window, top comes back whole", async () => {
    const context = await run.browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    const id = await openTerminal(page, run.stack.url);
    await cutTheNetwork(context, page);
    // While away, far more than the 4 KiB window is printed, and then top draws.
    await run.stack.ptyctl("send", id, "seq 1 3000; top -d 100", "--enter");
    const expected = async () => (await run.stack.ptyctl("screen", id)).split("\n").slice(0, -1);
    await waitFor("top to draw while the page is away", async () =>
      (await expected()).some((l) => l.startsWith("top - ")),
    );
    await context.setOffline(false);
    await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
    await waitFor("the page to show top's screen as ptyd holds it", async () => {
      const [shown, want] = [await visibleLines(page), await expected()];
      return shown.length === want.length && shown.every((l, i) => l === want[i]);
    });
    await type(page, "q");
    await context.close();
  });

  for (const [name, command, drawn] of [
    ["top", "top -d 100", (lines) => lines.some((l) => l.startsWith("top - "))],
    ["vim", "vim -u NONE -N -c 'set nu' /etc/services", (lines) => lines.some((l) => /^\s+1 /.test(l))],
  ]) {
    it(`during ${name}`, async () => {
      const page = await run.browser.newPage({ viewport: { width: 900, height: 600 } });
      const id = await openTerminal(page, run.stack.url);
      await enter(page, command);
      await waitFor(`${name} to draw`, async () => drawn(await visibleLines(page)));
      await page.reload();
      await page.waitForSelector('#status[data-status="active"]', { timeout: 10_000 });
      // What the page paints from the snapshot is what ptyd's screen holds.
      const expected = async () => (await run.stack.ptyctl("screen", id)).split("\n").slice(0, -1);
      const same = await waitFor(
        `the reloaded page to show ${name}'s screen`,
        async () => {
          const [shown, want] = [await visibleLines(page), await expected()];
          return shown.length === want.length && shown.every((l, i) => l === want[i]) ? shown : null;
        },
        10_000,
      ).catch(async (e) => {
        throw new Error(`${e.message}\npage: ${JSON.stringify(await visibleLines(page))}\nptyd: ${JSON.stringify(await expected())}`);
      });
      assert.ok(drawn(same), `${name} is on the reloaded page`);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.locator("#terminal").screenshot({ path: resolve(ARTIFACTS, `reload-${name}.png`) });
      await type(page, name === "vim" ? "\x1b:qa!\n" : "q");
      await page.close();
    });
  }
});
