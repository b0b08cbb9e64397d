#!/usr/bin/env bash
# The kgserver journey on the embedded defaults (SQLite store and MLflow store under
# $KGSERVER_HOME, default ./.kgserver): import CoDEx-S as RDF, train CompGCN briefly,
# register and promote it, serve it over gRPC, ask it questions and why, stop it.
# Run by `make demo`, which puts .venv/bin first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

WD=http://www.wikidata.org
PORT=${KGSERVER_DEMO_PORT:-50051}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "kgserver import examples/codex-s/*.gz --graph codex"
kgserver import examples/codex-s/*.gz --graph codex
kgserver graphs

step "kgserver train --graph codex --model compgcn (a short run: ${DEMO_MINUTES:=3} minutes at most)"
summary=$(kgserver train --graph codex --model compgcn --epochs 40 --eval-every 5 \
    --max-minutes "$DEMO_MINUTES" --json)
echo "$summary"
version=$(python -c 'import json, sys; print(json.loads(sys.argv[1])["registered_version"].split("/")[1])' "$summary")

step "kgserver models promote codex-compgcn $version --alias champion"
kgserver models promote codex-compgcn "$version" --alias champion
kgserver models show codex-compgcn@champion

step "kgserver serve --model codex-compgcn@champion --port $PORT"
kgserver serve --model codex-compgcn@champion --port "$PORT" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
kgserver query health --server "127.0.0.1:$PORT" --wait 300

step "Which countries is Q206832 a citizen of? (test triple: France, Q142)"
kgserver query tails --server "127.0.0.1:$PORT" --head "$WD/entity/Q206832" \
    --relation "$WD/prop/direct/P27" -k 10 --filter-known
step "Who are citizens of France (Q142)?"
kgserver query heads --server "127.0.0.1:$PORT" --tail "$WD/entity/Q142" \
    --relation "$WD/prop/direct/P27" -k 5
step "How plausible is (Q206832, citizenship, France) vs (Q206832, citizenship, USA)?"
kgserver query score --server "127.0.0.1:$PORT" \
    "$WD/entity/Q206832" "$WD/prop/direct/P27" "$WD/entity/Q142" \
    "$WD/entity/Q206832" "$WD/prop/direct/P27" "$WD/entity/Q30"

step "Why France? The training triples and paths behind (Q206832, citizenship, France)"
kgserver query explain --server "127.0.0.1:$PORT" \
    "$WD/entity/Q206832" "$WD/prop/direct/P27" "$WD/entity/Q142" -k 10

kill -TERM "$server"
wait "$server"
trap - EXIT
step "Done. Browse the runs and the registered model: kgserver ui  (then open http://127.0.0.1:5000)"
