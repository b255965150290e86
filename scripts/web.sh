#!/usr/bin/env bash
# The web app (web/): install its Node packages and build it, each only when its inputs changed.
#   bash scripts/web.sh install   # npm ci from the committed lockfile (stamp: the lockfile's hash)
#   bash scripts/web.sh build     # install, then tsc + vite build into web/dist (stamp: the sources' hash)
#   bash scripts/web.sh test      # install, then tsc --noEmit and the vitest unit tests
set -euo pipefail
cd "$(dirname "$0")/../web"
log() { printf '[web] %s\n' "$*"; }

need_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "web: Node.js 20.19+ and npm are needed to build the web app (node and npm not found)" >&2
    exit 1
  fi
  local v
  v=$(node -p 'process.versions.node')
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' ||
    { echo "web: Node.js $v is too old for Vite 7; 20.19 or newer is needed" >&2; exit 1; }
}

install() {
  need_node
  local want stamp=node_modules/.tap-installed
  want=$( (cat package-lock.json; node -v) | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "npm ci (package-lock.json changed or node_modules missing)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
}

sources_hash() {
  { find src index.html package-lock.json tsconfig.json vite.config.ts -type f -print0 | sort -z | xargs -0 sha256sum; node -v; } |
    sha256sum | cut -d' ' -f1
}

build() {
  install
  local want stamp=dist/.tap-built
  want=$(sources_hash)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f dist/index.html ]; then
    log "web/dist is up to date"
    return
  fi
  log "building web/dist (tsc + vite)"
  npm run --silent build
  echo "$want" > "$stamp"
}

case "${1:-build}" in
  install) install ;;
  build) build ;;
  test)
    install
    log "tsc --noEmit"
    npx --no-install tsc --noEmit
    log "vitest"
    npx --no-install vitest run
    ;;
  *) echo "usage: scripts/web.sh install|build|test" >&2; exit 2 ;;
esac
