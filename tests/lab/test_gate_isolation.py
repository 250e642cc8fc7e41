"""Remote HPC mode: hpc-gate runs nothing a job can write (issue 13, item 1).

The hub logs in to the login node as clusterhub-gate, not as jupyterhpc, the account its jobs run as. A
real job of the shared-account partition (hpc) plants everything a login as jupyterhpc would run: shell
startup files, ~/.ssh/rc, a .pth file and usercustomize in its user site-packages, fake sbatch commands on a
PATH its ~/.profile sets. Polls, spawns and stops through the gate keep working; none of the planted files
runs (each would leave a marker in the login node's /tmp). The job account has no sudo rule of its own left
(it used to reach the users' own accounts) and no SSH login.
"""

from __future__ import annotations

import shlex

import pytest
from conftest import PLAYBOOK, wait_for
from test_remote import REMOTE, remote_jobs
from test_tunnel import HUB_SSH

pytestmark = [
    pytest.mark.remote,
    pytest.mark.security,
    pytest.mark.skipif(PLAYBOOK != "playbooks/site.yml", reason="the scenario did not converge the hub"),
]

HOME = "/home/jupyterhpc"
GATE = "/usr/local/libexec/clusterhub/hpc-gate"
MARK = "/tmp/clusterhub-gate-marker-"
# what the job plants, each file creating its own marker if anything ever runs it
PLANTED = {
    ".bashrc": f"touch {MARK}bashrc\n",
    ".profile": f"touch {MARK}profile\nexport PATH=$HOME/bin:$HOME/.local/bin:$PATH PYTHONPATH=$HOME/.attack\n",
    ".bash_profile": f"touch {MARK}bash_profile\n",
    ".ssh/rc": f"touch {MARK}sshrc\n",
    ".ssh/environment": f"BASH_ENV={HOME}/.bashrc\n",
    "bin/sbatch": f'#!/bin/sh\ntouch {MARK}sbatch\nexec /usr/bin/sbatch "$@"\n',
    ".local/bin/sbatch": f'#!/bin/sh\ntouch {MARK}local-sbatch\nexec /usr/bin/sbatch "$@"\n',
    ".local/bin/squeue": f'#!/bin/sh\ntouch {MARK}squeue\nexec /usr/bin/squeue "$@"\n',
    ".attack/sitecustomize.py": f"open('{MARK}pythonpath', 'w')\n",
}
PTH = f"import os; open('{MARK}pth', 'w')\n"
USERCUSTOMIZE = f"open('{MARK}usercustomize', 'w')\n"


def plant_script(user_site: str) -> str:
    """The job's script: write every file above into the account's home (shared with the login node)."""
    lines = ["set -e"]
    for name, body in {
        **PLANTED,
        f"{user_site}/clusterhub-attack.pth": PTH,
        f"{user_site}/usercustomize.py": USERCUSTOMIZE,
    }.items():
        path = f"$HOME/{name}"
        lines.append(f'mkdir -p "$(dirname {path})" && printf %s {shlex.quote(body)} >> {path}')
    lines.append("chmod +x $HOME/bin/sbatch $HOME/.local/bin/sbatch $HOME/.local/bin/squeue")
    lines.append("echo planted")
    return "\n".join(lines)


