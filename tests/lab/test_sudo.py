"""The hub's sudo rule (issue 13, item 4): sbatch, squeue and scancel only as members of the users' group
(jupyterhub_slurm_users_group: students in the lab), never as root or system accounts, never with a
caller's environment. Tried as the hub's service user on the hub host; the legitimate path still works."""

from __future__ import annotations

import pytest
from conftest import PLAYBOOK, wait_for

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(PLAYBOOK != "playbooks/site.yml", reason="the scenario did not converge the hub"),
]

AS_HUB = "runuser -u jupyterhub -- "
# a job that would prove it ran, whoever it ran as
WRAP = "--wrap 'touch /tmp/clusterhub-sudo-attack'"
OUTPUT = "/home/alice/.clusterhub-sudo-check.out"


@pytest.mark.parametrize(
    "attempt",
    [
        "sudo -n -u munge /usr/bin/sbatch --parsable " + WRAP,  # a system account
        "sudo -n -u slurm /usr/bin/squeue",  # Slurm's own account
        "sudo -n -u root /usr/bin/scancel 1",
        "sudo -n -u nobody /usr/bin/squeue",
        "sudo -n -u labadmin /usr/bin/squeue",  # a person, but not in the users' group
        "sudo -n -u alice LD_PRELOAD=/tmp/evil.so /usr/bin/sbatch --parsable " + WRAP,  # no SETENV
        "sudo -n -u alice SLURM_CONF=/tmp/evil.conf /usr/bin/sbatch --parsable " + WRAP,
        "env LD_PRELOAD=/tmp/evil.so sudo -n -E -u alice /usr/bin/sbatch --parsable " + WRAP,  # no -E either
        "sudo -n -u alice /bin/sh -c id",  # nothing but the Slurm commands
        "sudo -n -u alice /usr/bin/tail -c 16384 /etc/shadow",  # the job log rule takes its exact form only
    ],
)
def test_the_hub_user_cannot_sudo_beyond_its_rule(hub, attempt):
    result = hub.run(AS_HUB + attempt)
    assert result.rc != 0, result.stdout
    assert "sudo" in result.stderr, result.stderr
    assert not hub.file("/tmp/clusterhub-sudo-attack").exists


def test_the_hub_user_may_run_slurm_commands_as_a_member_with_the_servers_variables(hub, login):
    # JupyterHub's variables pass by name (env_keep); the caller's others never (SLURM_CONF would break sbatch)
    out = hub.check_output(
        AS_HUB + "env JUPYTERHUB_API_TOKEN=lab-sudo-check CLUSTERHUB_EVIL=1 SLURM_CONF=/tmp/evil.conf"
        " sudo -n -u alice /usr/bin/sbatch --parsable -p jupyter -J clusterhub-sudo-check"
        f" -o {OUTPUT} --export=ALL"
        " --wrap 'echo token=$JUPYTERHUB_API_TOKEN evil=${CLUSTERHUB_EVIL-unset}; id -un'"
    )
    job = out.strip().split(";")[0]
    assert job.isdigit(), out
    wait_for(
        lambda: job not in login.check_output("squeue -h -u alice -o %i").split(), timeout=60, what=f"job {job} done"
    )
    output = wait_for(lambda: login.run(f"cat {OUTPUT}").stdout, timeout=30, what="the job's output")
    login.run(f"rm -f {OUTPUT}")
    assert "token=lab-sudo-check" in output and "evil=unset" in output, output
    assert output.split()[-1] == "alice"
    assert hub.run(AS_HUB + "sudo -n -u bob /usr/bin/squeue -h -u bob").rc == 0
