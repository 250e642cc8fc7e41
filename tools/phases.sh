#!/usr/bin/env bash
# make test's phases, each timed; the table of times is printed at the end, also when a phase fails (the failing
# phase is marked).
#
#   phases.sh [--beside "PHASE..."] PHASE...
#
# The PHASEs run one after another. The --beside phases run one after another too, at the same time as those, with
# their output kept in .cache/phases/ and printed when they end: the quick checks (lint, unit and integration tests)
# need none of the lab, so they take no wall time of their own while molecule creates and converges it. The first failure on either
# side stops the other side.
set -uo pipefail
beside=()
if [[ ${1:-} == --beside ]]; then
  read -ra beside <<<"$2"
  shift 2
fi
logs=.cache/phases
mkdir -p "$logs"
overall=$(date +%s)

# run ROWS PHASE...: one after another, a "PHASE SECONDS STATUS" row each in $logs/ROWS.rows
run() {
  local rows="$logs/$1.rows" phase started rc
  shift
  for phase in "$@"; do
    started=$(date +%s)
    make --no-print-directory "$phase"
    rc=$?
    echo "$phase $(($(date +%s) - started)) $rc" >>"$rows"
    ((rc == 0)) || return "$rc"
  done
}

report() {
  echo
  echo "make test: time per phase${beside[0]:+ (${beside[*]} beside the others)}"
  local phase seconds rc
  while read -r phase seconds rc; do
    if ((rc == 0)); then
      printf '  %-12s %8s\n' "$phase" "$seconds s"
    else
      printf '  %-12s %8s\n' "$phase" "$seconds s (failed)"
    fi
  done < <(cat "$logs/beside.rows" "$logs/main.rows" 2>/dev/null)
  printf '  %-12s %8s\n' total "$(($(date +%s) - overall)) s"
}

rm -f "$logs"/*.rows "$logs"/beside.log
side=
if ((${#beside[@]})); then
  # a process group of its own, so a failure of the main phases can stop it whole
  set -m
  run beside "${beside[@]}" </dev/null >"$logs/beside.log" 2>&1 &
  side=$!
  set +m
fi

# the main phases, in a process group of their own too: a failure beside them stops them
set -m
run main "$@" </dev/null &
main=$!
set +m

failed=0
if [[ -n $side ]]; then
  # whichever side ends first: a failure stops the other; a success waits for it
  wait -n -p first "$side" "$main"
  rc=$?
  if ((rc != 0)); then
    failed=1
    other=$([[ $first == "$side" ]] && echo "$main" || echo "$side")
    kill -TERM -- "-$other" 2>/dev/null
  fi
  wait "$side" || failed=1
  echo
  echo "=== ${beside[*]} (beside the other phases) ==="
  cat "$logs/beside.log"
fi
wait "$main" || failed=1
report
exit "$failed"
