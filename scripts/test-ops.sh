#!/usr/bin/env bash
# npm run test:ops — operations tests: alert rules (promtool check/test rules and mutants), the Grafana dashboard,
# the metric catalog, runbook links, and a real Prometheus scraping the orders example under load.
# Needs Debian's `prometheus` package (promtool + prometheus): apt-get install -y prometheus
# Extra arguments go to vitest (e.g. `npm run test:ops -- ops/test/alerts.test.ts`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in promtool prometheus; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test:ops needs ${missing[*]} on PATH: apt-get install -y prometheus (Debian/Ubuntu)" >&2
  exit 1
fi
echo "$(promtool --version 2>&1 | head -n 1)"

npx tsc -p ops/tsconfig.json --noEmit
npx vitest run --config ops/vitest.config.ts "$@"
