#!/usr/bin/env bash
# The README's five-minute tour as one script, run against a stack that is already up:
#
#   export ALLOW_PRIVATE_TARGETS=true RECEIVER_SECRET=tour-secret
#   docker compose up --build -d
#   docker compose --profile tour up -d receiver
#   bash scripts/tour.sh
#
# Settings, all optional:
#   HOOKLINE_URL      the API, as this machine reaches it (default http://localhost:8080)
#   API_KEY           sent as `Authorization: Bearer` when set
#   RECEIVER_URL      the demo receiver, as the *worker* reaches it (default
#                     http://receiver:9000, its compose service name)
#   RECEIVER_SECRET   the signed subscription's secret (default tour-secret); give the
#                     receiver the same one and it logs whether signatures verify
#   TOUR_WAIT         seconds to wait for the first attempt of a delivery (default 30)
#
# Each step prints the curl command it runs, the HTTP status and the response body. The
# script stops with a non-zero status at the first unexpected HTTP status. It sticks to
# bash 3.2, curl and openssl (LibreSSL too), so it runs as is on a stock Mac.
set -eu

hookline_url=${HOOKLINE_URL:-http://localhost:8080}
hookline_url=${hookline_url%/}
receiver_url=${RECEIVER_URL:-http://receiver:9000}
receiver_url=${receiver_url%/}
secret=${RECEIVER_SECRET:-tour-secret}
api_key=${API_KEY:-}
wait_seconds=${TOUR_WAIT:-30}

# The secret goes into a JSON string below, unescaped.
case $secret in
    *'"'* | *\\*)
        echo "tour: RECEIVER_SECRET must not contain \" or \\" >&2
        exit 2
        ;;
esac

for tool in curl openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "tour: $tool is required" >&2
        exit 2
    fi
done

response_file=$(mktemp "${TMPDIR:-/tmp}/hookline-tour.XXXXXX")
trap 'rm -f "$response_file"' EXIT

# Set by `request`: the last response's status and body.
status=
response=
# Printed when a step fails, to say what usually causes it.
hint=

fail() {
    echo "tour: $1" >&2
    if [ -n "$hint" ]; then
        echo "tour: hint: $hint" >&2
    fi
    exit 1
}

step() {
    echo
    echo "== $1"
}

# Prints one argument as it would be typed at a shell prompt.
quote() {
    # The key itself is never printed; the command shows where it goes.
    if [ -n "$api_key" ] && [ "$1" = "Authorization: Bearer $api_key" ]; then
        # shellcheck disable=SC2016 # the literal text $API_KEY is meant
        printf '%s' '"Authorization: Bearer $API_KEY"'
        return
    fi
    case $1 in
        '' | *[!A-Za-z0-9_./:=@%+,-]*)
            printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
            ;;
        *)
            printf '%s' "$1"
            ;;
    esac
}

show_command() {
    local argument
    printf '$'
    for argument in "$@"; do
        printf ' '
        quote "$argument"
    done
    echo
}

