// Builds the library (ESM + type declarations) and the web page the bridge embeds.
// `--lib` builds the library alone (what `npm pack` ships), leaving dist/page as it is.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

const libOnly = process.argv.includes("--lib");

rmSync(libOnly ? "dist/lib" : "dist", { recursive: true, force: true });

// The library: one module per entry, xterm left to the embedding page.
await build({
  entryPoints: ["src/index.ts", "src/xterm.ts"],
  outdir: "dist/lib",
  format: "esm",
  target: "es2022",
  bundle: true,
  splitting: true,
  external: ["@xterm/xterm"],
  sourcemap: true,
  logLevel: "warning",
});
execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });

if (libOnly) {
  console.log("built dist/lib");
} else {
  // The page: everything bundled, nothing fetched from elsewhere at run time.
  mkdirSync("dist/page", { recursive: true });
  await build({
    entryPoints: { app: "src/page/main.ts" },
    outdir: "dist/page",
    format: "esm",
    target: "es2022",
    bundle: true,
    minify: true,
    sourcemap: true,
    logLevel: "warning",
  });
  copyFileSync("page/index.html", "dist/page/index.html");
  console.log("built dist/lib and dist/page");
}
