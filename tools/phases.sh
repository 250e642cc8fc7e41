#!/usr/bin/env bash
# make test's phases, one after another, each timed; the table of times is printed at the end, also when a
# phase fails (the failing phase is the last row).
set -uo pipefail
declare -a rows=()
overall=$(date +%s)
report() {
  echo
  echo "make test: time per phase"
  printf '  %-12s %8s\n' "${rows[@]}"
  printf '  %-12s %8s\n' total "$(( $(date +%s) - overall )) s"
}
for phase in "$@"; do
  started=$(date +%s)
  if ! make --no-print-directory "$phase"; then
    rows+=("$phase" "$(( $(date +%s) - started )) s (failed)")
    report
    exit 1
  fi
  rows+=("$phase" "$(( $(date +%s) - started )) s")
done
report
