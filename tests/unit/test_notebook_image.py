"""Unit tests of the notebook_image module's plain-Python core (module_utils/clusterhub_image_*.py) and of the
module's documentation/argument_spec, without Ansible running anything and without Docker or Apptainer:
the engines are driven by fake runners that model the CLIs' behaviour."""

from __future__ import annotations

import importlib
import json
import os
import shlex
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.clusterhub_image_build import ensure_image, evaluate_check, validation_checks
from ansible.module_utils.clusterhub_image_engine import (
    LOG_TAIL_LINES,
    RECIPE_LABEL,
    ApptainerEngine,
    BuildError,
    DockerEngine,
    decode_recipe_label,
    encode_recipe_label,
    parse_apptainer_labels,
    tail_lines,
)
from ansible.module_utils.clusterhub_image_recipe import (
    HASH_LABEL,
    add_hash_label,
    apptainer_header,
    apt_package_list,
    plan_inputs,
    render_apptainer_def,
    render_dockerfile,
    spec_hash,
    stage_inputs,
)
from ansible.module_utils.clusterhub_image_spec import (
    DEFAULT_MIRROR,
    DEFAULT_USER,
    OPTION_DEFAULTS,
    SpecError,
    read_repo,
    split_tag,
    validate_spec,
)

BASE = "clusterhub-lab/debian:bookworm"


def spec_of(**params):
    params.setdefault("name", "clusterhub-test/nb:dev")
    if "debootstrap" not in params:
        params.setdefault("base", BASE)
    return validate_spec(params)


# ---------------------------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------------------------


def test_minimal_spec_is_normalised():
    spec = validate_spec({"name": "clusterhub-test/nb", "base": BASE})
    assert spec["name"] == "clusterhub-test/nb:latest"
    assert spec["user"] == {"name": "jovyan", "uid": 1000, "gid": 1000}
    assert spec["venv"] == "/opt/notebook"
    assert spec["notebook_packages"] == ["jupyterlab", "papermill", "ipykernel"]
    assert spec["ca_bundle"] is None
    assert spec["kernels"] == [] and spec["files"] == [] and spec["env"] == {}


def test_registry_with_port_keeps_its_tag():
    assert spec_of(name="registry.site:5000/nb/base:2024.1")["name"] == "registry.site:5000/nb/base:2024.1"
    assert spec_of(name="registry.site:5000/nb/base")["name"] == "registry.site:5000/nb/base:latest"
    assert split_tag("registry.site:5000/nb/base") == ("registry.site:5000/nb/base", "latest")
    assert split_tag("registry.site:5000/nb/base:7") == ("registry.site:5000/nb/base", "7")


@pytest.mark.parametrize(
    ("params", "argument"),
    [
        ({"engine": "podman"}, "engine"),
        ({"user": {"uid": 0}}, "user.uid"),
        ({"user": {"uid": 1000, "gid": 0}}, "user.gid"),
        ({"user": {"name": "Bad Name"}}, "user.name"),
        ({"user": {"uid": "abc"}}, "user.uid"),
        ({"apt_packages": ["vim", "git curl"]}, "apt_packages[1]"),
        ({"apt_packages": ["vim; rm -rf /"]}, "apt_packages[0]"),
        ({"apt_packages": ["$(id)"]}, "apt_packages[0]"),
        ({"apt_packages": ["vim|cat"]}, "apt_packages[0]"),
        ({"apt_packages": "vim"}, "apt_packages"),
        ({"pip_packages": ["numpy pandas"]}, "pip_packages[0]"),
        ({"pip_packages": ["numpy", "pandas;rm -rf /"]}, "pip_packages[1]"),
        ({"pip_packages": ["`id`"]}, "pip_packages[0]"),
        ({"pip_packages": ["numpy&&id"]}, "pip_packages[0]"),
        ({"pip_packages": ["requests @ https://x/y.whl"]}, "pip_packages[0]"),
        ({"notebook_packages": ["jupyterlab>=4 "]}, "notebook_packages[0]"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"FOO-BAR": "x"}}, "env"),
        ({"env": {"FOO BAR": "x"}}, "env"),
        ({"env": {"OK": "two\nlines"}}, "env.OK"),
        ({"env": {"PATH": "/x"}}, "env"),
        ({"kernels": [{"name": "Python 3"}]}, "kernels[0].name"),
        ({"kernels": [{"name": "a"}, {"name": "a"}]}, "kernels[1].name"),
        ({"kernels": [{"name": "k", "pip_packages": ["x y"]}]}, "kernels[0].pip_packages[0]"),
        ({"kernels": [{"name": "k", "venv": "relative/path"}]}, "kernels[0].venv"),
        ({"venv": "/opt/my venv"}, "venv"),
        ({"venv": "/"}, "venv"),
        ({"entrypoint": []}, "entrypoint"),
        ({"repo_dest": "srv/repo"}, "repo_dest"),
        ({"ca_bundle": "/etc/ssl/$(id).pem"}, "ca_bundle"),
        ({"pip_requirements": "/nonexistent/requirements.txt"}, "pip_requirements"),
        ({"repo": "/nonexistent/repo"}, "repo"),
        ({"trust_host_ca": True, "host_ca_bundle": "/nonexistent/ca.pem"}, "host_ca_bundle"),
        ({"files": [{"src": "/nonexistent/file", "dest": "/etc/x"}]}, "files[0].src"),
        ({"name": "Upper/Case:tag"}, "name"),
        ({"name": "site/nb@sha256:abc"}, "name"),
        ({"base": "not an image"}, "base"),
        ({"debootstrap": {"suite": "bookworm"}}, "debootstrap"),
        ({"base": BASE, "debootstrap": {"suite": "bookworm"}}, "base"),
        ({"no_such_option": 1}, "no_such_option"),
        ({"sif_compression": "bzip2"}, "sif_compression"),
    ],
)
def test_bad_arguments_name_the_argument(params, argument):
    with pytest.raises(SpecError) as err:
        spec_of(**params)
    assert err.value.argument == argument
    assert str(err.value).startswith(argument + ":")


