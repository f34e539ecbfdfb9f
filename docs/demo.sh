#!/usr/bin/env bash
# The programme working end to end, on this machine: the service in demo mode, an admin, one resident,
# and a transit operator, a recycling operator and a second-hand platform (the project's simulators)
# that register themselves, show link codes and push records. The resident links one account at each;
# after a few pushes their impact shows credits of all three kinds. Everything started here is stopped
# on exit, also on failure or Ctrl-C.
#
#   bash docs/demo.sh            (after the README's install step; uses .venv and a scratch data dir)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${PORT:-8765}
URL=http://127.0.0.1:$PORT
WORK=$(mktemp -d)
export CARBON_DATA_DIR=$WORK/data
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
field() { "$BIN/python" -c "import json, sys; print(json.load(sys.stdin)$1)"; }
post() { curl -sf "$URL$1" -H 'content-type: application/json' "${@:2}"; }
wait_for() {  # wait_for FILE PATTERN: until a line of FILE matches
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

"$BIN/carbon-rewards" serve --demo --port "$PORT" >"$WORK/service.log" 2>&1 &
PIDS+=($!)
until curl -sf "$URL/health/ready" >/dev/null; do sleep 0.5; done
echo "service ready at $URL"

CARBON_OPERATOR_PASSWORD='demo passphrase long enough' \
    "$BIN/carbon-rewards" operator create --username demo-admin --role admin >/dev/null
ADMIN=$(post /v1/auth/operator/login -d '{"username":"demo-admin","password":"demo passphrase long enough"}' |
    field '["access_token"]')

PHONE=+8613800138000
post /v1/auth/otp -d "{\"phone\":\"$PHONE\"}" >/dev/null
wait_for "$WORK/service.log" "sign-in code is"
CODE=$(grep -o 'sign-in code is [0-9]*' "$WORK/service.log" | tail -1 | grep -o '[0-9]*$')
TOKEN=$(post /v1/auth/otp/verify -d "{\"phone\":\"$PHONE\",\"code\":\"$CODE\"}" | field '["access_token"]')
echo "resident $PHONE signed in"

for kind in transit recycling second-hand; do
    CARBON_SIM_OPERATOR_TOKEN=$ADMIN "$BIN/carbon-rewards" simulate "$kind" --service-url "$URL" \
        --accounts 1 --push-every 2 --batch 5 >"$WORK/$kind.log" 2>&1 &
    PIDS+=($!)
done
for kind in transit recycling second-hand; do
    wait_for "$WORK/$kind.log" "link code"
    partner=$(grep -o 'registered as partner [0-9a-f-]*' "$WORK/$kind.log" | grep -o '[0-9a-f-]*$')
    read -r ref code < <(sed -n 's/^account \([^:]*\): link code \([0-9]*\).*/\1 \2/p' "$WORK/$kind.log")
    post /v1/me/links -H "Authorization: Bearer $TOKEN" \
        -d "{\"partner_id\":\"$partner\",\"partner_account_ref\":\"$ref\",\"link_code\":\"$code\"}" >/dev/null
    echo "linked $ref at the $kind partner"
done
for kind in transit recycling second-hand; do
    # Pushes before the link were refused (account_not_linked); wait for two pushes after it.
    wait_for "$WORK/$kind.log" "pushed 5: [1-5] credited"
done
sleep 2
for kind in transit recycling second-hand; do
    echo "--- $kind simulator"
    grep '^pushed' "$WORK/$kind.log" | tail -2
done
echo "--- GET /v1/me/impact"
curl -sf "$URL/v1/me/impact" -H "Authorization: Bearer $TOKEN" | "$BIN/python" -m json.tool
echo "--- the latest action, with its provenance"
ACTION=$(curl -sf "$URL/v1/me/actions?limit=1" -H "Authorization: Bearer $TOKEN" | field '["items"][0]["id"]')
curl -sf "$URL/v1/me/actions/$ACTION" -H "Authorization: Bearer $TOKEN" |
    "$BIN/python" -c 'import json, sys; p = json.load(sys.stdin)["provenance"]; print(p["methodology_id"], "version", p["methodology_version"], "|", p["working"], "|", p["points_working"])'
