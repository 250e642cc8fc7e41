"""Notebook runs' Slurm side (src/clusterhub/runs): parameters, the run checked by the spawner's rules, the batch
script (executed here by bash with fake `getent` and a fake papermill interpreter, so what it writes where is
seen, not restated), and the states, efficiency and failing cell read from Slurm's and papermill's output."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

import pytest
from test_hub_options import PARTS
from test_hub_options import PROFILES as HUB_PROFILES

from clusterhub.hub.request import OptionsError
from clusterhub.protocol import parse_sacct
from clusterhub.runs import cli, params, states
from clusterhub.runs import job as runjob

# the hub's own request tests' offer, and a Docker profile (not for runs)
PROFILES = [*HUB_PROFILES, {"slug": "ws", "display_name": "Workstation", "kind": "docker", "image": "ws"}]
IMAGES = [{"name": "python", "path": "/opt/clusterhub/images/python.sif"}]
NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "n = 1", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "print(n * n)", "outputs": []},
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def make(options=None, parameters=None, **kwargs):
    return runjob.build(
        options or {"profile": "small"},
        json.dumps(NOTEBOOK),
        {"n": 5} if parameters is None else parameters,
        profiles=PROFILES,
        partitions=PARTS,
        images=IMAGES,
        **kwargs,
    )


# --- parameters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        ("true", True),
        ("False", False),
        ("null", None),
        ('[1, 2.5, "a"]', [1, 2.5, "a"]),
        ('"5"', "5"),
        ("hello world", "hello world"),
        ("; rm -rf ~", "; rm -rf ~"),
        ("nan", "nan"),
    ],
)
def test_values_are_typed_as_a_user_means_them(text, value):
    assert params.parse_value(text) == value


def parsed(pairs: list[str]) -> dict:
    """-p words as the CLI splits them and the service types and checks them."""
    return params.check_parameters(params.typed(cli.assignments(pairs)))


def test_assignments_from_the_command_line():
    assert parsed(["alpha=0.5", "name=run 1", "ks=[1,2,3]"]) == {
        "alpha": 0.5,
        "name": "run 1",
        "ks": [1, 2, 3],
    }


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["1a=1"], "must be an identifier"),
        (["__import__('os')=1"], "must be an identifier"),
        (["a=[[1]]"], "a number, true/false, null, a string or a list of those"),
        (['a={"b": 1}'], "a number, true/false, null, a string or a list of those"),
        (["a={b"], "looks like JSON but is not"),
        (["a=[1,"], "looks like JSON but is not"),
        ([f"a={'x' * 5000}"], "at most 4096 characters"),
    ],
)
def test_bad_parameters_say_what_is_allowed(pairs, message):
    with pytest.raises(OptionsError, match=re.escape(message)):
        parsed(pairs)


@pytest.mark.parametrize(
    ("pairs", "message"), [(["alpha"], "must be NAME=VALUE"), (["a=1", "a=2"], "'a' is given twice")]
)
def test_malformed_assignments_are_refused_by_the_cli(pairs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cli.assignments(pairs)


def test_a_sweep_is_one_set_per_value():
    assert params.parameter_sets({"a": [1, 2, 3], "b": "x"}, "a") == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "x"},
        {"a": 3, "b": "x"},
    ]
    assert params.parameter_sets({"a": [1, 2]}) == [{"a": [1, 2]}]  # a list is a value unless swept
    with pytest.raises(OptionsError, match="not one of the parameters"):
        params.parameter_sets({"a": [1, 2]}, "b")
    with pytest.raises(OptionsError, match="must be a list of 2 to 1000 values"):
        params.parameter_sets({"a": 1}, "a")


# --- the run, checked by the spawner's rules -----------------------------------------------------------------


def test_a_run_gets_the_profiles_resources_and_the_images_path():
    job = make()
    assert (job.request.partition, job.request.cpus, job.request.memory_gb, job.request.runtime) == (
        "jupyter",
        1,
        2,
        "02:00:00",
    )
    assert job.image_path == "/opt/clusterhub/images/python.sif"
    assert runjob.RUN_ID_RE.match(job.run_id) and "-" in job.run_id  # jupyter-scheduler's routes need a hyphen
    assert job.parameter_sets == ({"n": 5},) and job.output_name(0) == "output.ipynb"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "custom", "partition": "jupyter", "cpus": 64}, "64 CPUs requested; partition jupyter allows 1"),
        ({"profile": "custom", "partition": "jupyter", "gpus": 1}, "partition jupyter has no GPUs"),
        ({"profile": "custom", "partition": "jupyter", "hours": 13}, "allows 0.25 to 12 hours"),
        ({"profile": "custom", "partition": "jupyter", "cpus": "2; id"}, "cpus must be a number"),
        ({"profile": "custom", "partition": "jupyter --uid=0"}, "unknown partition"),
        ({"profile": "small", "image": "../../etc/shadow"}, "unknown image"),
        ({"profile": "ws"}, "not a Slurm profile"),
    ],
)
def test_runs_are_bounded_by_the_same_limits_as_servers(options, message):
    with pytest.raises(OptionsError, match=re.escape(message)):
        make(options)


@pytest.mark.parametrize(
    ("notebook", "message"),
    [
        ("not json", "not a notebook (not JSON)"),
        (json.dumps({"cells": []}), "not a Jupyter notebook in format 4"),
        (json.dumps({**NOTEBOOK, "pad": "x" * (3 * 2**20)}), "runs take notebooks of at most 2 MiB"),
    ],
)
def test_what_is_not_a_notebook_is_refused(notebook, message):
    with pytest.raises(OptionsError, match=re.escape(message)):
        runjob.build({}, notebook, {}, profiles=PROFILES, partitions=PARTS, images=IMAGES)


def test_parameters_need_a_parameters_cell_and_names_are_checked():
    untagged = {**NOTEBOOK, "cells": [{**NOTEBOOK["cells"][0], "metadata": {}}]}
    with pytest.raises(OptionsError, match="no cell tagged 'parameters'"):
        runjob.build({}, json.dumps(untagged), {"n": 1}, profiles=PROFILES, partitions=PARTS, images=IMAGES)
    with pytest.raises(OptionsError, match="kernel"):
        make(kernel="python3 --KernelManager.x=1")
    with pytest.raises(OptionsError, match="is not a run id"):
        make(run_id="../../bob")


def test_the_directives_carry_only_validated_values():
    job = make({"profile": "onegpu"}, {"a": [0.1, 0.2, 0.3, 0.4]}, sweep="a")
    assert runjob.sbatch_directives(job) == [
        "--job-name=clusterhub-run",
        "--partition=gpu",
        "--cpus-per-task=4",
        "--mem=16G",
        "--time=04:00:00",
        f"--comment=clusterhub-run:{job.run_id}",
        "--output=/dev/null",
        "--chdir=/tmp",
        "--no-requeue",
        "--gres=gpu:1",
        "--array=0-3",
    ]
    script = runjob.batch_script(job)
    assert "apptainer exec --nv /opt/clusterhub/images/python.sif python3 - input.ipynb" in script


# --- the batch script, run by bash ---------------------------------------------------------------------------

FAKE_PAPERMILL = r"""#!{python}
# stands in for the job's `python - INPUT OUTPUT PARAMETERS KERNEL DATA` (papermill's API, read from standard input):
# checks that it was given that program, writes OUTPUT with the parameters (and the data's local paths) injected
# after the parameters cell, as papermill does; a notebook whose source says `raise` fails like papermill (exit 1)
import json, sys
assert sys.argv[1] == "-" and "papermill.execute_notebook(" in sys.stdin.read()
source, output, parameters, kernel, data = sys.argv[2:7]
params = json.load(open(parameters))
params.update(json.load(open(data)) if data else {{}})
nb = json.load(open(source))
at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
injected = "".join(f"{{k}} = {{v!r}}\n" for k, v in params.items())
nb["cells"].insert(at + 1, {{"cell_type": "code", "metadata": {{"tags": ["injected-parameters"]}}, "source": injected}})
json.dump(nb, open(output, "w"))
print("argv", json.dumps(sys.argv[1:]), "kernel", repr(kernel))
sys.exit(1 if "raise" in json.dumps(nb) else 0)
"""


@pytest.fixture
def run_script(tmp_path):
    """Run a batch script as sbatch would start it (task = SLURM_ARRAY_TASK_ID), with the user's home in tmp_path;
    returns (exit status, the run's directory)."""
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "getent").write_text(f"#!/bin/sh\necho 'alice:x:2001:2001::{home}:/bin/bash'\n")
    (bin_dir / "python").write_text(FAKE_PAPERMILL.format(python=sys.executable))
    for tool in ("getent", "python"):
        (bin_dir / tool).chmod(0o755)

    def run(job, task=None):
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "42"}
        if task is not None:
            env["SLURM_ARRAY_TASK_ID"] = str(task)
        script = runjob.batch_script(job, node_python=str(bin_dir / "python"))
        done = subprocess.run(["bash", "-s"], input=script, text=True, env=env, capture_output=True, check=False)
        return done.returncode, home / job.run_dir

    return run


