"""Remote HPC mode, the plain parts: job names, the commands sent through hpc-gate and the job's
environment. No JupyterHub import, so the rules are unit-tested on their own.

The hub cannot reach the compute nodes: every server is a job submitted over SSH to the login node as one
HPC account, whose forced command (hpc-gate) allows only `sbatch --parsable [--job-name=NAME]`, `squeue` in
one format, `scancel JOBID` and `joblog JOBID`. The job runs as that account, or, on partitions with
`run_as: user` (sites whose hub users have HPC accounts of their own), as the user's own account: the hub
then prefixes `as USER` and hpc-gate runs the command as USER through sudo. SSH passes no environment, so
what the server needs from the hub is written into the job script as `export` lines.
"""

from __future__ import annotations

import random
import re
import shlex
from collections.abc import Callable, Iterable, Mapping

from ..protocol import SQUEUE_FORMAT, USER_NAME_RE, remote_job_name

# what hpc-gate accepts after "<job name>-"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# the hub's variables for the single-user server; nothing of the hub's own process environment
ENV_PREFIXES = ("JUPYTERHUB_", "JPY_")


def pick_port(ports: Iterable[int], held: set[int], is_free: Callable[[int], bool], rng=random) -> int | None:
    """A port of `ports` (the tunnel account's permitted -R ports) that no server of this hub holds and
    nothing listens on, at random; None where every one is taken."""
    candidates = [port for port in ports if port not in held]
    rng.shuffle(candidates)
    return next((port for port in candidates if is_free(port)), None)


def job_name(prefix: str, username: str) -> str:
    """`<prefix>-<user>`: each user's servers are told apart in squeue; odd characters become _."""
    return remote_job_name(prefix, username)


def remote(ssh_command: list[str], *words: str) -> list[str]:
    """The argv that runs `words` on the login node: ssh joins its arguments into one command line,
    which hpc-gate splits again, so each word is quoted."""
    return [*ssh_command, shlex.join(words)]


def hpc_user(partition: str, partitions: list[dict], username: str, user_map: Mapping[str, str] | None = None) -> str:
    """The HPC account a server on `partition` runs as when it is the user's own (`run_as: user`), else ""
    (the hub's HPC account). With a name map (jupyterhub_hpc_user_map, hub name: HPC account) the map alone
    decides, and a hub user it does not name has no account of their own there; without one, the hub user's
    name is the HPC account's name. Raises ValueError with the sentence the user reads."""
    entry = next((p for p in partitions if p["name"] == partition), {})
    if entry.get("run_as", "account") != "user":
        return ""
    if user_map:
        account = user_map.get(username)
        if account is None:
            raise ValueError(
                f"partition {partition} runs servers as the users' own HPC accounts and none is known for {username}:"
                " choose another partition, or ask the administrators to map your hub name to your HPC account"
            )
    else:
        account = username
    if not USER_NAME_RE.match(account) or account == "root":
        raise ValueError(f"{account!r} cannot be an HPC account name (partition {partition} runs as the user's own)")
    return account


def image_only(partition: str, images: list[dict]) -> str:
    """What a user reads who asked for the nodes' own environment on a remote partition (its nodes have none)."""
    choices = ", ".join(i.get("display_name", i["name"]) for i in images if i.get("path"))
    return f"partition {partition} runs its jobs in a container image only: choose one of {choices}"


def _as(user: str) -> tuple[str, ...]:
    return ("as", user) if user else ()


def submit_argv(ssh_command: list[str], name: str, user: str = "") -> list[str]:
    return remote(ssh_command, *_as(user), "sbatch", "--parsable", f"--job-name={name}")


def squeue_argv(ssh_command: list[str]) -> list[str]:
    return remote(ssh_command, "squeue", "-h", "-o", SQUEUE_FORMAT)


def _job_id(job_id: str) -> str:
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return job_id


def cancel_argv(ssh_command: list[str], job_id: str, user: str = "") -> list[str]:
    return remote(ssh_command, *_as(user), "scancel", _job_id(job_id))


def joblog_argv(ssh_command: list[str], job_id: str, user: str = "") -> list[str]:
    """hpc-gate's `joblog JOBID`: the wrapper's messages from the job's output (why it ended)."""
    return remote(ssh_command, *_as(user), "joblog", _job_id(job_id))


def sacct_argv(ssh_command: list[str], job_id: str, user: str = "") -> list[str]:
    """The job's accounting through hpc-gate (its fixed fields, protocol.SACCT_FIELDS), as the account it ran as."""
    return remote(ssh_command, *_as(user), "sacct", _job_id(job_id))


def env_exports(env: dict[str, str], extra: dict[str, str] | None = None) -> str:
    """`export NAME=value` lines for the job script: the hub's JUPYTERHUB_*/JPY_* variables and the
    site's extra ones (Spawner.environment), every value quoted for the shell."""
    chosen = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES)}
    chosen.update(extra or {})
    lines = []
    for name in sorted(chosen):
        if not _ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        lines.append(f"export {name}={shlex.quote(str(chosen[name]))}")
    return "\n".join(lines)


def parse_job_id(output: str) -> str:
    """The job id sbatch --parsable printed (last line; `id;cluster` on federations)."""
    lines = output.strip().splitlines()
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {output.strip()[-300:]!r}")
    return job_id
