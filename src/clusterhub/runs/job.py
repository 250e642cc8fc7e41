"""A notebook run as a Slurm batch job: the request checked by the spawner's own rules, and the job script.

The script is self-contained: the input notebook and each task's parameters travel inside it, base64-encoded, so
the same script goes to `sudo -u USER sbatch` (direct mode) and through hpc-gate's sbatch-from-stdin (remote mode),
and nothing a user typed is ever shell text (the resources are validated numbers and names, the rest is base64).
The job writes into the user's own `~/.clusterhub/runs/<run id>/` (0700): input.ipynb, parameters-<task>.json, the
executed output.ipynb (output-<task>.ipynb for a sweep) and job-<task>.log. papermill saves the output notebook
also when a cell fails, and exits non-zero, so Slurm records the run as failed.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass

from clusterhub.hub.remote_job import image_only
from clusterhub.hub.request import NAME_RE, OptionsError, Request, validate_options
from clusterhub.protocol import RUN_ID, RUNS_DIR, RUNS_JOB_NAME
from clusterhub.runs import data as run_data
from clusterhub.runs.params import parameter_sets

# Slurm refuses batch scripts over 4 MB (SchedulerParameters=max_script_size); base64 adds a third
MAX_NOTEBOOK_BYTES = 2 * 1024 * 1024
KERNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RUN_ID_RE = re.compile(RUN_ID)


def new_run_id() -> str:
    """A run's id: a UUID, as jupyter-scheduler's routes expect (its job ids contain hyphens)."""
    return str(uuid.uuid4())


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise OptionsError(f"run id {str(run_id)[:40]!r} is not a run id")
    return run_id


def check_notebook(data: bytes | str) -> dict:
    """The uploaded notebook, parsed: nbformat 4 JSON with cells, at most MAX_NOTEBOOK_BYTES."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise OptionsError(
            f"the notebook is {len(raw) / 2**20:.1f} MiB; runs take notebooks of at most "
            f"{MAX_NOTEBOOK_BYTES // 2**20} MiB (clear large outputs, or read big data from files)"
        )
    try:
        notebook = json.loads(raw)
    except ValueError:
        raise OptionsError("the file is not a notebook (not JSON)") from None
    if not isinstance(notebook, dict) or notebook.get("nbformat") != 4 or not isinstance(notebook.get("cells"), list):
        raise OptionsError("the file is not a Jupyter notebook in format 4 (.ipynb)")
    return notebook


def output_name(task: int, sweep: bool) -> str:
    """The executed notebook of a run's task: output.ipynb, or output-<task>.ipynb for a sweep's."""
    return f"output-{task}.ipynb" if sweep else "output.ipynb"


def parameters_cell(notebook: dict) -> int | None:
    """Index of the cell tagged `parameters` (papermill injects the run's values after it), or None."""
    for index, cell in enumerate(notebook.get("cells", [])):
        if "parameters" in (cell.get("metadata", {}).get("tags") or []):
            return index
    return None


@dataclass(frozen=True)
class RunJob:
    """One run, checked and ready for sbatch."""

    run_id: str
    request: Request
    image_path: str  # the SIF on the nodes, or "" for the node's notebook environment
    notebook: bytes
    parameter_sets: tuple[dict, ...]
    kernel: str = ""
    data: tuple[run_data.DataItem, ...] = ()
    data_spec: dict | None = None  # what the node's copy program reads (run_data.job_spec), when data is declared

    @property
    def sweep(self) -> bool:
        return len(self.parameter_sets) > 1

    @property
    def run_dir(self) -> str:
        """The run's directory, relative to the user's home."""
        return f"{RUNS_DIR}/{self.run_id}"

    def output_name(self, task: int) -> str:
        return output_name(task, self.sweep)


