#!/usr/bin/env bash
# The kgserver journey on the embedded defaults (SQLite store and MLflow store under
# $KGSERVER_HOME, default ./.kgserver): import CoDEx-S as RDF, without five people,
# train CompGCN briefly, register and promote it, serve it over gRPC following the
# store, ask it questions and why, then import the five people while it serves and
# ask about them at once (no restart), stop it.
# Run by `make demo`, which puts .venv/bin first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

WD=http://www.wikidata.org
PORT=${KGSERVER_DEMO_PORT:-50051}
SERVER=127.0.0.1:$PORT
HOLDOUT=${KGSERVER_HOME:-.kgserver}/demo-holdout
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "python examples/holdout.py $HOLDOUT (five people left out of training, to be added later)"
python examples/holdout.py "$HOLDOUT"
if kgserver graphs --json | python -c 'import json, sys; sys.exit("codex" not in [g["name"] for g in json.load(sys.stdin)])'
then
    echo "A previous run left graph 'codex'; the five people must be new to the model, so it starts afresh:"
    kgserver graphs delete codex
fi

step "kgserver import $HOLDOUT/first/*.nt examples/codex-s/labels.nt.gz --graph codex"
kgserver import "$HOLDOUT"/first/*.nt examples/codex-s/labels.nt.gz --graph codex
kgserver graphs

step "kgserver train --graph codex --model compgcn (a short run: ${DEMO_MINUTES:=3} minutes at most)"
# The default unseen_entity_rate (0.1) trains the encoder to embed entities it never saw, from their neighbours.
summary=$(kgserver train --graph codex --model compgcn --epochs 40 --eval-every 5 \
    --max-minutes "$DEMO_MINUTES" --json)
echo "$summary"
version=$(python -c 'import json, sys; print(json.loads(sys.argv[1])["registered_version"].split("/")[1])' "$summary")

step "kgserver models promote codex-compgcn $version --alias champion"
kgserver models promote codex-compgcn "$version" --alias champion
kgserver models show codex-compgcn@champion

# The store the imports wrote to: with --db the server follows it (new triples, entities, labels).
store=$(python -c 'from kgserver.config import database_url; print(database_url())')
step "kgserver serve --model codex-compgcn@champion --port $PORT --db $store --refresh-seconds 2"
kgserver serve --model codex-compgcn@champion --port "$PORT" --db "$store" --refresh-seconds 2 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
kgserver query health --server "$SERVER" --wait 300

step "Which countries is Q206832 a citizen of? (test triple: France, Q142)"
kgserver query tails --server "$SERVER" --head "$WD/entity/Q206832" \
    --relation "$WD/prop/direct/P27" -k 10
step "Who are citizens of France (Q142)?"
kgserver query heads --server "$SERVER" --tail "$WD/entity/Q142" \
    --relation "$WD/prop/direct/P27" -k 5
step "How plausible is (Q206832, citizenship, France) vs (Q206832, citizenship, USA)?"
kgserver query score --server "$SERVER" \
    "$WD/entity/Q206832" "$WD/prop/direct/P27" "$WD/entity/Q142" \
    "$WD/entity/Q206832" "$WD/prop/direct/P27" "$WD/entity/Q30"

step "Why France? The training triples and paths behind (Q206832, citizenship, France)"
kgserver query explain --server "$SERVER" \
    "$WD/entity/Q206832" "$WD/prop/direct/P27" "$WD/entity/Q142" -k 10

# Every answer names the store revision it came from.
served_revision() {
    kgserver query tails --server "$SERVER" --head "$WD/entity/Q206832" --relation "$WD/prop/direct/P27" -k 1 --json \
        | python -c 'import json, sys; print(json.load(sys.stdin)["store_revision"])'
}
before=$(served_revision)
step "Add facts, ask at once: kgserver import $HOLDOUT/later.nt --graph codex (while it serves)"
kgserver import "$HOLDOUT/later.nt" --graph codex
deadline=$((SECONDS + 60))
while true; do  # the server checks the store every --refresh-seconds
    current=$(served_revision)
    ((current > before)) && break
    if ((SECONDS >= deadline)); then
        echo "demo: after 60 s the server still answers from store revision $current, as before the import" >&2
        exit 1
    fi
    sleep 1
done
echo "the server now answers from store revision $current (it was $before): no restart"

step "Douglas Adams (Q42) is new to the model: which country is he a citizen of? (held back: United Kingdom, Q145)"
kgserver query tails --server "$SERVER" --head "$WD/entity/Q42" --relation "$WD/prop/direct/P27" -k 5
step "Who else might be a US citizen (Q30)? --filter-known leaves out every citizen the store knows"
echo "The five new people have no known citizenship (Bob Dylan and Ernest Hemingway were American)."
echo "New people among the answers are marked in a 'new' column, named by the labels imported with them."
kgserver query heads --server "$SERVER" --tail "$WD/entity/Q30" \
    --relation "$WD/prop/direct/P27" -k 15 --filter-known

kill -TERM "$server"
wait "$server"
trap - EXIT
step "Done. Browse the runs and the registered model: kgserver ui  (then open http://127.0.0.1:5000)"
