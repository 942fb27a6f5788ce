#!/usr/bin/env bash
# Builds the web page and the binaries (release), then runs ptyd-bridge on
# http://127.0.0.1:3000; it prints a login URL with its generated token (kept in
# $XDG_RUNTIME_DIR/ptyd-bridge/token, mode 0600). If no ptyd answers on its socket the
# bridge starts one, which keeps running (with your terminals) after the bridge stops.
# Extra arguments go to ptyd-bridge (see `target/release/ptyd-bridge --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-web.sh
cargo build --release --workspace --bins
echo "ptyd-bridge: open the login URL it prints below for a terminal (Ctrl-C stops the bridge)" >&2
exec target/release/ptyd-bridge "$@"