def test_bad_file_arguments(tmp_path):
    src = tmp_path / "a.conf"
    src.write_text("x")
    for item, argument in [
        ({"src": str(src), "dest": "etc/a.conf"}, "files[0].dest"),
        ({"src": str(src), "dest": "/etc/a conf"}, "files[0].dest"),
        ({"src": str(src), "dest": "/etc/a.conf", "mode": "rwx"}, "files[0].mode"),
        ({"src": str(src), "dest": "/etc/a.conf", "owner": "root;id"}, "files[0].owner"),
    ]:
        with pytest.raises(SpecError) as err:
            spec_of(files=[item])
        assert err.value.argument == argument


@pytest.mark.parametrize(
    "pkg",
    ["numpy", "pandas==2.2.2", "jupyterlab>=4,<5", "dask[dataframe]", "a.b_c-d~=1.0", "x!=1.0.*", "torch==2.3+cpu"],
)
def test_pip_requirements_accepted(pkg):
    assert spec_of(pip_packages=[pkg])["pip_packages"] == [pkg]


@pytest.mark.parametrize(
    "pkg", ["vim", "g++", "libssl3:amd64", "python3=3.11.2-1+b1", "git/bookworm-backports", "r-base"]
)
def test_apt_names_accepted(pkg):
    assert spec_of(apt_packages=[pkg])["apt_packages"] == [pkg]


def test_apptainer_arguments(tmp_path):
    sif = str(tmp_path / "nb.sif")
    spec = validate_spec(
        {"engine": "apptainer", "name": sif, "debootstrap": {"suite": "bookworm"}, "user": {"uid": 1234}}
    )
    assert spec["debootstrap"] == {"suite": "bookworm", "mirror": DEFAULT_MIRROR, "include": []}
    assert spec["user"]["gid"] == 1234
    with pytest.raises(SpecError) as err:
        validate_spec({"engine": "apptainer", "name": str(tmp_path / "nb.img"), "base": "docker-daemon:" + BASE})
    assert err.value.argument == "name"
    with pytest.raises(SpecError) as err:
        validate_spec({"engine": "apptainer", "name": "/nonexistent-dir/nb.sif", "base": "docker-daemon:" + BASE})
    assert err.value.argument == "name"
    with pytest.raises(SpecError) as err:
        validate_spec({"engine": "apptainer", "name": sif, "base": BASE})  # a bare Docker name is ambiguous
    assert err.value.argument == "base"
    with pytest.raises(SpecError) as err:
        validate_spec(
            {"engine": "apptainer", "name": sif, "base": "docker-daemon:" + BASE, "debootstrap": {"suite": "x"}}
        )
    assert err.value.argument == "base"
    with pytest.raises(SpecError) as err:
        validate_spec({"engine": "apptainer", "name": sif, "debootstrap": {"suite": "book worm"}})
    assert err.value.argument == "debootstrap.suite"
    with pytest.raises(SpecError) as err:
        validate_spec({"engine": "apptainer", "name": sif, "debootstrap": {"suite": "bookworm", "mirror": "ftp:x"}})
    assert err.value.argument == "debootstrap.mirror"
    with pytest.raises(SpecError) as err:
        validate_spec({"name": "site/nb:1", "debootstrap": {"suite": "bookworm"}})
    assert err.value.argument == "debootstrap"


def test_apptainer_bases(tmp_path):
    sif = str(tmp_path / "nb.sif")
    base_sif = tmp_path / "base.sif"
    base_sif.write_bytes(b"SIF")
    norm = {
        "docker-daemon:" + BASE: "docker-daemon:" + BASE,
        "docker://debian:bookworm": "docker://debian:bookworm",
        str(base_sif): "localimage:" + str(base_sif),
        "localimage:" + str(base_sif): "localimage:" + str(base_sif),
    }
    for given, expected in norm.items():
        assert validate_spec({"engine": "apptainer", "name": sif, "base": given})["base"] == expected
    with pytest.raises(SpecError):
        validate_spec({"engine": "apptainer", "name": sif, "base": str(tmp_path / "missing.sif")})


# ---------------------------------------------------------------------------------------------------------------
# repo2docker folders
# ---------------------------------------------------------------------------------------------------------------


def make_repo(root, **files):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_repo_files_are_read(tmp_path):
    repo = make_repo(
        tmp_path / "lesson",
        **{
            "apt.txt": "# tools\ngit\n\nless  # pager\n",
            "requirements.txt": "numpy==1.26.4\n",
            "postBuild": "echo hi\n",
        },
    )
    info = read_repo(str(repo))
    assert info["apt_packages"] == ["git", "less"]
    assert info["requirements"] == "requirements.txt" and info["postbuild"] == "postBuild"
    spec = spec_of(repo=str(repo), apt_packages=["git", "vim"])
    assert apt_package_list(spec) == ["python3", "python3-venv", "git", "vim", "less"]
    dockerfile = render_dockerfile(spec)
    assert 'COPY ["repo", "/srv/repo"]' in dockerfile
    assert (
        "/opt/notebook/bin/pip install --no-cache-dir --disable-pip-version-check --progress-bar off "
        "-r requirements.txt" in dockerfile
    )
    assert "chmod +x postBuild" in dockerfile and "./postBuild" in dockerfile
    assert "chown -R 1000:1000 /srv/repo" in dockerfile


def test_repo_binder_folder_takes_precedence(tmp_path):
    repo = make_repo(tmp_path / "r", **{"requirements.txt": "x\n", "binder/apt.txt": "vim\n", "binder/postBuild": ""})
    info = read_repo(str(repo))
    assert info["apt_packages"] == ["vim"]
    assert info["requirements"] is None
    assert info["postbuild"] == "binder/postBuild"


@pytest.mark.parametrize(
    "name", ["environment.yml", "Pipfile", "runtime.txt", "install.R", "Project.toml", "Dockerfile"]
)
def test_unsupported_repo_files_fail_clearly(tmp_path, name):
    repo = make_repo(tmp_path / "r", **{name: "x\n", "requirements.txt": "numpy\n"})
    with pytest.raises(SpecError) as err:
        spec_of(repo=str(repo))
    assert err.value.argument == "repo"
    assert f"{name} is not supported" in str(err.value)


