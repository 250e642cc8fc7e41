#!/usr/bin/env bash
# Wall time of the lab's provisioning, side by side in one run, on a separate prefix (chbench) so a
# running `make lab` is untouched:
#   create      containers from the (already built) base image
#   converge    playbooks/site.yml on fresh containers (host caches warm: apt archives, pip, npm)
#   idempotent  the same playbook again (0 changed expected)
# Cold figures (image build, first downloads) come from a `make test` run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH CLUSTERHUB_LAB_PREFIX=${CLUSTERHUB_LAB_PREFIX:-chbench} CLUSTERHUB_LAB_HUB_PORT=${CLUSTERHUB_LAB_HUB_PORT:-9445}
out=${BENCH_OUT:-artifacts/bench-lab.txt}
mkdir -p "$(dirname "$out")"
t() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
ansible-playbook playbooks/lab/destroy.yml >/dev/null
create=$(t ansible-playbook playbooks/lab/create.yml)
converge=$(t ansible-playbook playbooks/site.yml)
log=$(mktemp)
s=$(date +%s.%N); ansible-playbook playbooks/site.yml >"$log"; rerun=$(echo "$(date +%s.%N) - $s" | bc)
changed=$(grep -oE 'changed=[0-9]+' "$log" | cut -d= -f2 | paste -sd+ | bc)
ansible-playbook playbooks/lab/destroy.yml >/dev/null
{
  echo "lab provisioning, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(date -u +%F)"
  printf 'create containers        %7.1f s\n' "$create"
  printf 'converge (fresh hosts)   %7.1f s\n' "$converge"
  printf 'idempotent re-run        %7.1f s   (%s changed)\n' "$rerun" "$changed"
  printf 're-run / converge        %7.2f\n' "$(echo "$rerun / $converge" | bc -l)"
} | tee "$out"