def test_the_script_writes_the_run_into_the_users_private_directory(run_script):
    job = make({"profile": "small", "image": ""}, {"n": 5, "label": "it's; $(id) `x`"})
    job = runjob.RunJob(**{**job.__dict__, "image_path": ""})  # the node's environment
    status, run_dir = run_script(job)
    log = (run_dir / "job-0.log").read_text()
    assert status == 0, log
    assert json.loads((run_dir / "input.ipynb").read_text()) == NOTEBOOK
    assert json.loads((run_dir / "parameters-0.json").read_text()) == {"n": 5, "label": "it's; $(id) `x`"}
    out = json.loads((run_dir / "output.ipynb").read_text())
    assert out["cells"][1]["source"] == 'label = "it\'s; $(id) `x`"\nn = 5\n'
    assert "task 0, job 42" in log and "ended with status 0" in log
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700" and oct(run_dir.parent.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o077) == "0o0" for p in run_dir.iterdir())


def test_a_failing_notebook_fails_the_job_and_keeps_its_output(run_script):
    failing = {**NOTEBOOK, "cells": [*NOTEBOOK["cells"], {"cell_type": "code", "metadata": {}, "source": "raise"}]}
    job = runjob.build({}, json.dumps(failing), {"n": 1}, profiles=PROFILES, partitions=PARTS, images=[])
    status, run_dir = run_script(job)
    assert status == 1 and (run_dir / "output.ipynb").is_file()
    assert "ended with status 1" in (run_dir / "job-0.log").read_text()


