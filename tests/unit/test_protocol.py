"""The protocol between hub, hpc-gate, batch script and wrappers (src/clusterhub/protocol.py), checked end to end:
every copy of a value says what the protocol says, and the hub reads exactly what the gate prints, for every
command, with the gate configured as the hpc_account role renders hpc-gate.conf for the lab inventory."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from clusterhub_rules import clusterhub_protocol
from fake_slurm import FakeSlurm
from role_files import ROOT, load, render
from test_runs_remote import REMOTE_OFFER

from clusterhub import gate, protocol
from clusterhub.hub.job_end import cause
from clusterhub.hub.remote_job import cancel_argv, job_name, joblog_argv, parse_job_id, squeue_argv, submit_argv
from clusterhub.hub.slurm_queue import parse_squeue
from clusterhub.runs.job import build as build_run
from clusterhub.runs.slurm import RemoteCommands

SSH = ["/usr/bin/ssh", "clusterhub-gate@login"]
# names the one rule must take (j.doe: a site's LDAP style) and refuse
GOOD_NAMES = ["alice", "j.doe", "_svc", "bob-2", "a" * 32]
BAD_NAMES = ["", "1abc", ".hidden", "-x", "Alice", "a b", "a/b", "../etc", "a;b", "a" * 33, "al\nice"]


def test_every_copy_of_a_value_is_the_protocols():
    assert gate.USER_NAME.pattern == protocol.USER_NAME
    assert gate.Config().squeue_format == protocol.SQUEUE_FORMAT
    assert gate.Config().job_name == protocol.DEFAULT_JOB_NAME
    assert gate.Config().job_log_dir == protocol.REMOTE_JOB_LOG_DIR
    # notebook runs: the gate's copies of their files' rules and accounting fields (the service imports these)
    assert gate.Config().runs_dir == protocol.RUNS_DIR
    assert gate.Config().sacct_fields == protocol.SACCT_FIELDS
    assert (gate.RUN_ID.pattern, gate.RUN_FILE.pattern) == (protocol.RUN_ID, protocol.RUN_FILE)
    assert load(ROOT / "roles/jupyterhub/defaults/main.yml")["jupyterhub_job_name"] == protocol.DEFAULT_JOB_NAME
    assert load(ROOT / "roles/hpc_account/defaults/main.yml")["hpc_account_job_name"] == protocol.DEFAULT_JOB_NAME
    assert len(protocol.SQUEUE_FIELDS) == protocol.SQUEUE_FORMAT.count("|") + 1
    # the batch script's --output lines (batchspawner fills {{homedir}}; Slurm %x and %j)
    script = (ROOT / "roles/jupyterhub/files/batch_script.sh").read_text()
    assert f"--output={{{{homedir}}}}/{protocol.DIRECT_JOB_LOG.format(job='%j')}" in script
    assert f"--output={protocol.REMOTE_JOB_LOG_DIR}/%x-%j.log" in script
    # a home without room ends the job with the status the hub reads from accounting
    assert f"exit {protocol.EXIT_HOME_FULL}\n" in script


def test_the_roles_read_the_protocol_through_their_filter():
    for name, value in protocol.values().items():
        assert clusterhub_protocol(name) == value
    with pytest.raises(ValueError, match="no value 'nope'; known: "):
        clusterhub_protocol("nope")


@pytest.mark.parametrize(
    ("role", "template"),
    [
        ("job_wrappers", "usr/local/bin/clusterhub-startjob.j2"),
        ("webdav_client", "usr/local/bin/clusterhub-webdav-mount.j2"),
    ],
)
def test_the_wrappers_check_user_names_with_the_one_rule_as_bash_reads_it(role, template):
    text = render(role, template, "node1")
    rules = re.findall(r"\[\[ \$user =~ (\S+) \]\]", text)
    assert rules == [protocol.USER_NAME], rules
    for name in GOOD_NAMES + BAD_NAMES:
        bash = subprocess.run(["bash", "-c", f"[[ $1 =~ {rules[0]} ]]", "-", name], check=False).returncode == 0
        assert bash is bool(protocol.USER_NAME_RE.fullmatch(name)) is (name in GOOD_NAMES), name


def test_the_hub_checks_the_names_the_gate_takes():
    for name in GOOD_NAMES + BAD_NAMES:
        assert bool(gate.USER_NAME.match(name)) is (name in GOOD_NAMES), name


@pytest.fixture
def gate_config(tmp_path) -> gate.Config:
    """hpc-gate's configuration as the hpc_account role writes it for the lab's login node, with the fake
    Slurm's commands."""
    conf = tmp_path / "hpc-gate.conf"
    conf.write_text(render("hpc_account", "etc/clusterhub/hpc-gate.conf.j2", "login"))
    config = gate.load_config(str(conf))
    assert config.squeue_format == protocol.SQUEUE_FORMAT
    assert config.job_log_dir == protocol.REMOTE_JOB_LOG_DIR
    return config


def through_gate(argv: list[str], config: gate.Config, home: Path, capfd, stdin: bytes | None = None) -> str:
    """What the gate prints for the hub's command `argv` (the hub's ssh command line, checked and run)."""
    request = gate.parse(argv[-1], config, "jupyterhpc")
    script = gate.read_script(io.BytesIO(stdin)) if stdin is not None else None
    capfd.readouterr()
    assert gate.execute(request, config, script, str(home)) == 0
    return capfd.readouterr().out


