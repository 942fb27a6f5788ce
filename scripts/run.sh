#!/usr/bin/env bash
# Builds ptyd in release mode and runs the daemon in the foreground on its default
# socket (or $PTYD_SOCKET). Stop it with Ctrl-C: it ends every session cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
echo "ptyd: starting; try 'target/release/ptyctl exec -- echo hello' in another terminal" >&2
exec target/release/ptyd "$@"
