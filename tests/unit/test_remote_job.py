"""Remote HPC mode on the hub side: which spawner runs a request, and what goes through hpc-gate.

The commands are checked against hpc-gate's own parser (src/clusterhub/gate.py), so the
hub never sends what the gate refuses."""

import shlex
import subprocess
from pathlib import Path

import pytest

from clusterhub import gate
from clusterhub.hub.kinds import spawner_kind
from clusterhub.hub.remote_job import (
    cancel_argv,
    env_exports,
    hpc_user,
    job_name,
    joblog_argv,
    parse_job_id,
    pick_port,
    squeue_argv,
    submit_argv,
)
from clusterhub.hub.slurm_queue import SQUEUE_FORMAT

SSH = ["/usr/bin/ssh", "-i", "/var/lib/jupyterhub/.ssh/clusterhub_hpc", "clusterhub-gate@login"]
PARTITIONS = [{"name": "jupyter"}, {"name": "hpc", "remote": True}, {"name": "gpu", "remote": False}]


@pytest.mark.parametrize(
    ("kind", "partition", "expected"),
    [("slurm", "jupyter", "slurm"), ("slurm", "hpc", "remote"), ("slurm", "gpu", "slurm"), ("docker", "", "docker")],
)
def test_remote_partitions_get_the_remote_spawner(kind, partition, expected):
    assert spawner_kind(kind, partition, PARTITIONS) == expected


@pytest.mark.parametrize(
    ("user", "name"),
    [("alice", "jupyterhub-alice"), ("a.b@uni.de", "jupyterhub-a.b@uni.de"), ("x y/z", "jupyterhub-x_y_z")],
)
def test_job_names_are_per_user_and_pass_the_gate(user, name):
    assert job_name("jupyterhub", user) == name
    request = gate.parse(submit_argv(SSH, name)[-1], gate.Config(), "jupyterhpc")
    assert request.args == ("--parsable", f"--job-name={name}")


def test_every_command_is_one_the_gate_accepts():
    config = gate.Config()
    assert gate.parse(squeue_argv(SSH)[-1], config, "jupyterhpc").args == (
        "--noheader",
        "--user=jupyterhpc",
        f"--format={SQUEUE_FORMAT}",
    )
    assert gate.parse(cancel_argv(SSH, "42")[-1], config, "jupyterhpc").args == ("--user=jupyterhpc", "42")
    assert gate.parse(joblog_argv(SSH, "42")[-1], config, "jupyterhpc").args == ("42",)
    assert submit_argv(SSH, "jupyterhub-alice")[:-1] == SSH


OWN = [{"name": "hpc", "remote": True}, {"name": "hpcown", "remote": True, "run_as": "user"}]


def test_run_as_user_partitions_run_the_job_as_the_users_own_account():
    assert hpc_user("hpcown", OWN, "alice") == "alice"
    assert hpc_user("hpc", OWN, "alice") == ""
    assert hpc_user("unknown", OWN, "alice") == ""
    with pytest.raises(ValueError, match="cannot be an HPC account name"):
        hpc_user("hpcown", OWN, "a.b@uni.de")


@pytest.mark.parametrize(
    ("user_map", "hub_user", "account"),
    [
        ({}, "alice", "alice"),  # no map: the hub name is the HPC account's
        ({"alice@uni.de": "asmith"}, "alice@uni.de", "asmith"),  # an OAuth or LDAP name the HPC side lacks
        ({"alice@uni.de": "asmith"}, "asmith", None),  # the map alone decides: a name not in it is refused
        ({"alice@uni.de": "asmith"}, "alice", None),
        ({"mallory": "root"}, "mallory", "bad"),
        ({"mallory": "bad name"}, "mallory", "bad"),
    ],
)
def test_the_hpc_user_map_decides_who_runs_as_which_account(user_map, hub_user, account):
    if account == "bad":
        with pytest.raises(ValueError, match="cannot be an HPC account name"):
            hpc_user("hpcown", OWN, hub_user, user_map)
    elif account is None:
        with pytest.raises(ValueError) as refused:
            hpc_user("hpcown", OWN, hub_user, user_map)
        assert str(refused.value) == (
            f"partition hpcown runs servers as the users' own HPC accounts and none is known for {hub_user}: choose"
            " another partition, or ask the administrators to map your hub name to your HPC account"
        )
    else:
        assert hpc_user("hpcown", OWN, hub_user, user_map) == account
    # the shared account's partition ignores the map
    assert hpc_user("hpc", OWN, hub_user, user_map) == ""


