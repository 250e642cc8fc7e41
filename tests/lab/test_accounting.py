"""Slurm accounting in the lab: slurmdbd with MariaDB on the login node (group slurm_dbd), the cluster, accounts and
users registered from the inventory, sacct for users, the jupyter partition's lower billing, and a controller
that keeps scheduling while slurmdbd is down and hands the records over when it is back."""

from __future__ import annotations

import re

import pytest
from conftest import wait_for

pytestmark = pytest.mark.slurm

SACCT = "sacct -X -n -P -o JobID,User,Partition,State,AllocTRES"


def sacct_rows(login, who: str, jobs: list[str]) -> dict[str, list[str]]:
    """{job id: [user, partition, state, AllocTRES]} of these jobs as `who` sees them with sacct (root: everything)."""
    prefix = "" if who == "root" else f"sudo -u {who} "
    out = login.check_output(f"{prefix}{SACCT} -j {','.join(jobs)}")
    return {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines() if line.strip()}


def recorded(login, jobs: list[str], state: str = "COMPLETED"):
    """The jobs' sacct rows once slurmdbd answers and has every one of them in `state` (else None)."""
    if login.run("sacct -n -j 1").rc != 0:  # slurmdbd (re)starting
        return None
    rows = sacct_rows(login, "root", jobs)
    return rows if set(rows) == set(jobs) and all(row[2] == state for row in rows.values()) else None


def billing(alloc_tres: str) -> int:
    return int(re.search(r"(?:^|,)billing=(\d+)", alloc_tres).group(1))


def submit(login, user: str, options: str, command: str = "true") -> str:
    return login.check_output(
        f"sudo -u {user} sbatch --parsable --wait -o /dev/null {options} --wrap '{command}'"
    ).strip()


def test_slurmdbd_and_mariadb_run_on_the_accounting_host(login):
    for service in ("mariadb", "slurmdbd"):
        assert login.service(service).is_running and login.service(service).is_enabled
    conf = login.file("/etc/slurm/slurmdbd.conf")
    assert (conf.user, conf.group, conf.mode) == ("slurm", "slurm", 0o600)
    # no database password exists: slurmdbd reaches MariaDB over its socket as the Unix user slurm
    assert "StoragePass" not in conf.content_string
    grants = login.check_output("mariadb -NBe \"SHOW GRANTS FOR 'slurm'@'localhost'\"")
    assert "IDENTIFIED VIA unix_socket" in grants and "ON `slurm_acct_db`.*" in grants
    # and only the Unix user slurm can log in as it
    refused = login.run("sudo -u alice mariadb -u slurm -e 'SELECT 1'")
    assert refused.rc != 0 and "Access denied" in refused.stderr


def test_the_inventorys_cluster_accounts_and_users_are_registered(login):
    assocs = login.check_output("sacctmgr -nP show association format=cluster,account,user").splitlines()
    assert {
        "clusterhub-lab|students|alice",
        "clusterhub-lab|students|bob",
        "clusterhub-lab|staff|labadmin",
        "clusterhub-lab|staff|jupyterhpc",
    } <= set(assocs)
    assert (
        "students|teaching|clusterhub lab"
        in login.check_output("sacctmgr -nP show account format=account,description,organization").splitlines()
    )


def test_sacct_records_jobs_and_the_jupyter_partition_bills_less(login):
    # the same request on both partitions: 2 CPUs and 1 GiB bill 2 on batch (CPUs, Slurm's default) and 1 on
    # jupyter (CPU=0.5,Mem=0.125G: 1 + 0.125, rounded down by Slurm)
    jobs = {part: submit(login, "alice", f"-p {part} -c 2 --mem 1G") for part in ("batch", "jupyter")}
    rows = wait_for(lambda: recorded(login, list(jobs.values())), timeout=60, what="both jobs in sacct")
    batch, jupyter = rows[jobs["batch"]], rows[jobs["jupyter"]]
    assert batch[:3] == ["alice", "batch", "COMPLETED"] and jupyter[:3] == ["alice", "jupyter", "COMPLETED"]
    assert "cpu=2" in batch[3] and "mem=1G" in batch[3]
    assert (billing(batch[3]), billing(jupyter[3])) == (2, 1)
    # a user's own sacct on the login node shows it too
    assert set(sacct_rows(login, "alice", list(jobs.values()))) == set(jobs.values())


@pytest.mark.security
def test_sacct_shows_a_user_only_their_own_jobs(login):
    alice_job = submit(login, "alice", "-p batch")
    bob_job = submit(login, "bob", "-p batch")
    wait_for(lambda: recorded(login, [alice_job, bob_job]), timeout=60, what="both jobs in sacct")
    # bob asks for alice's job by id, and for everybody's jobs: he gets his own only
    assert sacct_rows(login, "bob", [alice_job]) == {}
    everyone = login.check_output(f"sudo -u bob {SACCT} -a -S now-1hour")
    assert {line.split("|")[1] for line in everyone.splitlines() if line.strip()} == {"bob"}
    assert set(sacct_rows(login, "bob", [alice_job, bob_job])) == {bob_job}
    # nor alice's usage or association records
    assert "alice" not in login.check_output("sudo -u bob sacctmgr -nP show association format=user")
    assert set(sacct_rows(login, "alice", [alice_job, bob_job])) == {alice_job}


def test_jobs_run_while_slurmdbd_is_down_and_are_recorded_when_it_is_back(login):
    login.check_output("systemctl stop slurmdbd")
    try:
        down = login.run(f"{SACCT} -j 1")
        assert down.rc != 0 or down.stdout.strip() == "", "sacct answered with slurmdbd stopped"
        # the controller schedules and the nodes run jobs: batch and srun, as users do
        job = submit(login, "alice", "-p jupyter", "echo cached")
        assert "COMPLETED" in login.check_output(f"scontrol show job {job} -o")
        assert login.check_output("sudo -u bob srun -p batch -n1 echo ok") == "ok"
    finally:
        login.check_output("systemctl start slurmdbd")
    # slurmctld hands over the records it kept meanwhile
    rows = wait_for(lambda: recorded(login, [job]), timeout=120, interval=2, what="the cached job in sacct")
    assert rows[job][:2] == ["alice", "jupyter"]