def test_each_array_task_runs_its_own_value(run_script):
    job = runjob.build(
        {}, json.dumps(NOTEBOOK), {"n": [2, 3, 4]}, profiles=PROFILES, partitions=PARTS, images=[], sweep="n"
    )
    for task in range(3):
        status, run_dir = run_script(job, task)
        assert status == 0
    outputs = [json.loads((run_dir / f"output-{task}.ipynb").read_text()) for task in range(3)]
    assert [out["cells"][1]["source"] for out in outputs] == ["n = 2\n", "n = 3\n", "n = 4\n"]
    status, _ = run_script(job, 7)
    assert status == 2


def test_the_script_holds_no_user_text_outside_base64():
    job = make(parameters={"n": "$(touch /tmp/pwned)"})
    script = runjob.batch_script(job)
    assert "pwned" not in script and "$(touch" not in script
    encoded = re.search(r"0\) params='([A-Za-z0-9+/=]+)'", script).group(1)
    assert json.loads(base64.b64decode(encoded)) == {"n": "$(touch /tmp/pwned)"}


# --- states, efficiency, the failing cell ---------------------------------------------------------------------


def test_queue_states():
    assert states.from_squeue([]) is None
    assert states.from_squeue([("7", "PENDING", "Resources")]) == states.RunState("QUEUED", "queued (Resources)")
    assert states.from_squeue([("7", "RUNNING", "None")]) == states.RunState("IN_PROGRESS", "running")
    array = [("7_0", "RUNNING", "None"), ("7_1", "PENDING", "Priority"), ("7_2", "RUNNING", "None")]
    assert states.from_squeue(array) == states.RunState("IN_PROGRESS", "running (2 of 3 tasks running)")


def sacct(*rows: str) -> list[dict]:
    return parse_sacct("\n".join(rows))