def test_the_users_own_commands_are_ones_the_gate_accepts_as_that_user(monkeypatch):
    config = gate.Config(users_group="hpcusers")
    monkeypatch.setattr(gate, "check_user", lambda name, _config: name)  # membership: tests/unit/test_hpc_gate.py
    submit = gate.parse(submit_argv(SSH, "jupyterhub-alice", "alice")[-1], config, "jupyterhpc")
    assert (submit.as_user, submit.tool) == ("alice", "sbatch")
    assert submit.args == ("--parsable", "--job-name=jupyterhub-alice")
    cancel = gate.parse(cancel_argv(SSH, "42", "alice")[-1], config, "jupyterhpc")
    assert (cancel.as_user, cancel.args) == ("alice", ("--user=alice", "42"))
    log = gate.parse(joblog_argv(SSH, "42", "alice")[-1], config, "jupyterhpc")
    assert (log.as_user, log.inner) == ("alice", "joblog 42")
    # the shared account's commands carry no `as`
    assert gate.parse(cancel_argv(SSH, "42")[-1], config, "jupyterhpc").as_user == ""


@pytest.mark.parametrize("argv", [cancel_argv, joblog_argv])
def test_job_commands_take_job_ids_only(argv):
    with pytest.raises(ValueError, match="not a Slurm job id"):
        argv(SSH, "42; rm -rf ~")


def test_env_exports_carry_the_hubs_variables_quoted_and_nothing_else():
    env = {
        "JUPYTERHUB_API_TOKEN": "tok'en",
        "JUPYTERHUB_API_URL": "http://hub:8081/hub/api",
        "JPY_API_TOKEN": "tok'en",
        "PATH": "/hub/only",
        "HOME": "/var/lib/jupyterhub",
    }
    text = env_exports(env, {"SITE_VAR": "a b"})
    assert "PATH" not in text and "HOME" not in text
    # the exports, run by a real shell, give back exactly the values
    out = subprocess.run(
        ["bash", "-c", text + '\nprintf "%s\\n" "$JUPYTERHUB_API_TOKEN" "$JUPYTERHUB_API_URL" "$SITE_VAR"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["tok'en", "http://hub:8081/hub/api", "a b"]


def test_env_exports_refuse_names_a_shell_would_run():
    with pytest.raises(ValueError, match="not an environment variable name"):
        env_exports({}, {"X=1; id #": "v"})


@pytest.mark.parametrize(("output", "job"), [("1234\n", "1234"), ("warning\n77;cluster\n", "77")])
def test_job_ids_from_sbatch(output, job):
    assert parse_job_id(output) == job


@pytest.mark.parametrize("output", ["", "sbatch: error: Batch job submission failed\n"])
def test_no_job_id_is_an_error(output):
    with pytest.raises(ValueError, match="no job id"):
        parse_job_id(output)


def test_the_commands_survive_ssh_joining_them():
    # ssh sends its remaining arguments as one line; the gate splits it again with shlex
    line = submit_argv(SSH, "jupyterhub-a.b@uni.de")[-1]
    assert shlex.split(line) == ["sbatch", "--parsable", "--job-name=jupyterhub-a.b@uni.de"]


BATCH_SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "jupyterhub" / "files" / "batch_script.sh"
SUBVARS = {
    "job_name": "jupyterhub-alice",
    "homedir": "/home/alice",
    "keepvars": "ALL",
    "partition": "hpc",
    "runtime": "02:00:00",
    "memory": "1G",
    "nprocs": "1",
    "gres": "",
    "options": "",
    "prologue": "",
    "epilogue": "",
    "singleuser_venv": "/opt/jupyter",
    "image_path": "/opt/clusterhub/images/python.sif",
    "cmd": "/opt/jupyter/bin/jupyterhub-singleuser --KernelManager.transport=ipc",
}


def render_batch_script(**subvars) -> str:
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Template(BATCH_SCRIPT.read_text()).render(**{**SUBVARS, **subvars})


def test_the_remote_job_carries_the_hubs_variables_and_starts_the_tunnelled_wrapper():
    exports = env_exports({"JUPYTERHUB_API_TOKEN": "secret", "JUPYTERHUB_USER": "alice"})
    script = render_batch_script(tunnel_port=45678, remote_env=exports)
    assert "#SBATCH --output=.clusterhub/logs/%x-%j.log" in script
    assert "--export=" not in script and "--chdir" not in script  # nothing of the hub's side
    assert "export JUPYTERHUB_API_TOKEN=secret\nexport JUPYTERHUB_USER=alice" in script
    assert (
        "clusterhub-startjob --tunnel 45678 /opt/clusterhub/images/python.sif "
        "jupyterhub-singleuser --KernelManager.transport=ipc" in script
    )
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_the_direct_job_is_unchanged_by_remote_mode():
    script = render_batch_script(tunnel_port=0, remote_env="")
    assert "#SBATCH --export=ALL" in script and "#SBATCH --chdir=/home/alice" in script
    assert "--tunnel" not in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_a_tunnel_port_is_one_the_tunnel_account_may_listen_on_and_nobody_holds():
    ports = range(47000, 47010)
    listening = {47001, 47002}
    held = {47000, 47003}  # servers of this hub whose tunnels are not up yet
    chosen = {pick_port(ports, held, lambda p: p not in listening) for _ in range(200)}
    assert chosen == set(ports) - listening - held


def test_no_tunnel_port_when_every_one_is_taken():
    assert pick_port([47000, 47001], {47000}, lambda p: False) is None
    assert pick_port([], set(), lambda p: True) is None
