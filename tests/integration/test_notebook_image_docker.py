"""notebook_image against the real Docker engine: build, no-change rerun, check mode/diff, a failed build that keeps
the previous image, and bad arguments that fail before any build.

The image (jupyterlab + papermill + ipykernel in a venv on the lab's base image) is built once per session;
the first build takes a few minutes on a small machine.  Run: .venv/bin/pytest -v tests/integration
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

COURSE = 'hpc-101 $HOME "quoted"'
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "id": "params",
            "metadata": {"tags": ["parameters"]},
            "execution_count": None,
            "outputs": [],
            "source": ["name = 'world'\n", "times = 1"],
        },
        {
            "cell_type": "code",
            "id": "greet",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": [
                "import os\n",
                "print(f\"hello {name} x{times * 7} from {os.environ['COURSE']} on {os.environ['NOTEBOOK_FLAVOUR']}\")",
            ],
        },
    ],
    "metadata": {"kernelspec": {"name": "course", "display_name": "Python (course)", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture(scope="session")
def spec(session_dir, base_image, image_name) -> dict:
    config = session_dir / "inputs" / "clusterhub-test.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('{"course": "hpc-101"}\n')
    return {
        "name": image_name,
        "base": base_image,
        "trust_host_ca": True,
        "kernels": [{"name": "course", "display_name": "Python (course)"}],
        "env": {"COURSE": COURSE, "NOTEBOOK_FLAVOUR": "notebook"},
        "files": [{"src": str(config), "dest": "/etc/jupyter/clusterhub-test.json", "mode": "0644"}],
        "user": {"name": "jovyan", "uid": 1000},
    }


@pytest.fixture(scope="session")
def built(run_module, spec):
    """The first build of the session (every other test relies on it)."""
    run = run_module(spec)
    assert run.rc == 0 and not run.get("failed"), f"first build failed: {run.get('msg')}\n{run.output[-4000:]}"
    return run


def docker_run(image: str, *argv: str, volume: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["docker", "run", "--rm", "--network", "none"]
    if volume:
        cmd += ["-v", volume, "-w", volume.split(":", 1)[1]]
    return subprocess.run([*cmd, image, *argv], check=False, capture_output=True, text=True, timeout=600)


def test_first_build_validates_and_runs_a_notebook(built, spec, session_dir, image_id_of, clusterhub_test_images):
    r = built
    assert r["changed"] is True and r["built"] is True
    assert r["build_seconds"] > 0 and r["size"] > 0
    assert [v["check"] for v in r["validation"]] == [
        "user",
        "jupyterlab",
        "papermill",
        "kernelspecs",
        "kernel course starts",
    ]
    assert all(v["ok"] for v in r["validation"]), r["validation"]
    name = spec["name"]
    assert image_id_of(name) == r["image_id"]
    labels = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert labels["org.clusterhub.spec-hash"] == r["hash"]
    assert base64.b64decode(labels["org.clusterhub.recipe"].removeprefix("base64:")).decode() == r["recipe"]
    assert not [t for t in clusterhub_test_images() if "clusterhub-tmp" in t], "the temporary tag was removed"

    # runs as the notebook user, with the environment and the copied file
    assert docker_run(name, "id", "-un").stdout.strip() == "jovyan"
    assert docker_run(name, "printenv", "COURSE").stdout.rstrip("\n") == COURSE
    assert docker_run(name, "cat", "/etc/jupyter/clusterhub-test.json").stdout == '{"course": "hpc-101"}\n'

    # a parameterised notebook, executed by papermill inside the image with the declared kernel
    work = session_dir / "papermill"
    work.mkdir()
    work.chmod(0o777)
    (work / "in.ipynb").write_text(json.dumps(NOTEBOOK))
    proc = docker_run(
        name,
        "papermill",
        "in.ipynb",
        "out.ipynb",
        "-p",
        "name",
        "clusterhub",
        "-p",
        "times",
        "6",
        volume=f"{work}:/work",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((work / "out.ipynb").read_text())
    assert out["metadata"]["kernelspec"]["name"] == "course"
    injected = [c for c in out["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and 'name = "clusterhub"' in "".join(injected[0]["source"])
    greet = next(c for c in out["cells"] if c.get("id") == "greet")
    text = greet["outputs"][0]["text"]  # nbformat stores multi-line strings as lists of lines
    text = "".join(text) if isinstance(text, list) else text
    assert text == f"hello clusterhub x42 from {COURSE} on notebook\n"


def test_second_run_does_not_build(built, run_module, spec, image_id_of):
    again = run_module(spec)
    assert again.rc == 0, again.get("msg")
    assert again["changed"] is False and again["built"] is False
    assert again["build_seconds"] == 0 and again["validation"] == [] and again["stdout"] == ""
    assert again["hash"] == built["hash"] == again["previous_hash"]
    assert again["image_id"] == built["image_id"] == image_id_of(spec["name"])


def test_check_mode_and_diff_build_nothing(built, run_module, spec, image_id_of):
    same = run_module(spec, check=True)
    assert same.rc == 0 and same["changed"] is False
    changed_spec = dict(spec, env=dict(spec["env"], EXTRA="1"))
    check = run_module(changed_spec, check=True, diff=True)
    assert check.rc == 0, check.get("msg")
    assert check["changed"] is True and check["built"] is False
    assert check["hash"] != built["hash"] and check["previous_hash"] == built["hash"]
    assert check["image_id"] == built["image_id"] == image_id_of(spec["name"])
    diff = check["diff"]
    diff = diff[0] if isinstance(diff, list) else diff
    assert diff["before"] == built["recipe"]
    assert 'ENV EXTRA="1"' in diff["after"] and 'ENV EXTRA="1"' not in diff["before"]


def test_failed_build_keeps_previous_image(built, run_module, spec, image_id_of, clusterhub_test_images):
    before = image_id_of(spec["name"])
    broken = dict(spec, apt_packages=["clusterhub-no-such-package"])
    run = run_module(broken)
    assert run.rc != 0 and run.get("failed") is True
    assert run["changed"] is False
    msg = run["msg"]
    assert f"docker build of {spec['name']} failed" in msg and "previous image is unchanged" in msg
    assert "Unable to locate package clusterhub-no-such-package" in msg
    tail = run["stdout"].splitlines()
    assert 0 < len(tail) <= 40 and any("clusterhub-no-such-package" in line for line in tail)
    assert run["rc"] not in (0, None)
    # the previous image is untouched and still works
    assert image_id_of(spec["name"]) == before == built["image_id"]
    lab = docker_run(spec["name"], "jupyter", "lab", "--version")
    assert lab.returncode == 0 and lab.stdout.strip()
    assert not [t for t in clusterhub_test_images() if "clusterhub-tmp" in t], "the failed temporary tag was removed"


BAD_ARGUMENTS = [
    ({"engine": "podman"}, "engine"),
    ({"user": {"name": "jovyan", "uid": 0}}, "user.uid"),
    ({"apt_packages": ["vim; rm -rf /"]}, "apt_packages[0]"),
    ({"apt_packages": ["git curl"]}, "apt_packages[0]"),
    ({"pip_packages": ["numpy", "pandas $(id)"]}, "pip_packages[1]"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"env": {"NOT-AN-IDENTIFIER": "x"}}, "env"),
    ({"kernels": [{"name": "Has Spaces"}]}, "kernels[0].name"),
]


def test_bad_arguments_fail_before_any_build(spec, session_dir, run_playbook, image_id_of, clusterhub_test_images):
    """All bad specs run in one playbook (ignore_errors); nothing is built, each message names its argument."""
    name = spec["name"].rsplit(":", 1)[0] + ":bad-arguments"
    good = {"name": name, "base": spec["base"]}
    tasks = [{"notebook_image": dict(good, **bad), "ignore_errors": True} for bad, _arg in BAD_ARGUMENTS]
    images_before = clusterhub_test_images()
    results, _rc, _seconds, output = run_playbook(session_dir / "bad", tasks)
    assert len(results) == len(BAD_ARGUMENTS), output[-3000:]
    for (bad, argument), result in zip(BAD_ARGUMENTS, results, strict=True):
        assert result.get("failed") is True, (bad, result)
        assert argument in result["msg"], (bad, result["msg"])
        assert "build" not in result.get("stdout", ""), result
    assert image_id_of(name) is None
    assert clusterhub_test_images() == images_before, "no image was built or tagged"