def test_bad_apt_txt_line(tmp_path):
    repo = make_repo(tmp_path / "r", **{"apt.txt": "vim\nfoo;bar\n"})
    with pytest.raises(SpecError, match=r"apt.txt line 2"):
        spec_of(repo=str(repo))


# ---------------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------------


def run_lines(dockerfile: str) -> list[str]:
    """The shell commands of every RUN (continuations joined)."""
    text = dockerfile.replace(" \\\n && ", " && ")
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def test_dockerfile_full_spec(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("pandas==2.2.2\n")
    conf = tmp_path / "jupyter_server_config.py"
    conf.write_text("c = get_config()\n")
    data = make_repo(tmp_path / "data", **{"a.csv": "1,2\n"})
    spec = spec_of(
        apt_packages=["git"],
        pip_packages=["numpy"],
        pip_requirements=str(req),
        kernels=[
            {"name": "course", "display_name": "Python (course)"},
            {"name": "ml", "venv": "/opt/ml", "pip_packages": ["scikit-learn"]},
        ],
        env={"COURSE": 'hpc $HOME "x" \\ y', "A_B": 1},
        files=[
            {"src": str(conf), "dest": "/etc/jupyter/jupyter_server_config.py", "mode": "0644"},
            {"src": str(data), "dest": "/srv/data", "owner": "jovyan:jovyan"},
        ],
        user={"name": "student", "uid": 2000, "gid": 3000},
        entrypoint=["jupyterhub-singleuser", "--ip=0.0.0.0"],
        ca_bundle="/etc/ssl/certs/ca-certificates.crt",
    )
    df = render_dockerfile(spec)
    lines = df.splitlines()
    assert lines[1] == f"FROM {BASE}"
    assert (
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt" in lines
    )
    assert "host-ca.crt" not in df  # ca_bundle alone does not copy the host's bundle
    runs = run_lines(df)
    assert runs[0].startswith("apt-get update && apt-get install -y --no-install-recommends python3 python3-venv git")
    assert "useradd -m -u 2000 -g 3000 -s /bin/bash student" in runs[1]
    assert 'COPY ["requirements/pip-requirements.txt", "/tmp/clusterhub-build/pip-requirements.txt"]' in lines
    assert runs[2] == (
        "python3 -m venv /opt/notebook && /opt/notebook/bin/pip install --no-cache-dir --disable-pip-version-check "
        "--progress-bar off jupyterlab papermill ipykernel numpy -r /tmp/clusterhub-build/pip-requirements.txt "
        "&& rm -rf /tmp/clusterhub-build"
    )
    assert "ENV PATH=/opt/notebook/bin:${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}" in lines
    assert runs[3] == (
        "/opt/notebook/bin/python -m ipykernel install --prefix /opt/notebook --name course "
        "--display-name 'Python (course)'"
    )
    assert runs[4].startswith("python3 -m venv /opt/ml && /opt/ml/bin/pip install")
    assert (
        "ipykernel scikit-learn && /opt/ml/bin/python -m ipykernel install --prefix /opt/notebook --name ml" in runs[4]
    )
    assert 'COPY ["files/0-jupyter_server_config.py", "/etc/jupyter/jupyter_server_config.py"]' in lines
    assert "chmod 0644 /etc/jupyter/jupyter_server_config.py" in runs
    assert 'COPY ["files/1-data", "/srv/data"]' in lines
    assert "chown -R jovyan:jovyan /srv/data" in runs
    # env: sorted, literal values (Dockerfile escapes for $, " and \)
    assert lines.index('ENV A_B="1"') < lines.index('ENV COURSE="hpc \\$HOME \\"x\\" \\\\ y"')
    assert lines[-4:] == [
        "WORKDIR /home/student",
        "USER 2000:3000",
        "ENTRYPOINT []",
        'CMD ["jupyterhub-singleuser", "--ip=0.0.0.0"]',
    ]
    # every RUN is valid POSIX shell
    for cmd in runs:
        shlex.split(cmd)


def test_dockerfile_trust_host_ca(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    df = render_dockerfile(spec_of(trust_host_ca=True, host_ca_bundle=str(ca)))
    lines = df.splitlines()
    copy_ca = 'COPY ["ca/host-ca.crt", "/etc/ssl/certs/ca-certificates.crt"]'
    assert 'COPY ["ca/host-ca.crt", "/usr/local/share/ca-certificates/clusterhub-build-host.crt"]' in lines
    assert copy_ca in lines
    env = "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"
    assert lines.index(copy_ca) < lines.index(env) < next(i for i, x in enumerate(lines) if x.startswith("RUN "))
    assert plan_inputs(spec_of(trust_host_ca=True, host_ca_bundle=str(ca))) == [("ca/host-ca.crt", str(ca))]


def test_dockerfile_without_ca_has_no_pip_cert():
    df = render_dockerfile(spec_of())
    assert "PIP_CERT" not in df and "REQUESTS_CA_BUNDLE" not in df


def test_rendering_is_deterministic(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("x")
    a = spec_of(env={"B": "2", "A": "1"}, files=[{"src": str(conf), "dest": "/etc/c.py"}])
    b = spec_of(env={"A": "1", "B": "2"}, files=[{"src": str(conf), "dest": "/etc/c.py"}])
    assert render_dockerfile(a) == render_dockerfile(b)
    assert render_apptainer_def(dict(a, engine="apptainer", base="docker-daemon:" + BASE)) == render_apptainer_def(
        dict(b, engine="apptainer", base="docker-daemon:" + BASE)
    )


def apptainer_spec(tmp_path, **params):
    params.setdefault("base", "docker-daemon:" + BASE)
    return validate_spec({"engine": "apptainer", "name": str(tmp_path / "nb.sif"), **params})


def test_apptainer_definition(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("numpy\n")
    conf = tmp_path / "c.py"
    conf.write_text("x")
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    spec = apptainer_spec(
        tmp_path,
        pip_requirements=str(req),
        files=[{"src": str(conf), "dest": "/etc/jupyter/c.py", "mode": "0600", "owner": "root:root"}],
        kernels=[{"name": "course"}],
        env={"COURSE": "it's $fine"},
        trust_host_ca=True,
        host_ca_bundle=str(ca),
    )
    text = render_apptainer_def(spec)
    assert text.splitlines()[1:3] == ["Bootstrap: docker-daemon", f"From: {BASE}"]
    assert "%labels" not in text
    sections = {}
    current = None
    for line in text.splitlines():
        if line.startswith("%"):
            current = line
            sections[current] = []
        elif current and line.strip():
            sections[current].append(line.strip())
    # %files: relative sources (apptainer build runs in the context), all staged under /opt/clusterhub-build
    assert sections["%files"] == [
        "ca/host-ca.crt /opt/clusterhub-build/ca/host-ca.crt",
        "requirements/pip-requirements.txt /opt/clusterhub-build/requirements/pip-requirements.txt",
        "files/0-c.py /opt/clusterhub-build/files/0-c.py",
    ]
    assert sections["%environment"] == [
        'export PATH="/opt/notebook/bin:$PATH"',
        "export PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
        "export COURSE='it'\"'\"'s $fine'",
    ]
    post = sections["%post"]
    assert post[0] == "set -eu"
    assert "install -D -m 0644 /opt/clusterhub-build/ca/host-ca.crt /etc/ssl/certs/ca-certificates.crt" in post
    assert "apt-get install -y --no-install-recommends python3 python3-venv" in post
    assert any("useradd -m -u 1000 -g 1000" in c for c in post)
    assert (
        "/opt/notebook/bin/pip install --no-cache-dir --disable-pip-version-check --progress-bar off jupyterlab "
        "papermill ipykernel -r /opt/clusterhub-build/requirements/pip-requirements.txt"
    ) in post
    assert (
        "/opt/notebook/bin/python -m ipykernel install --prefix /opt/notebook --name course --display-name course"
        in post
    )
    assert "cp -a /opt/clusterhub-build/files/0-c.py /etc/jupyter/c.py" in post
    assert post[-3:] == [
        "chmod 0600 /etc/jupyter/c.py",
        "chown root:root /etc/jupyter/c.py",
        "rm -rf /opt/clusterhub-build",
    ]
    assert sections["%runscript"] == ['exec jupyter lab --ip=0.0.0.0 --port=8888 --no-browser "$@"']
    labelled = add_hash_label(text, "f" * 64)
    assert labelled.endswith(f"%labels\n    org.clusterhub.spec-hash {'f' * 64}\n")


def test_apptainer_headers(tmp_path):
    base_sif = tmp_path / "base.sif"
    base_sif.write_bytes(b"SIF")
    head = apptainer_header
    assert head(apptainer_spec(tmp_path, base=str(base_sif))) == ["Bootstrap: localimage", f"From: {base_sif}"]
    assert head(apptainer_spec(tmp_path, base="docker://debian:bookworm")) == [
        "Bootstrap: docker",
        "From: debian:bookworm",
    ]
    boot = apptainer_spec(
        tmp_path,
        base=None,
        debootstrap={"suite": "trixie", "mirror": "http://mirror.site/debian", "include": ["ca-certificates"]},
    )
    assert head(boot) == [
        "Bootstrap: debootstrap",
        "OSVersion: trixie",
        "MirrorURL: http://mirror.site/debian",
        "Include: ca-certificates",
    ]
    assert "%files" not in render_apptainer_def(boot)


def test_apptainer_repo_and_folders(tmp_path):
    repo = make_repo(tmp_path / "lesson", **{"requirements.txt": "numpy\n", "postBuild": "true\n"})
    data = make_repo(tmp_path / "data", **{"x.txt": "x"})
    spec = apptainer_spec(tmp_path, repo=str(repo), files=[{"src": str(data), "dest": "/srv/data"}])
    text = render_apptainer_def(spec)
    assert "    repo /opt/clusterhub-build/repo\n" in text
    assert "    cp -a /opt/clusterhub-build/repo/. /srv/repo/\n" in text
    assert "    cd /srv/repo\n" in text and "    ./postBuild\n" in text
    assert "    cp -a /opt/clusterhub-build/files/0-data/. /srv/data/\n" in text


# ---------------------------------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------------------------------


def test_hash_tracks_recipe_inputs_and_base(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    inputs = [("files/0-a.txt", str(f))]
    h1 = spec_hash("docker", "FROM x\n", inputs, "sha256:1")
    assert h1 == spec_hash("docker", "FROM x\n", inputs, "sha256:1")
    assert h1 != spec_hash("docker", "FROM y\n", inputs, "sha256:1")
    assert h1 != spec_hash("docker", "FROM x\n", inputs, "sha256:2")
    assert h1 != spec_hash("apptainer", "FROM x\n", inputs, "sha256:1")
    f.write_text("two")
    assert h1 != spec_hash("docker", "FROM x\n", inputs, "sha256:1")
    f.write_text("one")
    assert h1 == spec_hash("docker", "FROM x\n", inputs, "sha256:1")
    f.chmod(0o755)  # the executable bit matters (postBuild, scripts)
    assert h1 != spec_hash("docker", "FROM x\n", inputs, "sha256:1")


def test_hash_of_a_folder(tmp_path):
    repo = make_repo(tmp_path / "r", **{"a.txt": "a", "sub/b.txt": "b"})
    inputs = [("repo", str(repo))]
    h1 = spec_hash("docker", "R", inputs)
    (repo / ".git").mkdir()
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert spec_hash("docker", "R", inputs) == h1, ".git is not part of the image nor the hash"
    (repo / "sub" / "b.txt").write_text("B")
    h2 = spec_hash("docker", "R", inputs)
    assert h2 != h1
    (repo / "sub" / "c.txt").write_text("")
    assert spec_hash("docker", "R", inputs) != h2
    os.rename(repo / "sub" / "c.txt", repo / "sub" / "d.txt")
    assert spec_hash("docker", "R", inputs) not in (h1, h2)


def test_hash_ignores_host_location_of_inputs(tmp_path):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "c.py").write_text("same")
    a = spec_of(files=[{"src": str(tmp_path / "one" / "c.py"), "dest": "/etc/c.py"}])
    b = spec_of(files=[{"src": str(tmp_path / "two" / "c.py"), "dest": "/etc/c.py"}])
    ha = spec_hash("docker", render_dockerfile(a), plan_inputs(a))
    hb = spec_hash("docker", render_dockerfile(b), plan_inputs(b))
    assert ha == hb


def test_stage_inputs(tmp_path):
    repo = make_repo(tmp_path / "r", **{"a.txt": "a", ".git/HEAD": "x"})
    (repo / "link").symlink_to("a.txt")
    f = tmp_path / "f.sh"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o755)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    stage_inputs([("repo", str(repo)), ("files/0-f.sh", str(f))], str(ctx))
    assert (ctx / "repo" / "a.txt").read_text() == "a"
    assert not (ctx / "repo" / ".git").exists()
    assert os.readlink(ctx / "repo" / "link") == "a.txt"
    assert os.access(ctx / "files" / "0-f.sh", os.X_OK)


# ---------------------------------------------------------------------------------------------------------------
# build log tail and validation checks
# ---------------------------------------------------------------------------------------------------------------


def test_tail_lines():
    log = "\n".join(f"line {i}" for i in range(1, 101)) + "\n"
    tail = tail_lines(log)
    assert tail.splitlines() == [f"line {i}" for i in range(61, 101)]
    assert tail_lines(log, 3) == "line 98\nline 99\nline 100"
    assert tail_lines(b"a\nb\n", 1) == "b"
    assert tail_lines("10%\r50%\r100%\ndone") == "100%\ndone"
    assert tail_lines(None) == "" and tail_lines("") == ""


def test_validation_checks_and_evaluation():
    spec = spec_of(kernels=[{"name": "course"}], user={"name": "student", "uid": 2000})
    checks = {c["check"]: c for c in validation_checks(spec)}
    assert checks["user"]["argv"] == ["id", "-u", "student"]
    assert checks["jupyterlab"]["argv"] == ["jupyter", "lab", "--version"]
    assert checks["papermill"]["argv"] == ["python3", "-m", "papermill", "--version"]
    assert checks["kernelspecs"]["argv"] == ["jupyter", "kernelspec", "list", "--json"]
    assert checks["kernel course starts"]["argv"][:2] == ["python3", "-c"]
    compile(checks["kernel course starts"]["argv"][2], "kernel-start", "exec")

    assert evaluate_check(checks["user"], 0, "2000\n", "") == (True, "2000")
    ok, detail = evaluate_check(checks["user"], 0, "1000\n", "")
    assert not ok and "expected '2000'" in detail
    ok, detail = evaluate_check(checks["user"], 1, "", "id: 'student': no such user")
    assert not ok and "no such user" in detail
    listing = json.dumps({"kernelspecs": {"python3": {}, "course": {}}})
    assert evaluate_check(checks["kernelspecs"], 0, listing, "")[0]
    ok, detail = evaluate_check(checks["kernelspecs"], 0, json.dumps({"kernelspecs": {"python3": {}}}), "")
    assert not ok and "course" in detail
    assert not evaluate_check(checks["kernelspecs"], 0, "not json", "")[0]
    assert evaluate_check(checks["jupyterlab"], 0, "4.2.5\n", "") == (True, "4.2.5")

    no_start = spec_of(kernels=[{"name": "course"}], kernel_start_check=False)
    assert [c["check"] for c in validation_checks(no_start)] == ["user", "jupyterlab", "papermill", "kernelspecs"]
    assert [c["check"] for c in validation_checks(spec_of())] == ["user", "jupyterlab", "papermill"]


# ---------------------------------------------------------------------------------------------------------------
# engines, driven by fake CLIs
# ---------------------------------------------------------------------------------------------------------------


class FakeDocker:
    """Models the docker CLI calls the module makes: image inspect, build, run, tag, image rm."""

    def __init__(self, fail_build=False, fail_check=None):
        self.images = {}  # id -> {"labels", "size"}
        self.tags = {}  # ref -> id
        self.calls = []
        self.fail_build = fail_build
        self.fail_check = fail_check
        self.counter = 0
        self.add("clusterhub-lab/debian:bookworm", {})

    def add(self, ref, labels):
        self.counter += 1
        image_id = f"sha256:{self.counter:064x}"
        self.images[image_id] = {"labels": labels, "size": 1000 * self.counter}
        self.tags[ref] = image_id
        return image_id

    def __call__(self, argv, cwd=None):
        assert isinstance(argv, list) and argv[0] == "/usr/bin/docker"
        self.calls.append(argv[1:])
        cmd = argv[1:]
        if cmd[:2] == ["image", "inspect"]:
            ref = cmd[2]
            image_id = self.tags.get(ref, ref if ref in self.images else None)
            if image_id is None:
                return 1, "[]\n", f"Error response from daemon: No such image: {ref}\n"
            img = self.images[image_id]
            return 0, json.dumps([{"Id": image_id, "Size": img["size"], "Config": {"Labels": img["labels"]}}]), ""
        if cmd[0] == "build":
            assert os.path.isfile(os.path.join(cwd, "Dockerfile"))
            labels = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--label")
            tag = cmd[cmd.index("-t") + 1]
            if self.fail_build:
                log = "\n".join(f"Step {i}/60 : RUN something" for i in range(1, 60))
                return 1, log + "\nE: Unable to locate package no-such-package-xyz\n", "returned a non-zero code: 100\n"
            self.add(tag, labels)
            echo = f"Step 17/18 : LABEL {RECIPE_LABEL}={labels[RECIPE_LABEL]}"
            return 0, f"Step 16/18 : CMD []\n{echo}\nSuccessfully built\n", ""
        if cmd[0] == "run":
            inner = [cmd[cmd.index("--entrypoint") + 1], *cmd[cmd.index("--entrypoint") + 3 :]]
            if self.fail_check and self.fail_check in inner:
                return 127, "", f"exec: {inner[0]}: not found\n"
            if inner[:2] == ["id", "-u"]:
                return 0, "1000\n", ""
            if inner[:3] == ["jupyter", "kernelspec", "list"]:
                return 0, json.dumps({"kernelspecs": {"python3": {}, "course": {}}}), ""
            return 0, "4.2.5\n", ""
        if cmd[0] == "tag":
            self.tags[cmd[2]] = self.tags[cmd[1]]
            return 0, "", ""
        if cmd[:2] == ["image", "rm"]:
            ref = cmd[2]
            if ref in self.tags:
                image_id = self.tags.pop(ref)
                if image_id not in self.tags.values():
                    del self.images[image_id]
                return 0, f"Untagged: {ref}\n", ""
            if ref in self.images and ref not in self.tags.values():
                del self.images[ref]
                return 0, f"Deleted: {ref}\n", ""
            return 1, "", "conflict\n"
        raise AssertionError(f"unexpected docker call {cmd}")

    def verbs(self):
        return [c[0] if c[0] not in ("image",) else " ".join(c[:2]) for c in self.calls]


def docker_engine(fake):
    return DockerEngine("/usr/bin/docker", fake)


def test_docker_first_build_then_no_change(tmp_path):
    fake = FakeDocker()
    spec = spec_of(kernels=[{"name": "course"}])
    ticks = iter([100.0, 142.5])
    result = ensure_image(spec, docker_engine(fake), clock=lambda: next(ticks))
    assert result["changed"] and result["built"]
    assert result["build_seconds"] == 42.5
    assert result["image_id"] == fake.tags["clusterhub-test/nb:dev"]
    assert result["previous_hash"] is None and len(result["hash"]) == 64
    assert [v["check"] for v in result["validation"]] == [
        "user",
        "jupyterlab",
        "papermill",
        "kernelspecs",
        "kernel course starts",
    ]
    assert all(v["ok"] for v in result["validation"])
    build = next(c for c in fake.calls if c[0] == "build")
    temp = build[build.index("-t") + 1]
    assert temp.startswith("clusterhub-test/nb:clusterhub-tmp-")
    assert f"org.clusterhub.spec-hash={result['hash']}" in build
    assert f"org.clusterhub.recipe={encode_recipe_label(result['recipe'])}" in build
    # validation ran against the temporary tag, before the swap; the temporary tag is gone afterwards
    runs = [c for c in fake.calls if c[0] == "run"]
    assert runs and all(temp in c for c in runs)
    assert ["tag", temp, "clusterhub-test/nb:dev"] in fake.calls
    assert fake.calls.index(["tag", temp, "clusterhub-test/nb:dev"]) > fake.calls.index(runs[-1])
    assert ["image", "rm", temp] in fake.calls and temp not in fake.tags
    assert result["stdout"].splitlines() == [
        "Step 16/18 : CMD []",
        f"Step 17/18 : LABEL {RECIPE_LABEL}=<recipe>",
        "Successfully built",
    ], "the recipe echoed by the legacy builder is collapsed in the log tail"

    fake.calls.clear()
    again = ensure_image(spec, docker_engine(fake))
    assert not again["changed"] and not again["built"] and again["build_seconds"] == 0.0
    assert again["hash"] == result["hash"] == again["previous_hash"]
    assert fake.verbs() == ["image inspect", "image inspect"], "a no-change run only inspects base and image"
    assert again["previous_recipe"] == result["recipe"]


def test_docker_check_mode_builds_nothing():
    fake = FakeDocker()
    spec = spec_of()
    result = ensure_image(spec, docker_engine(fake), check_mode=True)
    assert result["changed"] and not result["built"] and result["image_id"] is None
    assert fake.verbs() == ["image inspect", "image inspect"]
    ensure_image(spec, docker_engine(fake))
    fake.calls.clear()
    changed = spec_of(apt_packages=["less"])
    result = ensure_image(changed, docker_engine(fake), check_mode=True)
    assert result["changed"] and not result["built"]
    assert result["image_id"] == fake.tags["clusterhub-test/nb:dev"]
    assert "less" in result["recipe"] and "less" not in result["previous_recipe"]
    assert fake.verbs() == ["image inspect", "image inspect"]
    assert not ensure_image(spec, docker_engine(fake), check_mode=True)["changed"]


def test_docker_force_and_remove_previous():
    fake = FakeDocker()
    spec = spec_of()
    first = ensure_image(spec, docker_engine(fake))
    forced = ensure_image(dict(spec, force=True), docker_engine(fake))
    assert forced["built"] and forced["image_id"] != first["image_id"]
    assert ["image", "rm", first["image_id"]] in fake.calls
    assert first["image_id"] not in fake.images
    kept = ensure_image(dict(spec, force=True, remove_previous=False), docker_engine(fake))
    assert forced["image_id"] in fake.images and kept["image_id"] != forced["image_id"]


def test_docker_rebuilds_when_the_base_changes():
    fake = FakeDocker()
    spec = spec_of()
    first = ensure_image(spec, docker_engine(fake))
    fake.add(BASE, {})  # the base tag now points at a new image
    second = ensure_image(spec, docker_engine(fake))
    assert second["built"] and second["hash"] != first["hash"]


def test_docker_failed_build_keeps_previous_image():
    fake = FakeDocker()
    good = ensure_image(spec_of(), docker_engine(fake))
    fake.fail_build = True
    tags_before = dict(fake.tags)
    with pytest.raises(BuildError) as err:
        ensure_image(spec_of(apt_packages=["no-such-package-xyz"]), docker_engine(fake))
    exc = err.value
    assert exc.rc == 1
    assert "docker build of clusterhub-test/nb:dev failed (rc=1)" in exc.msg
    assert "previous image is unchanged" in exc.msg
    assert "E: Unable to locate package no-such-package-xyz" in exc.msg
    assert "returned a non-zero code: 100" in exc.stdout
    assert len(exc.stdout.splitlines()) == LOG_TAIL_LINES
    assert fake.tags == tags_before and fake.tags["clusterhub-test/nb:dev"] == good["image_id"]
    assert not any(c[0] in ("tag", "run") for c in fake.calls[-3:])


def test_docker_failed_validation_keeps_previous_image():
    fake = FakeDocker()
    good = ensure_image(spec_of(), docker_engine(fake))
    fake.fail_check = "papermill"
    with pytest.raises(BuildError) as err:
        ensure_image(spec_of(pip_packages=["numpy"]), docker_engine(fake))
    assert "validation of the new image failed: papermill" in err.value.msg
    assert err.value.rc == 127
    assert fake.tags["clusterhub-test/nb:dev"] == good["image_id"]
    assert not [t for t in fake.tags if "clusterhub-tmp" in t], "the temporary tag was removed"
    assert not any(c[0] == "tag" for c in fake.calls[-6:])


def test_docker_build_argv(tmp_path):
    engine = docker_engine(FakeDocker())
    spec = spec_of(build_cache=False)
    argv = engine.build_argv(spec, "FROM x\n", "ab" * 32, str(tmp_path), "clusterhub-test/nb:tmp")
    assert argv[:3] == ["/usr/bin/docker", "build", "--force-rm"]
    assert "--no-cache" in argv
    assert argv[-3:] == ["-t", "clusterhub-test/nb:tmp", str(tmp_path)]
    assert engine.exec_argv("img:tmp", ["jupyter", "lab", "--version"]) == [
        "/usr/bin/docker", "run", "--rm", "--network", "none", "--entrypoint", "jupyter", "img:tmp", "lab", "--version",
    ]  # fmt: skip
    temp = engine.temp_ref(spec_of(name="registry:5000/a/b:1"), "c" * 64)
    assert temp.startswith("registry:5000/a/b:clusterhub-tmp-cccccccccccc-")


def test_recipe_label_round_trip():
    recipe = 'FROM x\nENV A="\\$HOME \\"q\\""\n'
    value = encode_recipe_label(recipe)
    assert "$" not in value and "\n" not in value
    assert decode_recipe_label(value) == recipe
    assert decode_recipe_label("FROM raw\n") == "FROM raw\n"
    assert decode_recipe_label(None) == "" and decode_recipe_label("base64:!!") == ""


def test_docker_inspect_errors_other_than_missing_fail():
    engine = DockerEngine("/usr/bin/docker", lambda argv, cwd=None: (1, "", "permission denied on docker.sock\n"))
    with pytest.raises(BuildError, match="permission denied"):
        engine.inspect("x:y")


class FakeApptainer:
    """Models apptainer build/inspect/exec; a "SIF" is a JSON file holding the definition and its labels."""

    def __init__(self, fail_build=False, fail_check=None):
        self.calls = []
        self.fail_build = fail_build
        self.fail_check = fail_check

    def __call__(self, argv, cwd=None, env=None):
        assert argv[0] == "/usr/bin/apptainer"
        if argv[1] == "build":
            # scratch space on the SIF's disk unless the site set APPTAINER_TMPDIR
            assert os.path.isdir(env["APPTAINER_TMPDIR"])
            assert os.path.dirname(env["APPTAINER_TMPDIR"]) == os.path.dirname(argv[-2])
        cmd = argv[1:]
        self.calls.append((cmd, cwd))
        if cmd[0] == "build":
            sif, definition = cmd[-2], cmd[-1]
            text = Path(cwd, definition).read_text()
            files = text.split("\n%files\n", 1)[1].split("\n%", 1)[0] if "\n%files\n" in text else ""
            for line in files.splitlines():
                if line.strip():
                    assert os.path.exists(os.path.join(cwd, line.split()[0])), line
            if self.fail_build:
                return (
                    255,
                    "\n".join(f"+ step {i}" for i in range(80)),
                    "FATAL:   While performing build: exit status 100\n",
                )
            labels = {}
            for line in text.split("%labels", 1)[1].splitlines():
                if line.strip():
                    key, value = line.split(None, 1)
                    labels[key] = value
            with open(sif, "w") as fh:
                json.dump({"def": text, "labels": labels}, fh)
            return 0, "INFO:    Build complete: " + sif + "\n", ""
        if cmd[0] == "inspect":
            with open(cmd[-1]) as fh:
                data = json.load(fh)
            if "--deffile" in cmd:
                return 0, data["def"], ""
            return 0, json.dumps({"data": {"attributes": {"labels": data["labels"]}}, "type": "container"}), ""
        if cmd[0] == "exec":
            inner = cmd[4:]
            assert cmd[1:3] == ["--containall", "--cleanenv"]
            if self.fail_check and self.fail_check in inner:
                return 1, "", "boom\n"
            if inner[:2] == ["id", "-u"]:
                return 0, "1000\n", ""
            return 0, "4.2.5\n", ""
        raise AssertionError(cmd)


def test_apptainer_build_swap_and_no_change(tmp_path):
    fake = FakeApptainer()
    engine = ApptainerEngine("/usr/bin/apptainer", fake)
    conf = tmp_path / "c.py"
    conf.write_text("x")
    spec = apptainer_spec(tmp_path, files=[{"src": str(conf), "dest": "/etc/c.py"}])
    result = ensure_image(spec, engine)
    sif = str(tmp_path / "nb.sif")
    assert result["built"] and result["sif_path"] == sif and result["size"] == os.path.getsize(sif)
    assert result["image_id"] is None
    build, cwd = next(c for c in fake.calls if c[0][0] == "build")
    assert os.path.basename(cwd).startswith("clusterhub-image-") and not os.path.exists(cwd), "context removed"
    temp = build[-2]
    assert build[:2] == ["build", "--fakeroot"] and build[-1].endswith("notebook.def")
    assert os.path.dirname(temp) == str(tmp_path), "the temporary SIF is in the destination directory"
    assert os.path.basename(temp).startswith(".nb.sif.") and temp.endswith(".tmp.sif")
    assert not os.path.exists(temp)
    execs = [c for c, _ in fake.calls if c[0] == "exec"]
    assert execs and all(c[3] == temp for c in execs), "validation ran on the temporary SIF"
    assert result["recipe"].endswith(f"%labels\n    org.clusterhub.spec-hash {result['hash']}\n")
    assert sorted(os.listdir(tmp_path)) == ["c.py", "nb.sif"]

    fake.calls.clear()
    again = ensure_image(spec, engine)
    assert not again["changed"] and not again["built"] and again["previous_hash"] == result["hash"]
    assert [c[0] for c, _ in fake.calls] == ["inspect", "inspect"]
    assert again["previous_recipe"] == result["recipe"]

    conf.write_text("changed")
    assert ensure_image(spec, engine, check_mode=True)["changed"]
    assert json.loads(Path(sif).read_text())["labels"][HASH_LABEL] == result["hash"], "check mode wrote nothing"


def test_apptainer_failure_keeps_previous_sif(tmp_path):
    fake = FakeApptainer()
    engine = ApptainerEngine("/usr/bin/apptainer", fake)
    ensure_image(apptainer_spec(tmp_path), engine)
    sif = tmp_path / "nb.sif"
    before = sif.read_bytes()
    fake.fail_build = True
    with pytest.raises(BuildError) as err:
        ensure_image(apptainer_spec(tmp_path, apt_packages=["no-such-package"]), engine)
    assert "apptainer build of" in err.value.msg and "FATAL:   While performing build" in err.value.stdout
    assert len(err.value.stdout.splitlines()) == LOG_TAIL_LINES
    assert sif.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["nb.sif"]
    fake.fail_build, fake.fail_check = False, "jupyter"
    with pytest.raises(BuildError, match="validation of the new image failed: jupyterlab"):
        ensure_image(apptainer_spec(tmp_path, apt_packages=["less"]), engine)
    assert sif.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["nb.sif"]


@pytest.mark.parametrize(
    ("compression", "args"),
    [("gzip", None), ("zstd", "-comp zstd -Xcompression-level 3"), ("xz", "-comp xz"), ("lz4", "-comp lz4")],
)
def test_apptainer_sif_compression_is_passed_to_mksquashfs_and_changes_no_hash(tmp_path, compression, args):
    engine = ApptainerEngine("/usr/bin/apptainer", None)
    spec = apptainer_spec(tmp_path, sif_compression=compression)
    argv = engine.build_argv(spec, "/ctx/notebook.def", "/d/t.sif")
    if args is None:  # Apptainer's own default: nothing passed
        assert "--mksquashfs-args" not in argv
    else:
        assert argv[argv.index("--mksquashfs-args") + 1] == args
    assert argv[-2:] == ["/d/t.sif", "/ctx/notebook.def"]
    # how the image is packed, not what it holds: the recipe, and so the hash, is the same for every choice
    assert render_apptainer_def(spec) == render_apptainer_def(apptainer_spec(tmp_path))


def test_apptainer_build_argv_and_labels(tmp_path):
    engine = ApptainerEngine("/usr/bin/apptainer", None)
    spec = apptainer_spec(tmp_path, fakeroot=False, build_cache=False)
    assert engine.build_argv(spec, "/ctx/notebook.def", "/d/.nb.tmp.sif") == [
        "/usr/bin/apptainer", "build", "--disable-cache", "/d/.nb.tmp.sif", "/ctx/notebook.def",
    ]  # fmt: skip
    assert engine.build_argv(apptainer_spec(tmp_path), "d", "t")[:3] == ["/usr/bin/apptainer", "build", "--fakeroot"]
    assert engine.exec_argv("/d/x.sif", ["id", "-u", "jovyan"]) == [
        "/usr/bin/apptainer", "exec", "--containall", "--cleanenv", "/d/x.sif", "id", "-u", "jovyan",
    ]  # fmt: skip
    js = json.dumps({"data": {"attributes": {"labels": {HASH_LABEL: "abc", "x": "y"}}}, "type": "container"})
    assert parse_apptainer_labels(js)[HASH_LABEL] == "abc"
    plain = f"{HASH_LABEL}: abc\norg.label-schema.build-arch: amd64\n"
    assert parse_apptainer_labels(plain) == {HASH_LABEL: "abc", "org.label-schema.build-arch": "amd64"}
    assert parse_apptainer_labels("") == {}


# ---------------------------------------------------------------------------------------------------------------
# the Ansible module: documentation and argument_spec agree
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module():
    """Import library/notebook_image.py; its module_utils imports resolve to the plain modules (conftest.py)."""
    return importlib.import_module("notebook_image")


def _compare_options(doc_opts: dict, spec: dict, where: str):
    assert set(doc_opts) == set(spec), f"{where}: documented {sorted(doc_opts)} vs argument_spec {sorted(spec)}"
    for key, arg in spec.items():
        doc = doc_opts[key]
        assert doc.get("type", "str") == arg.get("type", "str"), f"{where}.{key} type"
        assert bool(doc.get("required", False)) == bool(arg.get("required", False)), f"{where}.{key} required"
        assert doc.get("default") == arg.get("default"), f"{where}.{key} default"
        assert doc.get("choices") == arg.get("choices"), f"{where}.{key} choices"
        assert doc.get("elements") == arg.get("elements"), f"{where}.{key} elements"
        assert doc.get("description"), f"{where}.{key} has no description"
        if "options" in arg:
            _compare_options(doc["suboptions"], arg["options"], f"{where}.{key}")


def test_documentation_matches_argument_spec(module):
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == "notebook_image"
    _compare_options(doc["options"], module.argument_spec(), "options")
    assert set(module.argument_spec()) == set(OPTION_DEFAULTS)
    examples = yaml.safe_load(module.EXAMPLES)
    for task in examples:
        args = task["notebook_image"]
        assert set(args) <= set(module.argument_spec())
    returned = yaml.safe_load(module.RETURN)
    for key in ("changed", "previous_recipe"):
        assert key not in returned
    for key in ("image_id", "sif_path", "size", "hash", "build_seconds", "recipe", "validation", "stdout", "diff"):
        assert key in returned


def test_module_defaults_match_module_utils(module):
    spec = module.argument_spec()
    for key, default in OPTION_DEFAULTS.items():
        if key in ("user", "debootstrap"):
            continue
        assert spec[key].get("default") == default, key
    assert {k: v.get("default") for k, v in spec["user"]["options"].items()} == DEFAULT_USER


def test_examples_validate(module, tmp_path, monkeypatch):
    """The EXAMPLES' specs pass validate_spec once their host paths exist."""
    examples = yaml.safe_load(module.EXAMPLES)
    for task in examples:
        args = dict(task["notebook_image"])
        if args.get("engine") == "apptainer":
            args["name"] = str(tmp_path / os.path.basename(args["name"]))
        for key in ("pip_requirements", "repo"):
            if key in args:
                path = tmp_path / key
                if key == "repo":
                    path.mkdir(exist_ok=True)
                else:
                    path.write_text("numpy\n")
                args[key] = str(path)
        for item in args.get("files", []):
            src = tmp_path / os.path.basename(item["src"])
            src.write_text("c = 1\n")
            item["src"] = str(src)
        validate_spec(args)
