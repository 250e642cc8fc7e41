#!/usr/bin/python
"""Ansible module slurm_accounting: register a cluster, its accounts and their users in Slurm's accounting
database (slurmdbd), adding what is missing and never removing anything."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slurm_accounting
short_description: Register a cluster, accounts and users with slurmdbd through sacctmgr
description:
  - Reads the associations of O(cluster) with C(sacctmgr --parsable2 --noheader) and adds, with
    C(sacctmgr --immediate), the cluster, each account of O(accounts) (under its parent) and each user's
    association with an account, where they are missing.
  - Nothing is ever removed or modified. An account or a user that the inventory no longer names keeps its
    association and its history; removing one is an administrator's decision (C(sacctmgr remove)).
  - Slurm keeps account names lower case; the names given here must be lower case already, so that what the
    inventory says and what C(sacctmgr show) prints are the same strings.
version_added: "0.1.0"
author:
  - clusterhub maintainers
options:
  cluster:
    description: ClusterName of slurm.conf.
    type: str
    required: true
  accounts:
    description:
      - Accounts to register, parents before their children.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: Account name (lower case letters, digits, C(_ . -)), type: str, required: true}
      description: {description: The account's description (one line of text)., type: str}
      organization: {description: The account's organization (one line of text)., type: str}
      parent: {description: The parent account., type: str, default: root}
      users: {description: Users with an association to this account., type: list, elements: str, default: []}
  sacctmgr:
    description: The sacctmgr executable.
    type: path
    default: sacctmgr
notes:
  - Check mode reports what would be added and runs only C(sacctmgr show). Where sacctmgr is not installed or
    slurmdbd is not reachable yet (the first check-mode run of a new site), everything counts as missing.
  - The user running the module must be a Slurm administrator (root or SlurmUser).
"""

EXAMPLES = r"""
- name: The lab's cluster, a teaching account and its students
  slurm_accounting:
    cluster: clusterhub-lab
    accounts:
      - name: students
        description: Teaching
        organization: lab
        users: [alice, bob]
"""

RETURN = r"""
commands:
  description: The sacctmgr argument lists run (would be run, in check mode), in order.
  returned: always
  type: list
  elements: list
  sample: [["add", "account", "students", "cluster=clusterhub-lab", "parent=root"]]
"""

import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.clusterhub_accounting import account_errors, parse_associations, plan

ASSOC_FORMAT = "format=account,user,parentname"


class AccountingError(Exception):
    """A sacctmgr call that failed."""


class Sacctmgr:
    """sacctmgr run by the module: `show` in parsable form, `add` without its confirmation prompt."""

    def __init__(self, module: AnsibleModule, path: str):
        self.module = module
        self.path = path

    def run(self, *words: str, immediate: bool = False) -> str:
        argv = [self.path, *(["--immediate"] if immediate else []), *words]
        rc, out, err = self.module.run_command(argv, environ_update={"LC_ALL": "C"})
        # an `add` of something that exists meanwhile (slurmctld registers its cluster itself) is not an error
        if rc != 0 and not (immediate and "already exists" in out + err):
            raise AccountingError(f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")
        return out

    def state(self, cluster: str) -> tuple[set[str], set[tuple[str, str]]]:
        clusters = {
            c.strip().lower()
            for c in self.run("--parsable2", "--noheader", "show", "cluster", "format=cluster").splitlines()
            if c.strip()
        }
        if cluster.lower() not in clusters:
            return clusters, set()
        out = self.run("--parsable2", "--noheader", "show", "association", f"cluster={cluster}", ASSOC_FORMAT)
        return clusters, parse_associations(out)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "cluster": {"type": "str", "required": True},
            "accounts": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "description": {"type": "str"},
                    "organization": {"type": "str"},
                    "parent": {"type": "str", "default": "root"},
                    "users": {"type": "list", "elements": "str", "default": []},
                },
            },
            "sacctmgr": {"type": "path", "default": "sacctmgr"},
        },
        supports_check_mode=True,
    )
    cluster, accounts = module.params["cluster"], module.params["accounts"]
    errors = account_errors(cluster, accounts)
    if errors:
        module.fail_json(msg="slurm_accounting: " + "; ".join(errors), changed=False)
    sacctmgr = Sacctmgr(module, module.params["sacctmgr"])
    try:
        clusters, associations = set(), set()
        if not module.check_mode or shutil.which(sacctmgr.path):
            try:
                clusters, associations = sacctmgr.state(cluster)
            except AccountingError as exc:
                if not module.check_mode:
                    raise
                # check mode before slurmdbd is configured: everything would be added
                module.warn(f"check mode: accounting not reachable yet, so all counts as missing ({exc})")
        commands = plan(cluster, accounts, clusters, associations)
        if not module.check_mode:
            for words in commands:
                sacctmgr.run(*words, immediate=True)
    except AccountingError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(changed=bool(commands), commands=commands)


if __name__ == "__main__":
    main()