@pytest.mark.parametrize(
    ("state", "exit_code", "status", "words"),
    [
        ("COMPLETED", "0:0", "COMPLETED", "completed"),
        ("FAILED", "1:0", "FAILED", "exit code 1"),
        ("TIMEOUT", "0:15", "FAILED", "time limit"),
        ("OUT_OF_MEMORY", "0:125", "FAILED", "out of memory"),
        ("CANCELLED by 2001", "0:15", "STOPPED", "stopped"),
        ("NODE_FAIL", "0:0", "FAILED", "node failed"),
    ],
)
def test_final_states_in_the_users_words(state, exit_code, status, words):
    got = states.from_sacct(sacct(f"9|{state}|{exit_code}|00:01:00|00:15:00|00:30|1|1G||cpu=1|None"))
    assert got.status == status and words in got.message


def test_no_final_record_yet_means_ask_again():
    assert states.from_sacct([]) is None
    assert states.from_sacct(sacct("9|RUNNING|0:0|00:01:00|00:15:00|00:30|1|1G||cpu=1|None")) is None


def test_an_array_is_its_tasks_together():
    done = "9_{}|COMPLETED|0:0|00:01:00|00:15:00|00:30|1|1G||cpu=1|None"
    assert states.from_sacct(sacct(*(done.format(i) for i in range(4)))).message == "completed (4 tasks)"
    failed = sacct(done.format(0), "9_1|FAILED|1:0|00:01:00|00:15:00|00:30|1|1G||cpu=1|None")
    assert states.from_sacct(failed) == states.RunState(
        "FAILED", "1 of 2 tasks failed: the notebook failed (exit code 1): see the failing cell and the job log"
    )
    stopped = sacct(done.format(0), "9_1|CANCELLED by 2001|0:15|00:01:00|00:15:00|00:30|1|1G||cpu=1|None")
    assert states.from_sacct(stopped) == states.RunState("STOPPED", "stopped (1 of 2 completed)")


def test_efficiency_from_accounting():
    rows = sacct(
        "9|COMPLETED|0:0|00:10:00|02:00:00|00:05:00|2|4G||billing=1,cpu=2,mem=4G,node=1|None",
        "9.batch|COMPLETED|0:0|00:10:00||00:05:00|2||512M||",
        "9.extern|COMPLETED|0:0|00:10:00||00:00:00|2||0||",
    )
    eff = states.efficiency(rows)
    assert (eff.elapsed_s, eff.time_limit_s, eff.cpus, eff.gpus) == (600, 7200, 2, 0)
    assert eff.cpu_efficiency == pytest.approx(300 / 1200)
    assert eff.memory_used == pytest.approx(0.125)
    assert eff.advice() == [
        "it used 8% of its time limit: ask for fewer hours to start sooner",
        "its 2 CPUs were 25% busy: ask for fewer CPUs",
        "its peak memory was 12% of what it asked for: ask for less",
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [("1-02:03:04", 93784), ("02:03:04", 7384), ("03:04.500", 184.5), ("UNLIMITED", None), ("", None)],
)
def test_slurm_durations(text, value):
    assert states.seconds(text) == value


def test_the_failing_cell_with_its_traceback():
    executed = {
        "cells": [
            {"cell_type": "markdown", "source": "papermill's error banner"},
            {
                "cell_type": "code",
                "source": ["x = 1\n", "1 / 0"],
                "outputs": [
                    {
                        "output_type": "error",
                        "ename": "ZeroDivisionError",
                        "evalue": "division by zero",
                        "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"],
                    },
                ],
            },
        ]
    }
    assert states.failed_cell(executed) == {
        "index": 1,
        "source": "x = 1\n1 / 0",
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "traceback": ["ZeroDivisionError: division by zero"],
    }
    assert states.failed_cell(NOTEBOOK) is None


def test_runs_import_nothing_of_the_hub_server():
    code = "import sys, clusterhub.runs.job, clusterhub.runs.states; print('jupyterhub' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert done.stdout.strip() == "False"


def test_the_jobs_papermill_program_compiles_and_uses_private_ipc():
    compile(runjob.PAPERMILL, "clusterhub-run papermill", "exec")
    assert '"transport": "ipc"' in runjob.PAPERMILL and "tempfile.mkdtemp(" in runjob.PAPERMILL