# Whether a request needs the API key: everything but ingestion and health checks does.
needs_key() {
    local argument
    if [ -z "$api_key" ]; then
        return 1
    fi
    for argument in "$@"; do
        case $argument in
            "$hookline_url"/ingest/* | "$hookline_url"/health) return 1 ;;
            *) ;;
        esac
    done
}

# Prints a curl command, with the API key where it needs one.
show_request() {
    if needs_key "$@"; then
        show_command curl "$@" -H "Authorization: Bearer $api_key"
    else
        show_command curl "$@"
    fi
}

# request EXPECTED_STATUS CURL_ARGUMENTS...: runs curl, with the API key where it needs one,
# leaves the answer in $status and $response, and stops the tour unless the status is the
# expected one.
request() {
    local expected=$1
    shift
    if needs_key "$@"; then
        set -- "$@" -H "Authorization: Bearer $api_key"
    fi
    if ! status=$(curl -sS -o "$response_file" -w '%{http_code}' "$@"); then
        fail "curl could not complete the request; is hookline running at $hookline_url?"
    fi
    response=$(cat "$response_file")
    if [ "$status" != "$expected" ]; then
        echo "HTTP $status"
        echo "$response"
        fail "expected HTTP $expected, got HTTP $status"
    fi
}

# run EXPECTED_STATUS CURL_ARGUMENTS...: prints the command, runs it, prints the answer.
run() {
    local expected=$1
    shift
    show_request "$@"
    request "$expected" "$@"
    echo "HTTP $status"
    if [ -n "$response" ]; then
        echo "$response"
    fi
}

# json_string FIELD: the value of the first `"FIELD":"..."` in $response. Enough for the
# ids and statuses the tour reads, without jq.
json_string() {
    printf '%s' "$response" | grep -o "\"$1\" *: *\"[^\"]*\"" | head -n 1 |
        sed 's/.*"\([^"]*\)"$/\1/'
}

# require_string FIELD: like json_string, but the tour stops if the field is absent.
require_string() {
    local value
    value=$(json_string "$1")
    if [ -z "$value" ]; then
        fail "no \"$1\" in the response"
    fi
    printf '%s' "$value"
}

# expect_string FIELD VALUE: stops the tour unless the response has "FIELD":"VALUE".
expect_string() {
    local actual
    actual=$(json_string "$1")
    if [ "$actual" != "$2" ]; then
        fail "expected \"$1\":\"$2\", got \"${actual:-nothing}\""
    fi
}

# hub_signature BODY: the X-Hub-Signature-256 value for BODY. openssl prints `(stdin)= <hex>`,
# `SHA2-256(stdin)= <hex>` or similar, depending on its version and flavour (LibreSSL on a
# Mac); the hex is always the last field.
hub_signature() {
    local digest
    digest=$(printf '%s' "$1" | openssl dgst -sha256 -hmac "$secret" | awk '{ print $NF }')
    printf 'sha256=%s' "$digest"
}

json='Content-Type: application/json'

step "0. Is the API up?"
hint="start the stack with \`docker compose up --build\`, or set HOOKLINE_URL"
run 200 "$hookline_url/health"

step "1. A subscription without a secret, taking every event type"
hint="401: set API_KEY; 422 non_public_target: run hookline with ALLOW_PRIVATE_TARGETS=true"
run 201 -X POST "$hookline_url/subscriptions" -H "$json" \
    -d "{\"target_url\":\"$receiver_url/tour/plain\",\"description\":\"tour: every event\"}"
plain_id=$(require_string id)
hint=

step "2. A subscription with a secret, taking two event types"
run 201 -X POST "$hookline_url/subscriptions" -H "$json" \
    -d "{\"target_url\":\"$receiver_url/tour/signed\",\"secret\":\"$secret\",\
\"event_types\":[\"order.created\",\"order.paid\"],\"description\":\"tour: signed orders\"}"
signed_id=$(require_string id)

step "3. An unsigned webhook to the first subscription"
run 202 -X POST "$hookline_url/ingest/$plain_id" -H "$json" -d '{"hello":"world"}'
expect_string status queued

step "4. A signed webhook, event type in the X-Event-Type header"
body='{"order":42,"total":"9.99"}'
echo "\$ printf '%s' '$body' | openssl dgst -sha256 -hmac '$secret'"
printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret"
signature=$(hub_signature "$body")
echo "X-Hub-Signature-256: $signature"
run 202 -X POST "$hookline_url/ingest/$signed_id" -H "$json" \
    -H "X-Hub-Signature-256: $signature" -H "X-Event-Type: order.created" -d "$body"
expect_string status queued
signed_delivery=$(require_string delivery_id)

step "5. Event type in the query string, for senders that cannot set headers"
body='{"order":42,"paid":true}'
run 202 -X POST "$hookline_url/ingest/$signed_id?event_type=order.paid" -H "$json" \
    -H "X-Hub-Signature-256: $(hub_signature "$body")" -d "$body"
expect_string status queued

step "6. An event type the subscription does not take is stored but skipped"
body='{"order":42,"refunded":true}'
run 202 -X POST "$hookline_url/ingest/$signed_id" -H "$json" \
    -H "X-Hub-Signature-256: $(hub_signature "$body")" -H "X-Event-Type: order.refunded" \
    -d "$body"
expect_string status skipped

step "7. A wrong signature is refused"
run 401 -X POST "$hookline_url/ingest/$signed_id" -H "$json" \
    -H "X-Hub-Signature-256: $(hub_signature '{"order":1}')" -d '{"order":2}'

step "8. The signed delivery's status and attempts, once the worker has tried it"
show_request "$hookline_url/deliveries/$signed_delivery"
hint="is the worker running? \`docker compose logs worker\`"
deadline=$((SECONDS + wait_seconds))
while :; do
    request 200 "$hookline_url/deliveries/$signed_delivery"
    delivery_status=$(require_string status)
    if [ "$delivery_status" != queued ]; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        fail "delivery $signed_delivery still queued after $wait_seconds s"
    fi
    sleep 1
done
hint=
echo "HTTP $status"
echo "$response"
if [ "$delivery_status" != delivered ]; then
    echo "(not delivered yet: the attempt's error above says why; the worker will retry)"
fi

step "9. The signed subscription's recent attempts, newest first"
run 200 "$hookline_url/subscriptions/$signed_id/attempts?limit=5"

step "10. The signed subscription's deliveries, newest first"
run 200 "$hookline_url/subscriptions/$signed_id/deliveries?limit=10"

step "11. Pause the first subscription: webhooks are then stored as skipped"
run 200 -X PATCH "$hookline_url/subscriptions/$plain_id" -H "$json" \
    -d '{"enabled":false,"description":"tour: paused"}'
run 202 -X POST "$hookline_url/ingest/$plain_id" -H "$json" -d '{"hello":"again"}'
expect_string status skipped

step "12. Delete the first subscription, with its deliveries and attempt log"
run 204 -X DELETE "$hookline_url/subscriptions/$plain_id"
run 404 "$hookline_url/subscriptions/$plain_id"

echo
echo "Tour done. The signed subscription $signed_id stays for exploring at" \
    "$hookline_url/docs."
