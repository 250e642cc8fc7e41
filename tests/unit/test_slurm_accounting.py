"""The slurm_accounting module (library/slurm_accounting.py) and its rules (module_utils/clusterhub_accounting.py):
the checks and the plan as plain functions, then main() end to end against a fake `sacctmgr` executable that keeps
its database in a JSON file and answers as Slurm 24.11's does (parsable output, lower-cased names, `add` refused
without --immediate, an unknown parent refused, "already exists" for a second cluster, a refused connection while
slurmdbd is down)."""

from __future__ import annotations

import json
import sys

import pytest
import slurm_accounting
from ansible.module_utils.clusterhub_accounting import account_errors, parse_associations, plan
from ansible.module_utils.testing import patch_module_args
from module_harness import Exited

from clusterhub_slurm import slurm_account_errors

STUDENTS = {
    "name": "students",
    "description": "Teaching",
    "organization": "lab",
    "parent": "root",
    "users": ["alice", "bob"],
}

FAKE = r"""
import json, sys
from pathlib import Path

db_file = Path(sys.argv[0]).with_name("slurmdbd.json")
db = json.loads(db_file.read_text())
args = sys.argv[1:]
db["calls"].append(args)
def done(code=0, out="", err=""):
    db_file.write_text(json.dumps(db))
    sys.stdout.write(out); sys.stderr.write(err); sys.exit(code)
if db["down"]:
    done(1, err="sacctmgr: error: Sending PersistInit msg: Connection refused\n")
immediate = "--immediate" in args or "-i" in args
words = [a for a in args if not a.startswith("-")]
keys = dict(w.split("=", 1) for w in words if "=" in w)
verb, kind = words[0], words[1]
if verb == "show":
    if kind == "cluster":
        done(0, "".join(c + "\n" for c in db["clusters"]))
    rows = [a for a in db["assocs"] if a[0] == keys["cluster"]]
    done(0, "".join(f"{acc}|{user}|{parent}\n" for _, acc, user, parent in rows))
if not immediate:
    done(1, err="would prompt: (You have 30 seconds to decide)\n")
name = words[2].lower()
if kind == "cluster":
    if name in db["clusters"]:
        done(1, f" This cluster {name} already exists.  Not adding.\n")
    db["clusters"].append(name)
    db["assocs"].append([name, "root", "", ""])
    db["assocs"].append([name, "root", "root", "root"])
    done(0, " Adding Cluster(s)\n")
cluster = keys["cluster"]
accounts = {a[1] for a in db["assocs"] if a[0] == cluster and a[2] == ""}
if kind == "account":
    parent = keys.get("parent", "root")
    if parent not in accounts:
        done(1, err=f" error: No parent account '{parent}' on cluster '{cluster}'\n")
    db["assocs"].append([cluster, name, "", parent])
    db["descriptions"][name] = [keys.get("description", "").lower(), keys.get("organization", "").lower()]
    done(0, " Adding Account(s)\n")
if kind == "user":
    account = keys["account"]
    if account not in accounts or [cluster, account, name, ""] in db["assocs"]:
        done(1, " Nothing added.\n")
    db["assocs"].append([cluster, account, name, ""])
    done(0, " Adding User(s)\n")
done(1, err="unknown command\n")
"""


@pytest.fixture
def slurmdbd(tmp_path):
    """The fake sacctmgr's database: {clusters, assocs [cluster, account, user, parent], calls, down}."""
    state = {"clusters": [], "assocs": [], "descriptions": {}, "calls": [], "down": False}
    db = tmp_path / "slurmdbd.json"
    db.write_text(json.dumps(state))
    program = tmp_path / "sacctmgr"
    program.write_text(f"#!{sys.executable}\n{FAKE}")
    program.chmod(0o755)

    class Db:
        path = str(program)

        @staticmethod
        def read():
            return json.loads(db.read_text())

        @staticmethod
        def update(**changes):
            db.write_text(json.dumps({**json.loads(db.read_text()), **changes}))

    return Db


