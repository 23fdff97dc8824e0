#!/usr/bin/env bash
# The dead letters of one subscriber under `just up`, through its sidecar's HTTP API (the
# call `dapr invoke` makes, with the app's Dapr API token from .data/tokens/<app>, which the
# dapr CLI 1.12 cannot send):
#   scripts/deadletters.sh <app> [list [<after id>]]   list them, 100 at a time (the answer's
#                                                     `next` is the <after id> of the next page)
#   scripts/deadletters.sh <app> replay <id>|--all    run them through the app's handler again
#   scripts/deadletters.sh <app> discard <id>|--all   forget them
# In Kubernetes the same methods are reached through the taskmesh-ops sidecar (the chart's
# NOTES.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 notification-service|recurring-service|analytics-service [list [<after id>] | replay <event id>|--all | discard <event id>|--all]" >&2
  exit 2
}

app="${1:-}"
action="${2:-list}"
which="${3:-}"
# The sidecars' HTTP ports of `just up` (integration/src/bin/taskmesh-up.rs).
case "$app" in
  notification-service) port=3502 ;;
  recurring-service) port=3503 ;;
  analytics-service) port=3504 ;;
  *) usage ;;
esac
# Event ids are UUIDs (or the publisher's own ids): nothing that needs JSON escaping.
if [ -n "$which" ] && [ "$which" != --all ] && ! [[ "$which" =~ ^[A-Za-z0-9._:-]+$ ]]; then
  echo "deadletters: odd event id $which" >&2
  exit 2
fi
case "$action" in
  list) if [ -n "$which" ]; then body="{\"after\":\"$which\"}"; else body='{}'; fi ;;
  replay | discard)
    case "$which" in
      --all) body='{"all":true}' ;;
      "") usage ;;
      *) body="{\"id\":\"$which\"}" ;;
    esac
    ;;
  *) usage ;;
esac

token_file=".data/tokens/$app"
[ -f "$token_file" ] || { echo "deadletters: no $token_file: is \`just up\` running?" >&2; exit 1; }
answer="$(curl -sS --fail-with-body -H "dapr-api-token: $(cat "$token_file")" \
  -H 'content-type: application/json' \
  "http://127.0.0.1:$port/v1.0/invoke/$app/method/deadletters/$action" -d "$body")" || {
  echo "deadletters: $app answered: $answer" >&2
  exit 1
}
if command -v python3 >/dev/null; then
  python3 -m json.tool <<<"$answer"
else
  echo "$answer"
fi
