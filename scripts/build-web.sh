#!/usr/bin/env bash
# Installs client-js's locked dependencies when they are missing or stale, then builds the
# library and the web page that ptyd-bridge embeds (client-js/dist).
set -euo pipefail
cd "$(dirname "$0")/../client-js"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build