@pytest.fixture
def module_run(monkeypatch):
    """slurm_accounting.main() with these arguments (sacctmgr run for real); returns (failed, result)."""

    def run(args, check_mode=False):
        def exit_json(_self, **result):
            raise Exited(False, result)

        def fail_json(_self, msg, **result):
            raise Exited(True, {"msg": msg, **result})

        monkeypatch.setattr(slurm_accounting.AnsibleModule, "exit_json", exit_json)
        monkeypatch.setattr(slurm_accounting.AnsibleModule, "fail_json", fail_json)
        monkeypatch.setattr(slurm_accounting.AnsibleModule, "warn", lambda _self, text: None)
        with patch_module_args(dict(args, _ansible_check_mode=check_mode)), pytest.raises(Exited) as exited:
            slurm_accounting.main()
        return exited.value.failed, exited.value.result

    return run


# --- the rules ------------------------------------------------------------------------------------


def test_a_valid_inventory_has_no_errors():
    assert account_errors("clusterhub-lab", [STUDENTS, {"name": "physics.ta", "parent": "students"}]) == []


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        ([{"name": "Students"}], "account 'Students': lower case letters"),
        ([{"name": "a b"}], "account 'a b': lower case letters"),
        ([{"name": "--uid=0"}], "account '--uid=0': lower case letters"),
        ([{"name": "x", "parent": "y"}, {"name": "y"}], "parent 'y' must be root or an account listed before it"),
        ([{"name": "x"}, {"name": "x"}], "'x' is listed twice"),
        ([{"name": "root"}], "'root' is listed twice (or is root)"),
        ([{"name": "x", "description": "two\nlines"}], "description must be one line without quotes or '='"),
        ([{"name": "x", "organization": "a=b"}], "organization must be one line without quotes or '='"),
        ([{"name": "x", "users": ["alice", "Bob; rm -rf /"]}], "user 'Bob; rm -rf /' is not a valid user name"),
    ],
)
def test_bad_accounts_are_named_with_what_is_allowed(accounts, expected):
    errors = account_errors("lab", accounts)
    assert len(errors) == 1 and expected in errors[0], errors


def test_the_validation_filter_names_the_variable():
    assert slurm_account_errors("lab", [{"name": "A"}]) == [
        "slurm_accounts: account 'A': lower case letters, digits and _ . - only"
    ]
    assert slurm_account_errors("bad cluster", []) == [
        "slurm_accounts: cluster 'bad cluster': letters, digits and _ . - only"
    ]


def test_associations_parse_with_the_accounts_own_rows():
    text = "root||\nroot|root|\nStudents||root\nstudents|alice|\n\n"
    assert parse_associations(text) == {("root", ""), ("root", "root"), ("students", ""), ("students", "alice")}


def test_the_plan_adds_only_what_is_missing_parents_first():
    staff = {"name": "ta", "parent": "students", "users": ["bob", "bob"]}
    assert plan("lab", [STUDENTS, staff], set(), set()) == [
        ["add", "cluster", "lab"],
        ["add", "account", "students", "cluster=lab", "parent=root", "description=Teaching", "organization=lab"],
        ["add", "user", "alice", "account=students", "cluster=lab"],
        ["add", "user", "bob", "account=students", "cluster=lab"],
        ["add", "account", "ta", "cluster=lab", "parent=students"],
        ["add", "user", "bob", "account=ta", "cluster=lab"],
    ]
    have = {("root", ""), ("students", ""), ("students", "alice")}
    assert plan("lab", [STUDENTS], {"lab"}, have) == [["add", "user", "bob", "account=students", "cluster=lab"]]


# --- the module, against the fake sacctmgr -----------------------------------------------------------


