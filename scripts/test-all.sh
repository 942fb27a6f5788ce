#!/usr/bin/env bash
# Runs every check and test the project has: formatting, lints, Rust unit and
# cross-process tests (real ptyd/ptyctl/ptyd-bridge processes and real PTYs), the
# client library's unit tests, and the web page in a real headless Chromium.
# Safe to run on a fresh Debian machine with Rust: installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
# The system python3 too: the tests run it as another user, who cannot read a per-user one.
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v prlimit >/dev/null || need_pkgs+=(util-linux)
command -v systemd-socket-activate >/dev/null || need_pkgs+=(systemd)
# Real programs the screen tests drive: tmux as the outer terminal, vim and top as TUIs.
command -v tmux >/dev/null || need_pkgs+=(tmux)
command -v vim >/dev/null || need_pkgs+=(vim)
command -v top >/dev/null || need_pkgs+=(procps)
# The shells whose integration `run` uses.
command -v zsh >/dev/null || need_pkgs+=(zsh)
# Debian's Chromium for the browser tests (Playwright's own download does not work here).
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
  fi
fi

# First, so that ptyd-bridge embeds the real page.
log "client-js: install and build"
bash scripts/build-web.sh
(cd client-js && npm run --silent typecheck)

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "building binaries"
cargo build --workspace --bins --quiet

log "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast
fi

log "client-js unit tests"
(cd client-js && npm test --silent)

log "browser tests (headless Chromium, real ptyd and ptyd-bridge)"
(cd client-js && npm run --silent test:browser)
