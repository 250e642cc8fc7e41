#!/bin/bash
# clusterhub: the Slurm job of one JupyterHub server. A batchspawner (Jinja) template: every value
# below comes from the hub's validated request (whole numbers, known partition names), never from
# free text. Sites replace this file with jupyterhub_batch_script_src.
#SBATCH --job-name={{job_name}}
{% if tunnel_port %}#SBATCH --output=.clusterhub/logs/%x-%j.log
{% else %}#SBATCH --output={{homedir}}/.jupyterhub_slurmspawner_%j.log
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
{% endif %}#SBATCH --no-requeue
#SBATCH --nodes=1
#SBATCH --ntasks=1
{% if partition %}#SBATCH --partition={{partition}}
{% endif %}{% if runtime %}#SBATCH --time={{runtime}}
{% endif %}{% if memory %}#SBATCH --mem={{memory}}
{% endif %}{% if nprocs %}#SBATCH --cpus-per-task={{nprocs}}
{% endif %}{% if gres %}#SBATCH --gres={{gres}}
{% endif %}{% if options %}#SBATCH {{options}}
{% endif %}
set -euo pipefail
export PATH={{singleuser_venv}}/bin:/usr/local/bin:/usr/bin:/bin
# Server extensions come only from the site venv: user site-packages are off for the server
# (kernels get them back through their kernelspec).
export PYTHONNOUSERSITE=1
# Logs of servers older than a week go.
find "$HOME" -maxdepth 1 -name '.jupyterhub_slurmspawner_*.log' -mtime +7 -delete 2>/dev/null || true
# Kernels talk over IPC sockets in a private, node-local directory: no TCP port another user could reach.
# mktemp makes it at once, mode 0700, under a name nobody can guess: a directory or link another user of the
# node prepared under a predictable name is never used.
JUPYTER_RUNTIME_DIR=$(mktemp -d "/tmp/jupyter-runtime-$(id -u)-${SLURM_JOB_ID}-XXXXXXXXXX")
export JUPYTER_RUNTIME_DIR
trap 'rm -rf "$JUPYTER_RUNTIME_DIR"' EXIT
echo "clusterhub: job ${SLURM_JOB_ID} on $(hostname) for $(id -un), ${SLURM_CPUS_PER_TASK:-1} CPUs, at $(date +%FT%T.%3N)"
# A home without room (quota or disk) breaks Jupyter in ways that explain nothing, and may take this output
# with it: 1 MiB must fit, or the job ends at once with the status the hub reads from accounting (ENOSPC's 28).
if ! space_probe=$(mktemp "$HOME/.clusterhub-space-XXXXXXXX" 2>/dev/null) \
  || ! head -c 1048576 /dev/zero 2>/dev/null > "$space_probe"; then
  rm -f "${space_probe:-}"
  echo "clusterhub: your home directory $HOME is full (no space or quota left);" \
    "delete or move files there, then start again" >&2
  exit 28
fi
rm -f "$space_probe"
{{prologue}}
{% if tunnel_port %}
# Remote HPC mode: a job of the hub's HPC account, for hub user $JUPYTERHUB_USER. SSH passes no
# environment, so the hub's variables for the server are written here; clusterhub-startjob opens the
# tunnel that makes the server the hub's 127.0.0.1:{{tunnel_port}}.
{{remote_env}}
clusterhub-startjob {% if gres %}--nv {% endif %}--tunnel {{tunnel_port}} {{image_path}} {{cmd | replace(singleuser_venv ~ "/bin/", "")}}
{% elif image_path %}
# The server runs in the chosen Apptainer image: the image's own environment provides the commands
# (so the node venv's paths are dropped from cmd) and --nv hands the job's GPUs in. Where the
# job_wrappers role is installed, clusterhub-startjob adds the maintenance switch, the user's
# persistent overlay and the site's binds; otherwise apptainer.conf binds the home and /tmp.
launcher=(apptainer exec)
if command -v clusterhub-startjob >/dev/null; then launcher=(clusterhub-startjob); fi
"${launcher[@]}" {% if gres %}--nv {% endif %}{{image_path}} {{cmd | replace(singleuser_venv ~ "/bin/", "")}}
{% else %}
{{cmd}}
{% endif %}
{{epilogue}}
