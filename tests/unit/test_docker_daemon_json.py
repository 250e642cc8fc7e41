"""The docker_daemon_json module (library/docker_daemon_json.py) and its decisions (module_utils/clusterhub_json.py):
the merge as plain functions, then the module end to end through main() on real files in tmp_path."""

from __future__ import annotations

import json
import os
import stat

import docker_daemon_json
import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.clusterhub_json import JsonFileError, deep_merge, dump, plan_merge
from ansible.module_utils.testing import patch_module_args
from module_harness import Exited

RUNTIME = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}
# what a site or another role wrote, in its own formatting
SITE = (
    '{"log-driver": "journald", "registry-mirrors": ["https://mirror.site"],\n'
    ' "runtimes": {"runc-alt": {"path": "/usr/bin/runc"}}}'
)


# --- the merge ------------------------------------------------------------------------------------


def test_keys_of_others_are_kept_and_wanted_wins_on_conflicts():
    merged = deep_merge(json.loads(SITE), {"log-driver": "json-file", "registry-mirrors": ["https://b"], **RUNTIME})
    assert merged == {
        "log-driver": "json-file",
        "registry-mirrors": ["https://b"],  # lists are replaced, not appended to
        "runtimes": {"runc-alt": {"path": "/usr/bin/runc"}, "nvidia": {"path": "nvidia-container-runtime", "args": []}},
    }


def test_inputs_are_not_mutated():
    wanted = {"runtimes": {"nvidia": {"args": ["x"]}}}
    base = {"runtimes": {"nvidia": {"path": "p"}}}
    merged = deep_merge(base, wanted)
    merged["runtimes"]["nvidia"]["args"].append("y")
    assert wanted == {"runtimes": {"nvidia": {"args": ["x"]}}} and base == {"runtimes": {"nvidia": {"path": "p"}}}


@pytest.mark.parametrize("text", [None, "", "  \n", b""])
def test_missing_or_empty_file_is_an_empty_object_and_is_written(text):
    assert plan_merge(text, {"a": 1}, "f") == ({"a": 1}, '{\n  "a": 1\n}\n')


def test_an_equal_document_is_not_rewritten_whatever_its_formatting():
    assert plan_merge('{"b": 1,  "a": {"x": true}}', {"a": {"x": True}}, "f") == ({"a": {"x": True}, "b": 1}, None)


@pytest.mark.parametrize(("old", "new"), [('{"iptables": 1}', True), ('{"n": 1}', 1.0)])
def test_values_equal_in_python_but_not_in_json_are_rewritten(old, new):
    key = next(iter(json.loads(old)))
    assert plan_merge(old, {key: new}, "f")[1] == dump({key: new})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"log-driver": ', r"/etc/docker/daemon\.json is not valid JSON \(Expecting .*line 1"),
        ("[1, 2]", r"/etc/docker/daemon\.json holds a JSON list, not an object"),
        ('"x"', r"holds a JSON str, not an object"),
        (b"\xff{}", r"/etc/docker/daemon\.json is not UTF-8 text"),
    ],
)
def test_a_file_that_is_not_a_json_object_is_refused_naming_it(text, message):
    with pytest.raises(JsonFileError, match=message):
        plan_merge(text, RUNTIME, "/etc/docker/daemon.json")


def test_dump_is_sorted_and_stable():
    assert dump({"b": 1, "a": {"d": 2, "c": 3}}) == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'


# --- the module, end to end through main() --------------------------------------------------------


@pytest.fixture
def module_run(monkeypatch):
    """Run docker_daemon_json.main() with these arguments; returns (failed, result, commands run)."""

    def run(args, check_mode=False, diff=False, replies=()):
        commands = []
        queue = list(replies)

        def run_command(_self, argv, **kwargs):
            commands.append(argv)
            return queue.pop(0)

        def exit_json(_self, **result):
            raise Exited(False, result)

        def fail_json(_self, msg, **result):
            raise Exited(True, {"msg": msg, **result})

        monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
        monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
        monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
        module_args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        with patch_module_args(module_args), pytest.raises(Exited) as exited:
            docker_daemon_json.main()
        assert not queue, "not every reply was used"
        return exited.value.failed, exited.value.result, commands

    return run


@pytest.fixture
def daemon_json(tmp_path):
    path = tmp_path / "docker" / "daemon.json"
    path.parent.mkdir()
    path.write_text(SITE)
    path.chmod(0o644)
    return path


def test_merge_keeps_the_sites_keys_then_is_idempotent(module_run, daemon_json):
    args = {"path": str(daemon_json), "settings": {"log-opts": {"max-size": "10m"}, **RUNTIME}, "mode": "0644"}
    failed, result, _ = module_run(args)
    assert not failed and result["changed"]
    written = daemon_json.read_text()
    assert written == dump(result["config"])
    assert json.loads(written) == {
        "log-driver": "journald",
        "log-opts": {"max-size": "10m"},
        "registry-mirrors": ["https://mirror.site"],
        "runtimes": {"runc-alt": {"path": "/usr/bin/runc"}, "nvidia": {"path": "nvidia-container-runtime", "args": []}},
    }
    assert stat.S_IMODE(daemon_json.stat().st_mode) == 0o644
    mtime = daemon_json.stat().st_mtime_ns
    failed, again, _ = module_run(args)
    assert (failed, again["changed"]) == (False, False)
    assert daemon_json.stat().st_mtime_ns == mtime and daemon_json.read_text() == written


