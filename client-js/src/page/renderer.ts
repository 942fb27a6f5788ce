// How the page draws a terminal: WebGL where a GPU draws the browser's WebGL, else the DOM.
import type { Terminal } from "@xterm/xterm";
import { WebglAddon } from "@xterm/addon-webgl";

/** How the terminal is drawn. */
export type Renderer = "webgl" | "dom";

/** WebGL drawn by the CPU: slower than the DOM renderer (about 13x in headless Chromium). */
const SOFTWARE_GL = /SwiftShader|llvmpipe|softpipe|software|Basic Render/i;

let probed: "none" | "software" | "hardware" | null = null;

/**
 * Whether the browser has WebGL 2 at all, and whether a GPU (not the CPU) draws it. Probed
 * once per page: browsers allow only a few WebGL contexts, and every tab's terminal may
 * need one.
 */
export function webglSupport(): "none" | "software" | "hardware" {
  if (probed !== null) return probed;
  const gl = document.createElement("canvas").getContext("webgl2");
  if (!gl) return (probed = "none");
  const info = gl.getExtension("WEBGL_debug_renderer_info");
  const name = String(info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
  gl.getExtension("WEBGL_lose_context")?.loseContext();
  probed = SOFTWARE_GL.test(name) ? "software" : "hardware";
  return probed;
}

/**
 * The WebGL renderer when a GPU draws the browser's WebGL 2, else xterm's DOM renderer,
 * chosen now; a WebGL context lost later (a GPU reset) falls back to the DOM one.
 * `?renderer=dom` or `?renderer=webgl` in the page's address asks for one (to compare
 * them; WebGL still needs WebGL 2).
 */
export function chooseRenderer(term: Terminal): Renderer {
  const asked = new URL(location.href).searchParams.get("renderer");
  const support = webglSupport();
  if (asked === "dom" || support === "none") return "dom";
  if (support === "software" && asked !== "webgl") return "dom";
  try {
    const webgl = new WebglAddon();
    webgl.onContextLoss(() => {
      webgl.dispose();
      window.ptydRenderer = "dom";
    });
    term.loadAddon(webgl);
    return "webgl";
  } catch (e) {
    console.warn(`ptyd: WebGL renderer unavailable, drawing with the DOM: ${(e as Error).message}`);
    return "dom";
  }
}

