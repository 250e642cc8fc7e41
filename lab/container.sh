#!/bin/bash
# Start one lab container: `container.sh NAME DOCKER-RUN-OPTIONS... IMAGE COMMAND`.
# Prints what it did: running (already up, nothing done), started (it existed, stopped) or created.
set -euo pipefail
name=$1
shift
state=$(docker container inspect -f '{{.State.Running}}' "$name" 2>/dev/null || echo absent)
case $state in
  true) echo running ;;
  false) docker start "$name" >/dev/null && echo started ;;
  *) docker run -d --name "$name" "$@" >/dev/null && echo created ;;
esac
