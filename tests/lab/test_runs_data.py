"""A notebook run's external data in the lab: a directory on the storage host, named by SSH host and path, copied in
with alice's own key and listed by the notebook; outputs written back to the storage host over SSH and into her
WebDAV space; the key nowhere another user can read; bob's job cannot use the same door to read alice's files."""

from __future__ import annotations

import json
import uuid

import pytest
from test_runs_service import api, create, finished, refused

pytestmark = pytest.mark.apptainer
DATA = "/srv/lab-data"
NOTEBOOK = """import os
names = sorted(os.listdir(indir))
print('listed', names)
total = sum(int(x) for x in open(os.path.join(indir, 'numbers.csv')).read().split(','))
for where in (results, shared):
    with open(os.path.join(where, 'total.txt'), 'w') as f:
        f.write(f'{total * n}\\n')
print('total', total * n)
"""


def user_key(login, user: str) -> str:
    """The user's own SSH key pair, made as the user in the shared home and authorized for the user (the storage host
    sees the same home); returns the private key's first line of key material."""
    login.check_output(
        f"runuser -u {user} -- sh -c 'umask 077; mkdir -p ~/.ssh; test -f ~/.ssh/id_ed25519 "
        f'|| ssh-keygen -q -t ed25519 -N "" -f ~/.ssh/id_ed25519; '
        'grep -qxF "$(cat ~/.ssh/id_ed25519.pub)" ~/.ssh/authorized_keys 2>/dev/null '
        "|| cat ~/.ssh/id_ed25519.pub >>~/.ssh/authorized_keys'"
    )
    return login.check_output(f"sed -n 2p ~{user}/.ssh/id_ed25519").strip()


@pytest.fixture(scope="module")
def alice_data(storage):
    """A directory of alice's on the storage host (0700, hers) with an input directory in it."""
    where = f"{DATA}/alice/{uuid.uuid4().hex[:8]}"
    storage.check_output(
        f"install -d -m 0755 {DATA} && install -d -m 0700 -o alice -g alice {DATA}/alice {where} {where}/in "
        f"&& printf 1,2,3 >{where}/in/numbers.csv && chown alice:alice {where}/in/numbers.csv"
    )
    return where


def test_inputs_over_ssh_are_listed_and_outputs_written_back(hub_as, login, storage, hub, alice_data):
    key = user_key(login, "alice")
    alice = hub_as("alice")
    share = f"runs-{uuid.uuid4().hex[:8]}"
    created = create(
        alice,
        NOTEBOOK,
        parameters={"n": 5},
        inputs=[f"indir=storage:{alice_data}/in"],
        outputs=[f"results=storage:{alice_data}/out", f"shared=webdav:{share}"],
    )
    run = finished(alice, created["job_id"], timeout=240)
    assert run["status"] == "COMPLETED", run
    assert [d["name"] for d in run["data"]] == ["indir", "results", "shared"]
    out = json.dumps(api(alice, "GET", f"/jobs/{created['job_id']}/files/output.ipynb").json())
    assert "listed ['numbers.csv']" in out and "total 30" in out
    # written back, as alice's files, on the storage host and in her WebDAV space there
    assert storage.check_output(f"cat {alice_data}/out/total.txt") == "30"
    assert storage.check_output(f"stat -c %U {alice_data}/out/total.txt") == "alice"
    assert storage.check_output(f"cat /srv/webdav/alice/{share}/total.txt") == "30"
    # the key is in no place another user could read: not the service's records, not the job script Slurm keeps,
    # not the run's files; bob cannot read it
    job = created["slurm_job_id"]
    assert hub.run(f"grep -c -F -- '{key}' /var/lib/clusterhub-runs/runs.sqlite").stdout.strip() == "0"
    script = login.check_output(f"scontrol write batch_script {job} -")
    assert key not in script and "OPENSSH PRIVATE KEY" not in script and alice_data not in script
    assert login.run(f"grep -r -l -F -- '{key}' ~alice/.clusterhub/runs/{created['job_id']}").stdout == ""
    assert login.run("runuser -u bob -- cat ~alice/.ssh/id_ed25519").rc != 0
    # nor the copies in alice's run directory, from the node the job ran on
    assert login.run(f"runuser -u bob -- ls ~alice/.clusterhub/runs/{created['job_id']}/data-0").rc != 0
    # what Slurm shows bob of the job (slurm.conf has no PrivateData=jobs: squeue and scontrol list every job) holds
    # neither the key nor the places
    seen = login.run(f"runuser -u bob -- scontrol show job -d {job}").stdout
    assert key not in seen and alice_data not in seen and "storage" not in seen


@pytest.mark.security
def test_bobs_run_cannot_read_alices_data_and_bad_places_submit_nothing(hub_as, login, storage, alice_data):
    user_key(login, "bob")  # bob's own key works for bob: the refusal below is the storage host's, by ownership
    bob = hub_as("bob")
    created = create(bob, "print(sorted(__import__('os').listdir(stolen)))", inputs=[f"stolen=storage:{alice_data}/in"])
    run = finished(bob, created["job_id"], timeout=240)
    assert run["status"] == "FAILED" and "external data could not be copied" in run["status_message"], run
    assert "input stolen could not be copied in from storage" in run["log_tail"]
    assert "Permission denied" in run["log_tail"]
    assert storage.check_output(f"cat {alice_data}/in/numbers.csv") == "1,2,3"
    assert login.run(f"runuser -u bob -- ls ~bob/.clusterhub/runs/{created['job_id']}/data-0/stolen").stdout == ""
    # another host, a traversal, an ssh option, a variable that is a parameter: refused, nothing submitted
    before = login.check_output("squeue -h --name=clusterhub-run -o %i | sort")
    for words, message in [
        (["x=login:/etc"], "is not a data host of this site (storage, webdav)"),
        (["x=webdav:../alice/secret"], "must not contain '..'"),
        (["x=storage:-oProxyCommand=touch /tmp/pwned"], "must not start with '-'"),
        (["n=storage:/srv"], "also a parameter"),
    ]:
        refused(bob, {"parameters": {"n": 1}, "inputs": words}, message)
    assert login.check_output("squeue -h --name=clusterhub-run -o %i | sort") == before
