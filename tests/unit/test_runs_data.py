"""A run's external data (src/clusterhub/runs/data.py): the places checked, the batch script's copy steps executed
by bash with the job's real copy program and fake rsync and WebDAV helpers (what lands where is seen, and the argv
rsync gets), the service's API and the CLI taking them, the inventory filter for the data hosts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import clusterhub_rules
import pytest
from test_runs import FAKE_PAPERMILL, NOTEBOOK, PARTS, PROFILES
from test_runs_service import call, make_service, submit_body

from clusterhub.hub.request import OptionsError
from clusterhub.runs import cli, data, job, states

HOSTS = [{"name": "storage", "address": "storage.example.org", "port": 22}]
WEBDAV = {"mount_dir": "WebDAV-Share", "mount": "/usr/local/bin/m", "umount": "/usr/local/bin/u"}


def item(name="indir", direction="input", host="storage", path="/srv/data/alice/in"):
    return {"name": name, "direction": direction, "host": host, "path": path}


def make(items, parameters=None, webdav=WEBDAV, notebook=NOTEBOOK, **kwargs):
    return job.build(
        {"profile": "small"},
        json.dumps(notebook),
        {"n": 5} if parameters is None else parameters,
        profiles=PROFILES,
        partitions=PARTS,
        images=[],
        data=items,
        data_hosts=HOSTS,
        webdav=webdav,
        **kwargs,
    )


# --- places checked ------------------------------------------------------------------------------------------


def test_places_are_normalised():
    checked = data.check_data(
        [
            item(path="/srv/data/alice/in/"),
            item("rel", path="results//run1/."),
            item("share", "output", "webdav", "/projects/out"),
        ],
        HOSTS,
        True,
        {},
    )
    assert [c.path for c in checked] == ["/srv/data/alice/in", "./results/run1", "projects/out"]
    assert checked[2].label() == "webdav:projects/out"


@pytest.mark.parametrize(
    ("items", "webdav", "message"),
    [
        ([item(host="elsewhere.example.org")], True, "host 'elsewhere.example.org' is not a data host of this site"),
        ([item(host="webdav")], False, "is not a data host of this site (storage)"),
        ([item(path="/srv/../etc/shadow")], True, "must not contain '..'"),
        ([item(host="webdav", path="../../.ssh")], True, "must not contain '..'"),
        ([item(path="-e sh -c id")], True, "must not start with '-'"),
        ([item(path="/srv/in\nx")], True, "printable characters"),
        ([item(path="/")], True, "names no file or directory"),
        ([item(name="n")], True, "data name n is also a parameter"),
        ([item(), item(direction="output")], True, "data name indir is also"),
        ([item(name="x; id")], True, "must be an identifier"),
        ([item(direction="both")], True, "direction must be input or output"),
        ([item(name=f"d{i}") for i in range(17)], True, "at most 16 inputs and outputs"),
        ({"name": "x"}, True, "data must be a list"),
        (["storage:/x"], True, "each data item must be"),
    ],
)
def test_bad_places_say_what_is_allowed(items, webdav, message):
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.check_data(items, HOSTS, webdav, {"n": 5})


def test_the_cli_words_name_a_host_and_a_path():
    assert data.parse_assignments(["indir=storage:/srv/x:y", "share=webdav:a b"], "input") == [
        item(path="/srv/x:y"),
        item("share", host="webdav", path="a b"),
    ]
    for word, message in (("indir", "must be NAME=HOST:PATH"), ("indir=/srv/x", "must be HOST:PATH")):
        with pytest.raises(OptionsError, match=message):
            data.parse_assignments([word], "input")


def test_site_hosts_are_checked():
    assert data.check_hosts([{"name": "storage"}]) == [{"name": "storage", "address": "storage", "port": 22}]
    for bad, message in (
        ({"name": "webdav"}, "other than webdav"),
        ({"name": "storage", "address": "-oProxyCommand=x"}, "must be a host name"),
        ({"name": "storage", "port": 0}, "must be 1 to 65535"),
    ):
        with pytest.raises(ValueError, match=message):
            data.check_hosts([bad])


def test_the_inventory_filter_derives_a_data_host():
    assert clusterhub_rules.clusterhub_data_host({"inventory_hostname": "storage"}) == {
        "name": "storage",
        "address": "storage",
        "port": 22,
        "known_name": "storage",
    }
    place = clusterhub_rules.clusterhub_data_host(
        {"inventory_hostname": "storage", "ssh_data_address": "10.0.0.5", "ssh_data_port": "2222"}
    )
    assert place["known_name"] == "[10.0.0.5]:2222" and place["port"] == 2222
    assert clusterhub_rules.clusterhub_data_host_errors({"inventory_hostname": "storage"}) == []
    (error,) = clusterhub_rules.clusterhub_data_host_errors({"inventory_hostname": "storage", "ssh_data_port": 70000})
    assert "port 70000 must be 1 to 65535" in error and "ssh_data_port of storage" in error


# --- the job's copy steps, executed ---------------------------------------------------------------------------

# rsync as the job calls it, with a directory standing for each host: HOST:PATH is <remote>/<PATH>; records argv
FAKE_RSYNC = """#!{python}
import json, os, shutil, sys
remote = {remote!r}
with open(os.path.join(remote, "rsync.argv"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[sys.argv.index("--") + 1:]
def local(word):
    host, sep, path = word.partition(":")
    return os.path.join(remote, path.lstrip("/")) if sep else word
src, dst = (local(w) for w in args)
if not os.path.exists(src.rstrip("/")):  # what rsync 3.4 says (seen in the lab), its reason first
    print(f'rsync: [sender] link_stat "{{src}}" failed: No such file or directory (2)', file=sys.stderr)
    print("rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1956)"
          " [Receiver=3.5.0]", file=sys.stderr)
    print("rsync: [Receiver] write error: Broken pipe (32)", file=sys.stderr)
    sys.exit(23)
if src.endswith("/"):
    shutil.copytree(src, dst, dirs_exist_ok=True)
elif os.path.isdir(src):
    shutil.copytree(src, os.path.join(dst, os.path.basename(src)), dirs_exist_ok=True)
else:
    shutil.copy(src, dst)
"""


@pytest.fixture
def run_with_data(tmp_path):
    """Run a batch script with data: the user's home and the data host's files in tmp_path, rsync and the WebDAV
    helpers fake (the mount helper only notes its call: the space is a directory of the home), cp real."""
    home = tmp_path / "home" / "alice"
    remote = tmp_path / "storage"
    bin_dir = tmp_path / "bin"
    for d in (home / "WebDAV-Share", remote, bin_dir):
        d.mkdir(parents=True)
    (bin_dir / "getent").write_text(f"#!/bin/sh\necho 'alice:x:{os.getuid()}:{os.getgid()}::{home}:/bin/bash'\n")
    (bin_dir / "python").write_text(FAKE_PAPERMILL.format(python=sys.executable))
    (bin_dir / "rsync").write_text(FAKE_RSYNC.format(python=sys.executable, remote=str(remote)))
    (bin_dir / "id").write_text('#!/bin/sh\n[ "$1" = -un ] && echo alice || exec /usr/bin/id "$@"\n')
    for helper in ("mount", "umount"):
        (bin_dir / helper).write_text(f'#!/bin/sh\necho "{helper} $*" >>{tmp_path}/webdav.calls\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    webdav = {"mount_dir": "WebDAV-Share", "mount": str(bin_dir / "mount"), "umount": str(bin_dir / "umount")}

    def run(items, task=None, notebook=NOTEBOOK, terminate_after: str = "", ahead: bool = False, **kwargs):
        """terminate_after: once the log shows it, SIGTERM to every process of the job, as Slurm sends at a time
        limit or a stop; with `ahead`, USR1 to the batch shell alone, as Slurm's --signal=B:USR1@... does."""
        built = make(items, webdav=webdav, notebook=notebook, **kwargs)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "HOME": str(home)}
        if task is not None:
            env["SLURM_ARRAY_TASK_ID"] = str(task)
        script = job.batch_script(built, node_python=str(bin_dir / "python"), system_python=sys.executable)
        if not terminate_after:
            done = subprocess.run(["bash", "-s"], input=script, text=True, env=env, capture_output=True, check=False)
            return done.returncode, home / built.run_dir
        log = home / built.run_dir / "job-0.log"
        with subprocess.Popen(
            ["bash", "-s"], stdin=subprocess.PIPE, text=True, env=env, start_new_session=True
        ) as process:
            process.stdin.write(script)
            process.stdin.close()
            for _ in range(200):
                if log.is_file() and terminate_after in log.read_text():
                    break
                time.sleep(0.05)
            time.sleep(0.5)  # the notebook started
            if ahead:
                os.kill(process.pid, signal.SIGUSR1)
            else:
                os.killpg(process.pid, signal.SIGTERM)
            return process.wait(timeout=60), home / built.run_dir

    run.home, run.remote, run.tmp = home, remote, tmp_path
    return run


def injected(run_dir: Path, output: str = "output.ipynb") -> str:
    return json.loads((run_dir / output).read_text())["cells"][1]["source"]


def test_inputs_come_in_and_outputs_go_back(run_with_data):
    (run_with_data.remote / "srv/data/alice/in").mkdir(parents=True)
    (run_with_data.remote / "srv/data/alice/in/a.csv").write_text("1,2\n")
    (run_with_data.home / "WebDAV-Share/notes.txt").write_text("from the space\n")
    status, run_dir = run_with_data(
        [item(), item("notes", host="webdav", path="notes.txt"), item("results", "output", path="/srv/out/r1")]
    )
    log = (run_dir / "job-0.log").read_text()
    assert status == 0, log
    # the notebook gets each copy's local path as a parameter beside its own
    source = injected(run_dir)
    assert f"indir = {str(run_dir / 'data-0/indir/in')!r}" in source and "n = 5" in source
    assert f"notes = {str(run_dir / 'data-0/notes/notes.txt')!r}" in source
    assert f"results = {str(run_dir / 'data-0/results')!r}" in source
    assert (run_dir / "data-0/indir/in/a.csv").read_text() == "1,2\n"
    assert (run_dir / "data-0/notes/notes.txt").read_text() == "from the space\n"
    assert "input indir copied in from storage:/srv/data/alice/in" in log
    assert "output results written back to storage:/srv/out/r1" in log
    # every rsync: the user's key through ssh's own defaults, strict host keys, no prompt, options ended by --
    argvs = [json.loads(line) for line in (run_with_data.remote / "rsync.argv").read_text().splitlines()]
    assert argvs[0] == [
        "-a",
        "--protect-args",
        "-e",
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20 -p 22",
        "--",
        "storage.example.org:/srv/data/alice/in",
        f"{run_dir}/data-0/indir/",
    ]
    assert argvs[1][-3:] == ["--", f"{run_dir}/data-0/results/", "storage.example.org:/srv/out/r1/"]
    # the space was mounted for the copy, as alice, and unmounted after it
    calls = (run_with_data.tmp / "webdav.calls").read_text().splitlines()
    assert calls == [f"mount alice {run_with_data.home}/WebDAV-Share", f"umount {run_with_data.home}/WebDAV-Share"]


def test_outputs_go_back_also_when_the_notebook_failed(run_with_data):
    failing = {**NOTEBOOK, "cells": [*NOTEBOOK["cells"], {"cell_type": "code", "metadata": {}, "source": "raise"}]}
    status, run_dir = run_with_data([item("share", "output", "webdav", "out/run")], notebook=failing)
    assert status == 1  # the notebook's own failure, not the copy's
    assert (run_with_data.home / "WebDAV-Share/out/run").is_dir()
    log = (run_dir / "job-0.log").read_text()
    assert "output share written back to webdav:out/run" in log and "ended with status 1" in log


def test_an_input_that_cannot_be_copied_stops_the_run_before_the_notebook(run_with_data):
    status, run_dir = run_with_data([item(path="/srv/missing")])
    log = (run_dir / "job-0.log").read_text()
    assert status == data.EXIT_DATA
    assert not (run_dir / "output.ipynb").exists()  # papermill never ran
    assert (
        "clusterhub run: input indir could not be copied in from storage:/srv/missing: rsync: [sender] link_stat" in log
    )
    assert "check the path, and that your SSH key (~/.ssh) is authorized on storage" in log
    assert states._final("FAILED", "3:0") == states.RunState(
        "FAILED", "its external data could not be copied: the job log says which and why"
    )


def test_each_task_of_a_sweep_writes_back_into_its_own_directory(run_with_data):
    for task in range(2):
        status, run_dir = run_with_data(
            [item("results", "output", path="/srv/out/sweep")], task=task, parameters={"n": [1, 2]}, sweep="n"
        )
        assert status == 0
        assert f"results = {str(run_dir / f'data-{task}/results')!r}" in injected(run_dir, f"output-{task}.ipynb")
    assert sorted(p.name for p in (run_with_data.remote / "srv/out/sweep").iterdir()) == ["0", "1"]


def test_the_script_holds_no_place_outside_base64():
    script = job.batch_script(make([item(path="/srv/$(touch /tmp/pwned)/in")]))
    assert "pwned" not in script and "storage.example.org" not in script
    assert ".ssh/id_" not in script and "password" not in script


def test_the_copy_program_compiles():
    compile(data.COPY, "clusterhub-run copy", "exec")


# --- the service and the CLI --------------------------------------------------------------------------------


@pytest.fixture
def data_service(tmp_path, monkeypatch):
    places = tmp_path / "runs-data.json"
    places.write_text(json.dumps({"hosts": HOSTS, "webdav": WEBDAV}))
    return make_service(tmp_path, monkeypatch, data_file=str(places))


def test_the_service_takes_data_and_keeps_only_places(data_service):
    async def scenario(base):
        body = submit_body(inputs=["indir=storage:/srv/data/alice/in"], outputs=["results=webdav:out"])
        status, created = await call(base, "scheduler/jobs", method="POST", body=body)
        assert status == 201, created
        status, run = await call(base, f"scheduler/jobs/{created['job_id']}")
        assert run["data"] == [
            {"name": "indir", "direction": "input", "host": "storage", "path": "/srv/data/alice/in"},
            {"name": "results", "direction": "output", "host": "webdav", "path": "out"},
        ]
        status, page = await call(base, "")
        assert "HOST one of storage, webdav" in page
        # a host of nobody's choosing, a traversal, an option: refused with nothing submitted
        sbatches = len(data_service.slurm.calls)
        for words, message in (
            (["x=10.1.2.3:/etc"], "is not a data host of this site (storage, webdav)"),
            (["x=webdav:../../.ssh/id_ed25519"], "must not contain '..'"),
            (["x=storage:-oProxyCommand=id"], "must not start with '-'"),
            (["n=storage:/srv"], "also a parameter"),
        ):
            status, answer = await call(base, "scheduler/jobs", method="POST", body=submit_body(inputs=words))
            assert (status, message in answer["message"]) == (400, True), answer
        assert len(data_service.slurm.calls) == sbatches

    data_service.run(scenario)


def test_a_service_without_data_hosts_names_none(tmp_path, monkeypatch):
    service = make_service(tmp_path, monkeypatch)

    async def scenario(base):
        status, answer = await call(base, "scheduler/jobs", method="POST", body=submit_body(inputs=["x=storage:/a"]))
        assert status == 400 and "none: this site declares no data hosts" in answer["message"]

    service.run(scenario)


def test_the_cli_sends_inputs_and_outputs(tmp_path):
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps(NOTEBOOK))
    parser = cli._parser()
    cli.submit_arguments(parser)
    args = parser.parse_args([str(notebook), "--input", "a=storage:/x", "--output", "b=webdav:y"])
    body = cli.submit_body(args)
    assert body["inputs"] == ["a=storage:/x"] and body["outputs"] == ["b=webdav:y"]
    assert cli.first_word(["--input", "a=storage:/x", "nb.ipynb"]) == "nb.ipynb"


