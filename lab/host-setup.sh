#!/usr/bin/env bash
# Prepare a Debian/Ubuntu build host for the lab: Docker engine and debootstrap from the
# distribution, the engine started when nothing runs it (CI and dev machines have no systemd).
# Idempotent: a second run installs and starts nothing.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  echo "lab: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl start docker
  else
    echo "lab: starting dockerd (log: /var/log/clusterhub-dockerd.log)"
    nohup dockerd >/var/log/clusterhub-dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "lab: dockerd did not come up, see /var/log/clusterhub-dockerd.log" >&2; exit 1; }
fi