@pytest.fixture
def planted(login, rnode):
    """jupyterhpc's home as a hostile job of the shared account leaves it; restored afterwards."""
    user_site = rnode.check_output(
        "runuser -u jupyterhpc -- python3 -c 'import site; print(site.getusersitepackages())'"
    )
    user_site = user_site.removeprefix(HOME + "/")
    saved = [name for name in (".bashrc", ".profile", ".bash_profile") if login.file(f"{HOME}/{name}").exists]
    login.check_output(
        f"cd {HOME} && tar -cf /tmp/clusterhub-gate-dotfiles.tar {' '.join(saved) or '--files-from=/dev/null'}"
    )
    login.run(f"rm -f {MARK}*")
    script = plant_script(user_site)
    out = login.check_output(
        "runuser -u jupyterhpc -- sbatch -W -p hpc -J plant -o /dev/null --chdir=/tmp --wrap " + shlex.quote(script)
    )
    assert "Submitted batch job" in out
    # the job really wrote them, on rnode1, into the home the login node sees
    assert MARK + "bashrc" in login.file(f"{HOME}/.bashrc").content_string
    assert login.file(f"{HOME}/{user_site}/clusterhub-attack.pth").exists
    yield user_site
    planted_paths = " ".join(f"{HOME}/{name}" for name in PLANTED)
    login.check_output(
        f"rm -rf {planted_paths} {HOME}/{user_site}/clusterhub-attack.pth {HOME}/{user_site}/usercustomize.py"
        f" {HOME}/.attack && tar -C {HOME} -xpf /tmp/clusterhub-gate-dotfiles.tar && rm -f {MARK}*"
    )


def markers(host) -> list[str]:
    return host.check_output(f"ls {MARK}* 2>/dev/null || true").split()


def test_nothing_a_job_plants_in_the_job_accounts_home_runs_at_the_gate(planted, hub_as, hub, login):
    alice = hub_as("alice")
    alice.stop()
    try:
        # spawn (sbatch), the polls while it runs (squeue), the tunnel, then stop (scancel), all through the gate
        alice.start(options=REMOTE, timeout=240)
        assert alice.user_get("/api/status").status_code == 200
        job = remote_jobs(login)[0]
        # joblog too, straight through the gate as the hub runs it
        out = hub.run(f"{HUB_SSH} clusterhub-gate@login joblog {job}")
        assert out.rc == 0, out.stderr
    finally:
        alice.stop()
    wait_for(lambda: not remote_jobs(login), what="alice's remote job cancelled through the gate")
    assert markers(login) == [], "a file the job account's job wrote ran on the login node"
    assert markers(hub) == []


def test_the_gate_account_owns_nothing_and_the_job_account_has_no_login(hub, login):
    entry = login.user("clusterhub-gate")
    assert entry.shell == "/bin/sh" and entry.home == "/var/lib/clusterhub/hpc-gate"
    home = login.file(entry.home)
    assert (home.user, home.group, home.mode) == ("root", "root", 0o755)
    assert login.check_output(f"ls -A {entry.home}") == ""
    assert login.user("jupyterhpc").uid != entry.uid
    # the hub's key no longer logs in as the job account (sshd: AuthorizedKeysFile none for it)
    result = hub.run(f"{HUB_SSH} jupyterhpc@login squeue")
    assert result.rc == 255 and "Permission denied" in result.stderr, result.stderr
    # and the gate answers the hub's key
    result = hub.run(f"{HUB_SSH} clusterhub-gate@login squeue -h --name jupyterhub")
    assert result.rc == 0, result.stderr


def test_the_job_accounts_code_cannot_use_the_gates_sudo_rule(login):
    # code of a job of the shared account, on the login node: sudo to a user's own account, or to the gate
    for target in ("alice", "clusterhub-gate", "root"):
        result = login.run(f"runuser -u jupyterhpc -- sudo -n -u {target} {GATE} --run 'scancel 1'")
        assert result.rc != 0, result.stdout
        assert "hpc-gate" not in result.stderr or "refused" in result.stderr, result.stderr
    # the gate's account itself may: scancel of a job that does not exist answers as alice, through sudo
    result = login.run(f"runuser -u clusterhub-gate -- sudo -n -u alice {GATE} --run 'scancel 999999'")
    assert "sudo" not in result.stderr and "refused" not in result.stderr, result.stderr
    # ... and never to a system account, root or one outside the users' group
    for target in ("root", "slurm", "munge", "nobody"):
        result = login.run(f"runuser -u clusterhub-gate -- sudo -n -u {target} {GATE} --run 'scancel 999999'")
        assert result.rc != 0 and "sudo" in result.stderr, (target, result.stderr)