def test_a_second_owner_keeps_the_first_owners_keys(module_run, daemon_json):
    module_run({"path": str(daemon_json), "settings": {"iptables": False}})
    module_run({"path": str(daemon_json), "settings": {"default-runtime": "nvidia", **RUNTIME}})
    _, result, _ = module_run({"path": str(daemon_json), "settings": {"iptables": False}})
    assert not result["changed"]
    document = json.loads(daemon_json.read_text())
    assert document["iptables"] is False and document["default-runtime"] == "nvidia"
    assert set(document["runtimes"]) == {"runc-alt", "nvidia"} and document["log-driver"] == "journald"


def test_check_mode_reports_the_change_with_a_diff_and_writes_nothing(module_run, daemon_json):
    failed, result, commands = module_run(
        {"path": str(daemon_json), "settings": {"iptables": False}, "validate": "dockerd --validate %s"},
        check_mode=True,
        diff=True,
    )
    assert not failed and result["changed"] and commands == []  # nothing checked, nothing written
    assert daemon_json.read_text() == SITE
    assert result["diff"]["before"] == SITE and result["diff"]["before_header"] == str(daemon_json)
    assert result["diff"]["after"] == dump({**json.loads(SITE), "iptables": False})
    assert result["config"]["iptables"] is False


def test_check_mode_on_a_missing_file_reports_its_creation(module_run, tmp_path):
    path = tmp_path / "daemon.json"
    _, result, _ = module_run({"path": str(path), "settings": {"iptables": False}}, check_mode=True, diff=True)
    assert result["changed"] and result["diff"]["before"] == "" and not path.exists()


def test_no_change_shows_an_empty_diff(module_run, daemon_json):
    _, result, _ = module_run({"path": str(daemon_json), "settings": {"log-driver": "journald"}}, diff=True)
    assert not result["changed"] and result["diff"]["before"] == result["diff"]["after"] == SITE


def test_a_mode_that_differs_is_a_change_even_when_the_content_is_not(module_run, daemon_json):
    daemon_json.chmod(0o600)
    _, result, _ = module_run({"path": str(daemon_json), "settings": {}, "mode": "0644"})
    assert result["changed"] and stat.S_IMODE(daemon_json.stat().st_mode) == 0o644
    assert daemon_json.read_text() == SITE


def test_invalid_json_is_refused_naming_the_file_and_left_alone(module_run, daemon_json):
    daemon_json.write_text('{"log-driver": "journald",')
    failed, result, _ = module_run({"path": str(daemon_json), "settings": RUNTIME})
    assert failed and not result["changed"]
    assert result["msg"].startswith(f"{daemon_json} is not valid JSON (")
    assert daemon_json.read_text() == '{"log-driver": "journald",'


def test_the_validate_command_checks_the_new_text_and_a_failure_keeps_the_old_file(module_run, daemon_json):
    args = {"path": str(daemon_json), "settings": RUNTIME, "validate": "/usr/bin/dockerd --validate --config-file %s"}
    refused = [(1, "", "unable to configure the Docker daemon: bad runtime")]
    failed, result, [argv] = module_run(args, replies=refused)
    assert failed and result["rc"] == 1 and "bad runtime" in result["stderr"]
    assert result["msg"] == (
        f"the merged {daemon_json} failed the check {args['validate']!r}; the file was left unchanged"
    )
    # the command was given a temporary file next to daemon.json, removed since
    assert argv[:3] == ["/usr/bin/dockerd", "--validate", "--config-file"]
    assert os.path.dirname(argv[3]) == str(daemon_json.parent) and not os.path.exists(argv[3])
    assert daemon_json.read_text() == SITE
    assert sorted(os.listdir(daemon_json.parent)) == ["daemon.json"]  # no temporary file left behind
    failed, result, _ = module_run(args, replies=[(0, "configuration OK", "")])
    assert not failed and result["changed"] and json.loads(daemon_json.read_text())["runtimes"]["nvidia"]


def test_a_missing_directory_fails_naming_it(module_run, tmp_path):
    path = tmp_path / "absent" / "daemon.json"
    failed, result, _ = module_run({"path": str(path), "settings": RUNTIME})
    assert failed and result["msg"] == f"{path} cannot be written: its directory {path.parent} does not exist"


def test_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(docker_daemon_json.DOCUMENTATION)
    assert doc["module"] == "docker_daemon_json"
    assert set(doc["options"]) == set(docker_daemon_json.argument_spec())
    for name, spec in docker_daemon_json.argument_spec().items():
        option = doc["options"][name]
        assert option["type"] == spec["type"] and option.get("default") == spec.get("default"), name
        assert bool(option.get("required")) == bool(spec.get("required")), name
    for task in yaml.safe_load(docker_daemon_json.EXAMPLES):
        args = task["docker_daemon_json"]
        assert set(args) <= {*docker_daemon_json.argument_spec(), "owner", "group", "mode"}
    assert set(yaml.safe_load(docker_daemon_json.RETURN)) == {"path", "config", "diff"}