def build(
    options: dict,
    notebook: bytes | str,
    parameters: dict,
    *,
    profiles: list[dict],
    partitions: list[dict],
    images: list[dict],
    allow_custom: bool = True,
    sweep: str | None = None,
    kernel: str = "",
    run_id: str | None = None,
    data: list | None = None,
    data_hosts: list[dict] | None = None,
    webdav: dict | None = None,
) -> RunJob:
    """A run from what a user asked for: resources through the spawner's validate_options (the same profiles,
    partitions, limits and images, so a run can ask for exactly what a server could), the notebook, the
    parameters and the external data (on the site's data_hosts, or in the WebDAV space where the nodes mount it:
    webdav {mount_dir, mount, umount}) checked; OptionsError says what is wrong."""
    kinds = {profile["slug"]: profile.get("kind", "slurm") for profile in profiles}
    slug = (options or {}).get("profile")
    slug = slug[0] if isinstance(slug, list) and len(slug) == 1 else slug
    if kinds.get(slug, "slurm") != "slurm":
        raise OptionsError(f"profile {slug} is not a Slurm profile; runs are Slurm batch jobs")
    request = validate_options(options, profiles, partitions, images, allow_custom)
    if kernel and not KERNEL_RE.match(kernel):
        raise OptionsError(f"kernel {kernel[:40]!r} is not a kernel name")
    parsed = check_notebook(notebook)
    if parameters and parameters_cell(parsed) is None:
        raise OptionsError("the notebook has no cell tagged 'parameters' to receive the parameters")
    paths = {image["name"]: image.get("path", "") for image in images}
    partition = next((p for p in partitions if p["name"] == request.partition), {})
    if partition.get("remote") and not paths.get(request.image):
        raise OptionsError(image_only(request.partition, images))
    raw = notebook.encode() if isinstance(notebook, str) else notebook
    sets = tuple(parameter_sets(parameters, sweep))
    items = run_data.check_data(data, data_hosts or [], bool(webdav), sets[0])
    return RunJob(
        run_id=check_run_id(run_id) if run_id else new_run_id(),
        request=request,
        image_path=paths.get(request.image, "") if request.image else "",
        notebook=raw,
        parameter_sets=sets,
        kernel=kernel,
        data=items,
        data_spec=run_data.job_spec(items, data_hosts or [], webdav, len(sets) > 1) if items else None,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wrapped(text: str, width: int = 76) -> str:
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


def sbatch_directives(job: RunJob) -> list[str]:
    r = job.request
    lines = [
        f"--job-name={RUNS_JOB_NAME}",
        f"--partition={r.partition}",
        f"--cpus-per-task={r.cpus}",
        f"--mem={r.memory_gb}G",
        f"--time={r.runtime}",
        f"--comment={RUNS_JOB_NAME}:{job.run_id}",
        # the script writes its own log into the run's directory, which does not exist before it starts; the
        # submitter's working directory (the service's own) is nothing the job may use
        "--output=/dev/null",
        "--chdir=/tmp",
        "--no-requeue",
    ]
    if r.gpus:
        lines.append(f"--gres=gpu:{r.gpus}")
    if job.sweep:
        lines.append(f"--array=0-{len(job.parameter_sets) - 1}")
    if has_outputs(job):
        # the batch shell alone is told ahead of the time limit: it stops the notebook and writes the outputs back
        lines.append(f"--signal=B:USR1@{run_data.WRITE_BACK_LEAD_S}")
    return lines


def has_outputs(job: RunJob) -> bool:
    return any(item.direction == "output" for item in job.data)


# papermill through its Python API, for one setting its command line lacks: the kernel talks over IPC sockets in a
# private (0700) node-local directory, as the servers' kernels do. With TCP, many kernels starting at once on a node
# race for ports ("Kernel died before replying to kernel_info", seen with 50 runs at once), and a port is reachable
# from other users' jobs. Arguments: input, output, parameters file, kernel name ('' for the notebook's own), and the
# file of the external data's local paths ({name: path}, merged into the parameters) or ''.
PAPERMILL = """import json, os, shutil, sys, tempfile
import papermill
from jupyter_client.manager import AsyncKernelManager
source, output, parameters, kernel, data = sys.argv[1:6]
runtime = tempfile.mkdtemp(prefix="clusterhub-run-")
class PrivateIPCKernelManager(AsyncKernelManager):
    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "transport": "ipc", "ip": os.path.join(runtime, "kernel")})
try:
    with open(parameters, encoding="utf-8") as f:
        values = json.load(f)
    if data:
        with open(data, encoding="utf-8") as f:
            values.update(json.load(f))
    papermill.execute_notebook(source, output, parameters=values, kernel_name=kernel or None, log_output=True,
                               progress_bar=False, kernel_manager_class=PrivateIPCKernelManager)
finally:
    shutil.rmtree(runtime, ignore_errors=True)
"""


def data_steps(job: RunJob, system_python: str) -> tuple[str, str, str]:
    """The script's lines for external data: before the notebook (the inputs copied in, or exit 3), papermill's
    data argument, and after it (the outputs written back, also when the notebook failed)."""
    if not job.data:
        return "", "''", ""
    spec = _wrapped(_b64(json.dumps(job.data_spec, sort_keys=True).encode()))
    lead = run_data.WRITE_BACK_LEAD_S
    copy = f"""{system_python} - "$1" "data-spec-$task.json" "$task" "$(id -un)" "$home" <<'CLUSTERHUB_COPY'
{run_data.COPY}CLUSTERHUB_COPY"""
    before = f"""base64 -d >"data-spec-$task.json" <<'CLUSTERHUB_DATA'
{spec}
CLUSTERHUB_DATA
copy_data() {{
{copy}
}}
if ! copy_data fetch; then
  echo "clusterhub run {job.run_id}: task $task ended with status {run_data.EXIT_DATA}, $(date -Is)"
  exit {run_data.EXIT_DATA}
fi
# Slurm's SIGTERM (a time limit, a stop) ends the notebook; the script goes on to write the outputs back in the
# KillWait seconds before SIGKILL
on_term() {{
  echo "clusterhub run {job.run_id}: task $task got SIGTERM (a time limit or a stop): writing the outputs back"
}}
trap on_term TERM
# with outputs, Slurm's USR1 comes {lead} s before the time limit, to the script alone: it stops
# the notebook, so the outputs are written back before the limit
stopped_early=0
on_time_limit() {{
  echo "clusterhub run {job.run_id}: task $task: time limit in {lead} s: stopping the notebook to write the outputs"
  stopped_early=1
  kill -TERM "$notebook" 2>/dev/null || true
}}
trap on_time_limit USR1
"""
    after = f"""copy_data store || {{ [ "$status" -ne 0 ] || status={run_data.EXIT_DATA}; }}
[ "$stopped_early" = 0 ] || status={run_data.EXIT_TIME_LIMIT}
"""
    return before, '"data-$task.json"', after


def batch_script(
    job: RunJob,
    *,
    node_python: str = "/opt/jupyter/bin/python",
    apptainer: str = "apptainer",
    system_python: str = "/usr/bin/python3",
) -> str:
    """The job script for sbatch's standard input."""
    for word in (node_python, apptainer, job.image_path, system_python):
        if word and not re.match(r"^[A-Za-z0-9_./-]+$", word):
            raise OptionsError(f"{word[:60]!r} is not a plain path")  # site settings, checked all the same
    if job.image_path and not NAME_RE.match(job.image_path.rsplit("/", 1)[-1]):
        raise OptionsError(f"image path {job.image_path[:60]!r} is not a plain path")
    nv = " --nv" if job.request.gpus else ""
    python = f"{apptainer} exec{nv} {job.image_path} python3" if job.image_path else node_python
    kernel = job.kernel or "''"
    output = '"output-$task.ipynb"' if job.sweep else "output.ipynb"
    cases = "\n".join(
        f"  {task}) params='{_b64(json.dumps(params, sort_keys=True).encode())}' ;;"
        for task, params in enumerate(job.parameter_sets)
    )
    directives = "\n".join(f"#SBATCH {line}" for line in sbatch_directives(job))
    before_data, data_file, after_data = data_steps(job, system_python)
    return f"""#!/bin/bash
{directives}
# clusterhub notebook run {job.run_id}
set -euo pipefail
umask 077
task=${{SLURM_ARRAY_TASK_ID:-0}}
home=$(getent passwd "$(id -un)" | cut -d: -f6)
run_dir="$home/{job.run_dir}"
mkdir -p "$run_dir"  # new directories 0700 (umask)
chmod 0700 "$home/{RUNS_DIR}" "$run_dir"
cd "$run_dir"
exec >>"job-$task.log" 2>&1
echo "clusterhub run {job.run_id}: task $task, job ${{SLURM_JOB_ID}} on $(hostname), $(date -Is)"
case "$task" in
{cases}
  *) echo "no parameters for task $task" >&2; exit 2 ;;
esac
printf %s "$params" | base64 -d >"parameters-$task.json"
if [ ! -s input.ipynb ]; then
  input=$(mktemp .input.XXXXXX)
  base64 -d >"$input" <<'CLUSTERHUB_NOTEBOOK'
{_wrapped(_b64(job.notebook))}
CLUSTERHUB_NOTEBOOK
  mv -f "$input" input.ipynb
fi
{before_data}status=0
{python} - input.ipynb {output} "parameters-$task.json" {kernel} {data_file} <<'CLUSTERHUB_PAPERMILL' &
{PAPERMILL}CLUSTERHUB_PAPERMILL
notebook=$!
# its end; a signal the script traps interrupts the wait, not the notebook
until wait "$notebook"; status=$?; ! kill -0 "$notebook" 2>/dev/null; do :; done
{after_data}echo "clusterhub run {job.run_id}: task $task ended with status $status, $(date -Is)"
exit "$status"
"""