@pytest.mark.parametrize("users_group", ["", "hpcusers"])
def test_the_hub_reads_exactly_what_the_gate_prints_for_every_command(
    tmp_path, gate_config, capfd, monkeypatch, users_group
):
    slurm = FakeSlurm(tmp_path / "slurm")
    monkeypatch.setenv("FAKE_SLURM_USER", "jupyterhpc")  # the jobs run as the job account
    config = dataclasses.replace(gate_config, slurm_bin_dir=str(slurm.bin), users_group=users_group)
    home = tmp_path / "home"
    home.mkdir()
    name = job_name(config.job_name, "j.doe")
    # sbatch: the job id the gate prints is the one the hub reads
    out = through_gate(submit_argv(SSH, name), config, home, capfd, stdin=b"#!/bin/bash\nexec true\n")
    job = parse_job_id(out)
    assert slurm.jobs[job]["name"] == name
    slurm.run(job, node="rnode1")
    # a job of another program on the same account: never the hub's
    other = through_gate(submit_argv(SSH, config.job_name), config, home, capfd, stdin=b"#!/bin/sh\n")
    slurm.update(parse_job_id(other), name="someone-elses")
    # squeue: each field as Slurm had it, nothing else
    out = through_gate(squeue_argv(SSH), config, home, capfd)
    jobs = parse_squeue(out)
    info = jobs[job]
    assert (info.job_id, info.state, info.node, info.reason) == (job, "RUNNING", "rnode1", "None")
    assert (info.user, info.partition, info.name) == ("jupyterhpc", "batch", name)
    # the shared account's own squeue lists its jobs; with users of their own, only the hub's names are kept
    expected = {job} if users_group else {job, parse_job_id(other)}
    assert set(jobs) == expected
    # joblog: the end of the job's output, from where the batch script writes it
    logs = home / protocol.REMOTE_JOB_LOG_DIR
    (logs / f"{name}-{job}.log").write_text(
        "slurmstepd: error: *** JOB 7 ON rnode1 CANCELLED AT 2026 DUE TO TIME LIMIT ***\n"
    )
    out = through_gate(joblog_argv(SSH, job), config, home, capfd)
    assert "time limit" in cause(out, "the log").sentence().lower()
    # scancel: the job the hub names, and it leaves the queue
    through_gate(cancel_argv(SSH, job), config, home, capfd)
    assert slurm.cancelled == [job]
    assert job not in parse_squeue(through_gate(squeue_argv(SSH), config, home, capfd))


def test_the_runs_service_reads_exactly_what_the_gate_prints(tmp_path, gate_config, capfd, monkeypatch):
    """Remote HPC mode's notebook runs: the service's commands (RemoteCommands) through the gate as the lab's
    hpc_account role configures it, each `as alice` run as alice the way sudo's `hpc-gate --run` does."""
    slurm = FakeSlurm(tmp_path / "slurm")
    monkeypatch.setenv("FAKE_SLURM_USER", "alice")  # the runs' jobs run as the user's own account
    monkeypatch.setattr(gate, "check_user", lambda name, config: name)  # alice is in hpcusers (no such account here)
    config = dataclasses.replace(gate_config, slurm_bin_dir=str(slurm.bin))
    assert (config.users_group, config.runs_job_name) == ("hpcusers", protocol.RUNS_JOB_NAME)
    home = tmp_path / "home"
    home.mkdir()

    def through(argv, stdin=None):
        assert argv[:-1] == SSH
        request = gate.parse(argv[-1], config, "jupyterhpc")
        if request.as_user:  # what sudo runs: the gate again, as that user, without `as`
            assert request.as_user == "alice"
            request = gate.parse(request.inner, config, "alice", allow_as=False)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        script = gate.read_script(io.BytesIO(data)) if request.stdin else None
        capfd.readouterr()
        rc = gate.execute(request, config, script, str(home))
        out, err = capfd.readouterr()
        return rc, out, err

    def read(rc, out, err):  # read_output's contract: the bytes printed, or OSError with the message
        if rc != 0:
            raise OSError(err)
        return out.encode()

    commands = RemoteCommands(
        ssh=SSH,
        runner=through,
        reader=lambda argv: read(*through(argv)),
    )
    job = build_run(
        {"profile": "custom", "partition": "hpcown", "image": "python"},
        json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5}),
        {},
        profiles=[],
        partitions=REMOTE_OFFER["partitions"],
        images=REMOTE_OFFER["images"],
    )
    job_id = commands.submit("alice", job)
    assert slurm.jobs[job_id]["name"] == protocol.RUNS_JOB_NAME and slurm.jobs[job_id]["user"] == "alice"
    assert commands.queue() == {job_id: [(job_id, "PENDING", "Priority")]}
    slurm.run(job_id, node="rnode1")
    assert commands.queue() == {job_id: [(job_id, "RUNNING", "None")]}
    slurm.end(job_id)
    assert commands.queue() == {}
    rows = commands.accounting("alice", [job_id])
    assert rows[job_id][0]["State"] == "COMPLETED" and rows[job_id][0]["ExitCode"] == "0:0"
    run_dir = home / protocol.RUNS_DIR / job.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "output.ipynb").write_text('{"cells": []}')
    assert commands.read("alice", job.run_id, "output.ipynb") == b'{"cells": []}'
    with pytest.raises(OSError, match=r"job-0\.log"):
        commands.read("alice", job.run_id, "job-0.log")
    commands.cancel("alice", job_id)
    assert slurm.cancelled == [job_id]