def test_a_failed_run_without_a_failing_cell_shows_the_logs_last_words():
    line = cli.describe(
        {
            "job_id": "r",
            "status": "FAILED",
            "name": "nb",
            "status_message": "its external data could not be copied: the job log says which and why",
            "failed_cell": None,
            "log_tail": "a\nclusterhub run: input indir could not be copied in from storage:/x: denied",
        }
    )
    assert line.endswith("  > clusterhub run: input indir could not be copied in from storage:/x: denied")


def test_the_cli_runs_alone_with_the_sites_settings(tmp_path):
    """The login nodes get cli.py as one file: the system Python, isolated, without the clusterhub package, reads
    the site's URL from run.json and says which token is missing."""
    site = tmp_path / "run.json"
    site.write_text(json.dumps({"url": "https://hub.example.org/services/runs/", "cacert": ""}))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLUSTERHUB_RUN_CONFIG": str(site)}
    source = Path(cli.__file__)
    done = subprocess.run(
        ["/usr/bin/python3", "-I", str(source), "list"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "a hub API token (from the hub's token page" in done.stderr, done.stderr
    assert "~/.config/clusterhub/token" in done.stderr and "--url" in done.stderr
    assert source.read_text().startswith("#!/usr/bin/python3\n")


def test_outputs_go_back_when_slurm_ends_the_notebook(run_with_data, tmp_path):
    """A time limit or a stop: Slurm sends SIGTERM to the job's processes, then SIGKILL after KillWait; the
    script outlives the notebook and writes the outputs back in between."""
    fake = tmp_path / "bin/python"  # a notebook that would take a minute
    fake.write_text(fake.read_text().replace("import json, sys", "import json, sys, time; time.sleep(60)"))
    status, run_dir = run_with_data([item("results", "output", path="/srv/out/late")], terminate_after="task 0, job 42")
    log = (run_dir / "job-0.log").read_text()
    assert status == 143, log  # the notebook's end by SIGTERM, as Slurm records it
    assert "got SIGTERM (a time limit or a stop): writing the outputs back" in log
    assert "output results written back to storage:/srv/out/late" in log
    assert (run_with_data.remote / "srv/out/late").is_dir()


def test_outputs_go_back_ahead_of_the_time_limit(run_with_data, tmp_path):
    """With outputs, Slurm tells the batch shell WRITE_BACK_LEAD_S before the time limit (USR1): the script stops
    the notebook and writes the outputs back then, so rsync is not limited to KillWait; the run says so."""
    fake = tmp_path / "bin/python"  # a notebook that would outlive its time
    fake.write_text(fake.read_text().replace("import json, sys", "import json, sys, time; time.sleep(60)"))
    items = [item("results", "output", path="/srv/out/early")]
    status, run_dir = run_with_data(items, terminate_after="task 0, job 42", ahead=True)
    log = (run_dir / "job-0.log").read_text()
    assert status == data.EXIT_TIME_LIMIT, log
    assert f"time limit in {data.WRITE_BACK_LEAD_S} s: stopping the notebook to write the outputs" in log
    assert "output results written back to storage:/srv/out/early" in log
    assert (run_with_data.remote / "srv/out/early").is_dir()
    script = job.batch_script(make(items))
    assert f"#SBATCH --signal=B:USR1@{data.WRITE_BACK_LEAD_S}" in script
    assert "--signal" not in job.batch_script(make([item()]))  # inputs only: nothing to write back
    final = states.from_sacct([{"JobID": "42", "State": "FAILED", "ExitCode": f"{data.EXIT_TIME_LIMIT}:0"}])
    assert final.status == states.FAILED and final.message.startswith("time limit reached")
