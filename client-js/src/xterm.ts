// The xterm.js side: renders a connection's output, acknowledges it once drawn (flow
// control), sends keys and sizes back. Kept apart from the transport, which has no UI.

import type { Terminal } from "@xterm/xterm";
import type { TerminalConnection } from "./connection.js";

/** Something that fits the terminal to its container (e.g. @xterm/addon-fit). */
export interface Fitter {
  fit(): void;
}

/**
 * Wires `term` to `conn`: output is written and acknowledged in xterm's write callback,
 * input and resizes go to the PTY, and the size is sent again after each reconnect.
 * Returns a function that undoes it.
 */
export function attachTerminal(term: Terminal, conn: TerminalConnection): () => void {
  const encoder = new TextEncoder();
  const undo: Array<() => void> = [];
  undo.push(conn.on("data", (bytes, end) => term.write(bytes, () => conn.rendered(end))));
  // A snapshot replaces whatever the terminal showed: what it stands for is the screen now.
  undo.push(
    conn.on("snapshot", (bytes) => {
      term.reset();
      term.write(bytes);
    }),
  );
  undo.push(
    conn.on("status", (s) => {
      if (s === "active") conn.resize(term.cols, term.rows);
    }),
  );
  const onData = term.onData((d) => conn.write(encoder.encode(d)));
  // Binary input (some mouse reports) is one byte per character.
  const onBinary = term.onBinary((d) => conn.write(Uint8Array.from(d, (c) => c.charCodeAt(0))));
  const onResize = term.onResize(({ cols, rows }) => conn.resize(cols, rows));
  undo.push(
    () => onData.dispose(),
    () => onBinary.dispose(),
    () => onResize.dispose(),
  );
  return () => undo.forEach((u) => u());
}

/**
 * Keeps `term` fitted to `container` as it changes size (window resizes, layout).
 * Returns a function that stops it.
 */
export function fitToContainer(container: HTMLElement, fitter: Fitter): () => void {
  let frame = 0;
  const observer = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => fitter.fit());
  });
  observer.observe(container);
  fitter.fit();
  return () => observer.disconnect();
}
