#!/usr/bin/env bash
# Quickstart with curl: classify Iris flowers with TabPFN through the TabPFN API.
#
#     API_URL=http://127.0.0.1:8000 TABPFN_TOKEN=demo-token bash examples/quickstart.sh
#
# Needs curl, and jq or python3 to read JSON. Steps: register with your TabPFN
# token (an API key comes back), submit a fit job, wait for it with the long-poll
# GET /jobs/{id}?wait=S, submit a predict job, wait, fetch the result, print
# predictions and accuracy.
set -euo pipefail

API="${API_URL:-http://127.0.0.1:8000}"
API="${API%/}/api/v1"
TOKEN="${TABPFN_TOKEN:-demo-token}"
DATA="$(dirname "$0")/data/iris.csv"

# json FILTER: read JSON on stdin, print one field (a dotted path like .error.code).
# items FIELD: print each element of a list field, one a line.
if command -v jq >/dev/null 2>&1; then
  json() { jq -r "$1 // empty"; }
  items() { jq -r "$1[]"; }
else
  json() {
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for part in sys.argv[1].strip(".").split("."):
    value = value.get(part) if isinstance(value, dict) else None
print("" if value is None else value)' "$1"
  }
  items() { python3 -c 'import json, sys; print(*json.load(sys.stdin)[sys.argv[1][1:]], sep="\n")' "$1"; }
fi

# api METHOD PATH [BODY]: one request; stops with the service's detail and code on an error.
api() {
  local method=$1 path=$2 body=${3:-} out status
  local args=(-sS -X "$method" -w '\n%{http_code}')
  if [ -n "${KEY:-}" ]; then args+=(-H "authorization: Bearer $KEY"); fi
  if [ -n "$body" ]; then
    # An Idempotency-Key makes a retried submit return the first job, never a second.
    args+=(-H 'content-type: application/json' -H "idempotency-key: $(new_key)" --data-binary @-)
  fi
  out=$(printf '%s' "$body" | curl "${args[@]}" "$API$path")
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  if [ "${status:0:1}" != 2 ]; then
    echo "error: $method $path: HTTP $status: $(json .detail <<<"$out") ($(json .code <<<"$out"))" >&2
    exit 1
  fi
  printf '%s' "$out"
}

new_key() { cat /proc/sys/kernel/random/uuid 2>/dev/null || python3 -c 'import uuid; print(uuid.uuid4())'; }

# wait_job ID: long-poll until the job has finished; prints the final job.
wait_job() {
  local id=$1 job status stage seen=""
  while :; do
    job=$(api GET "/jobs/$id?wait=30")
    status=$(json .status <<<"$job")
    stage=$(json .stage <<<"$job")
    if [ "$status $stage" != "$seen" ]; then
      echo "  job $id: $status${stage:+ ($stage)}" >&2
      seen="$status $stage"
    fi
    case $status in
      succeeded) printf '%s' "$job"; return ;;
      failed | canceled)
        echo "error: job $id $status: $(json .error.message <<<"$job") ($(json .error.code <<<"$job"))" >&2
        exit 1 ;;
    esac
    sleep 0.3  # the server may answer before the job ends; do not spin
  done
}

# Rows as JSON: every fifth flower is held out for testing.
rows() { # rows train|test -> [[...], ...]
  awk -F, -v want="$1" 'NR > 1 { i++; test = (i % 5 == 0); if ((want == "test") == test) {
      printf "%s[%s,%s,%s,%s]", (n++ ? "," : "["), $1, $2, $3, $4 } } END { print "]" }' "$DATA"
}
labels() { # labels train|test -> ["setosa", ...]
  awk -F, -v want="$1" 'NR > 1 { i++; test = (i % 5 == 0); if ((want == "test") == test) {
      printf "%s\"%s\"", (n++ ? "," : "["), $5 } } END { print "]" }' "$DATA"
}
COLUMNS=$(head -1 "$DATA" | awk -F, '{ printf "[\"%s\",\"%s\",\"%s\",\"%s\"]", $1, $2, $3, $4 }')

# 1. Register: the TabPFN token is stored encrypted; keep the API key secret.
account=$(KEY="" api POST /auth/setup "{\"tabpfn_token\": \"$TOKEN\"}")
KEY=$(json .api_key <<<"$account")
echo "Registered at ${API%/api/v1} (API key id $(json .key_id <<<"$account"))"

# 2. Fit a classifier and wait for it.
job=$(api POST /jobs/fit "{\"task\": \"classification\",
  \"train\": {\"X\": $(rows train), \"y\": $(labels train), \"columns\": $COLUMNS}}")
job=$(wait_job "$(json .id <<<"$job")")
model=$(json .model_id <<<"$job")
echo "Model $model is ready"

# 3. Predict the test rows and wait.
job=$(api POST /jobs/predict "{\"model_id\": \"$model\", \"X\": $(rows test), \"columns\": $COLUMNS}")
id=$(json .id <<<"$job")
wait_job "$id" >/dev/null

# 4. The result: one label per test row, in input order.
result=$(api GET "/jobs/$id/result")
predictions=$(items .predictions <<<"$result")
truth=$(labels test | tr -d '[]"' | tr , '\n')
echo
echo "Predictions (every sixth test row): $(awk 'NR % 6 == 1' <<<"$predictions" | paste -sd ' ')"
paste <(echo "$predictions") <(echo "$truth") |
  awk -F'\t' '{ n++; ok += ($1 == $2) } END { printf "Accuracy on the %d test rows: %.3f\n", n, ok / n }'