def test_registers_everything_then_nothing_changes(slurmdbd, module_run):
    args = {"cluster": "clusterhub-lab", "accounts": [STUDENTS], "sacctmgr": slurmdbd.path}
    failed, result = module_run(args)
    assert not failed and result["changed"] and len(result["commands"]) == 4
    db = slurmdbd.read()
    assert ["clusterhub-lab", "students", "alice", ""] in db["assocs"]
    assert ["clusterhub-lab", "students", "bob", ""] in db["assocs"]
    assert db["descriptions"]["students"] == ["teaching", "lab"]
    # every add ran with --immediate (no prompt), each value one argv word
    adds = [call for call in db["calls"] if "add" in call]
    assert all(call[0] == "--immediate" for call in adds)
    assert [
        "--immediate",
        "add",
        "account",
        "students",
        "cluster=clusterhub-lab",
        "parent=root",
        "description=Teaching",
        "organization=lab",
    ] in adds

    failed, result = module_run(args)
    assert (failed, result["changed"], result["commands"]) == (False, False, [])


def test_a_user_dropped_from_the_inventory_keeps_the_association(slurmdbd, module_run):
    module_run({"cluster": "lab", "accounts": [STUDENTS], "sacctmgr": slurmdbd.path})
    failed, result = module_run(
        {"cluster": "lab", "accounts": [{**STUDENTS, "users": ["alice"]}], "sacctmgr": slurmdbd.path}
    )
    assert (failed, result["changed"]) == (False, False)
    assert ["lab", "students", "bob", ""] in slurmdbd.read()["assocs"]


def test_check_mode_reports_and_adds_nothing(slurmdbd, module_run):
    failed, result = module_run({"cluster": "lab", "accounts": [STUDENTS], "sacctmgr": slurmdbd.path}, check_mode=True)
    assert not failed and result["changed"] and result["commands"][0] == ["add", "cluster", "lab"]
    db = slurmdbd.read()
    assert db["clusters"] == [] and all("add" not in call for call in db["calls"])


def test_check_mode_before_sacctmgr_or_slurmdbd_exists_counts_everything_missing(slurmdbd, module_run, tmp_path):
    missing = str(tmp_path / "not-installed" / "sacctmgr")
    failed, result = module_run({"cluster": "lab", "accounts": [], "sacctmgr": missing}, check_mode=True)
    assert (failed, result["commands"]) == (False, [["add", "cluster", "lab"]])
    slurmdbd.update(down=True)
    failed, result = module_run({"cluster": "lab", "accounts": [], "sacctmgr": slurmdbd.path}, check_mode=True)
    assert (failed, result["commands"]) == (False, [["add", "cluster", "lab"]])


def test_slurmdbd_down_fails_saying_so(slurmdbd, module_run):
    slurmdbd.update(down=True)
    failed, result = module_run({"cluster": "lab", "accounts": [STUDENTS], "sacctmgr": slurmdbd.path})
    assert failed and "Connection refused" in result["msg"] and "show cluster" in result["msg"]


def test_bad_input_fails_before_sacctmgr_runs(slurmdbd, module_run):
    failed, result = module_run(
        {"cluster": "lab", "accounts": [{"name": "x", "users": ["--uid=0"]}], "sacctmgr": slurmdbd.path}
    )
    assert failed and "user '--uid=0' is not a valid user name" in result["msg"]
    assert slurmdbd.read()["calls"] == []


def test_a_cluster_slurmctld_registered_meanwhile_is_not_an_error(slurmdbd, module_run):
    # sacctmgr reports no cluster; slurmctld adds it before our add: "already exists" is success
    real = slurm_accounting.Sacctmgr.state

    def stale(self, cluster):
        clusters, assocs = real(self, cluster)
        slurmdbd.update(clusters=["lab"], assocs=[["lab", "root", "", ""]])
        return clusters, assocs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(slurm_accounting.Sacctmgr, "state", stale)
        failed, result = module_run({"cluster": "lab", "accounts": [], "sacctmgr": slurmdbd.path})
    assert (failed, result["commands"]) == (False, [["add", "cluster", "lab"]])


def test_the_filter_and_the_module_use_one_copy_of_the_rules():
    from clusterhub_slurm import _module_utils  # noqa: PLC0415

    rules = _module_utils("clusterhub_accounting")
    assert rules is sys.modules["ansible.module_utils.clusterhub_accounting"]
    assert rules.account_errors is account_errors is slurm_accounting.account_errors
