"""The lab's Slurm cluster, used as a person would: real jobs, real daemons."""

from __future__ import annotations

import pytest
from conftest import PLAYBOOK, changed_tasks, recap_changed, run_playbook, wait_for

NODES = {"node1", "node2"}
pytestmark = pytest.mark.slurm


def node_states(login) -> dict[tuple[str, str], str]:
    out = login.check_output("sinfo -h -N -o '%P %N %t'")
    states = {}
    for line in out.splitlines():
        part, node, state = line.split()
        states[(part.rstrip("*"), node)] = state
    return states


def test_sinfo_lists_both_nodes_idle_in_both_partitions(login):
    want = {(p, n) for p in ("batch", "jupyter") for n in NODES}

    def all_idle():
        states = node_states(login)
        return set(states) >= want and all(states[k] == "idle" for k in want)

    wait_for(all_idle, timeout=90, what="node1 and node2 idle in batch and jupyter")
    assert "batch*" in login.check_output("sinfo -h -o %P"), "batch is the default partition"


def test_srun_runs_on_both_nodes(login):
    out = login.check_output("srun -N2 hostname")
    assert set(out.split()) == NODES


def test_alice_job_runs_on_a_compute_node_and_writes_her_home(login, nodes):
    jobid = login.check_output(
        "sudo -u alice sbatch --parsable --wait --chdir /home/alice -o hello-%j.out --wrap 'hostname; id -u; pwd'"
    ).strip()
    host, uid, cwd = login.file(f"/home/alice/hello-{jobid}.out").content_string.split()
    assert host in NODES
    assert int(uid) == login.user("alice").uid == 2001
    assert cwd == "/home/alice"
    # the compute node sees the same file: homes are shared
    ran_on = next(n for n in nodes if n.check_output("hostname") == host)
    assert ran_on.file(f"/home/alice/hello-{jobid}.out").user == "alice"


def test_scancel_removes_a_running_job(login):
    jobid = login.check_output("sudo -u alice sbatch --parsable -o /dev/null --wrap 'sleep 300'").strip()
    wait_for(lambda: login.check_output(f"squeue -h -j {jobid} -o %T") == "RUNNING", what="job running")
    login.check_output(f"sudo -u alice scancel {jobid}")
    wait_for(
        lambda: "CANCELLED" in login.check_output(f"scontrol show job {jobid} -o"),
        what="job cancelled",
    )
    assert login.check_output(f"squeue -h -j {jobid} -o %T 2>/dev/null || true") == ""


def test_bob_cannot_cancel_alice_job(login):
    jobid = login.check_output("sudo -u alice sbatch --parsable -o /dev/null --wrap 'sleep 300'").strip()
    try:
        refused = login.run(f"sudo -u bob scancel {jobid}")
        assert refused.rc != 0
        assert "Access/permission denied" in refused.stderr or "Invalid user" in refused.stderr
        assert login.check_output(f"squeue -h -j {jobid} -o %T") in ("PENDING", "RUNNING")
    finally:
        login.run(f"scancel {jobid}")


def test_job_survives_controller_restart(login):
    jobid = login.check_output(
        "sudo -u alice sbatch --parsable -o /home/alice/survivor-%j.out --wrap 'sleep 12; echo survived'"
    ).strip()
    wait_for(lambda: login.check_output(f"squeue -h -j {jobid} -o %T") == "RUNNING", what="job running")
    login.check_output("systemctl restart slurmctld")
    wait_for(lambda: login.run("scontrol ping").rc == 0, what="slurmctld back")
    wait_for(
        lambda: "JobState=COMPLETED" in login.check_output(f"scontrol show job {jobid} -o"),
        timeout=90,
        what="job completed after the restart",
    )
    assert login.file(f"/home/alice/survivor-{jobid}.out").content_string.strip() == "survived"


def test_munge_key_is_one_key_owned_by_munge(login, hub, nodes):
    sums = set()
    for host in (login, hub, *nodes):
        key = host.file("/etc/munge/munge.key")
        assert key.user == "munge" and key.group == "munge"
        assert key.mode == 0o400
        sums.add(key.sha256sum)
    assert len(sums) == 1
    # and munge really accepts credentials across hosts
    cred = login.check_output("munge -n")
    assert "STATUS:          Success" in nodes[0].check_output(f"echo '{cred}' | unmunge")


def test_check_mode_rerun_changes_nothing(login):
    before = login.file("/etc/munge/munge.key").sha256sum
    result = run_playbook(PLAYBOOK, "--check", "--diff")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    changed = recap_changed(result.stdout)
    assert changed and all(n == 0 for n in changed.values()), (changed, changed_tasks(result.stdout))
    assert login.file("/etc/munge/munge.key").sha256sum == before
