#!/usr/bin/env bash
# Print how to reach the lab: the hub URL and a login once the hub runs, and the Slurm status.
set -euo pipefail
prefix=${CLUSTERHUB_LAB_PREFIX:-chlab}
port=${CLUSTERHUB_LAB_HUB_PORT:-8443}
echo
echo "clusterhub lab is up (containers ${prefix}-*)"
echo "--- Slurm (sinfo on login) ---"
docker exec "${prefix}-login" sinfo
if docker exec "${prefix}-hub" systemctl is-active --quiet jupyterhub 2>/dev/null; then
  echo "--- JupyterHub ---"
  echo "URL:   https://127.0.0.1:${port}/   (self-signed lab certificate)"
  echo "login: alice / alice-in-the-lab   (also bob / bob-in-the-lab; admin: labadmin / admin-in-the-lab)"
fi
echo "shell: docker exec -it ${prefix}-login bash    (users: alice, bob, labadmin)"
