#!/usr/bin/python
"""Ansible module docker_daemon_json: merge settings into Docker's daemon.json, keeping every other key."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_json
short_description: Merge settings into Docker's daemon.json without dropping the keys others wrote
description:
  - Deep-merges O(settings) into the JSON object in O(path). Nested objects merge key by key; any other value
    (a string, a number, a list) in O(settings) replaces the file's. Keys O(settings) does not name are kept, so
    several roles (and the site) can each own their keys of one file.
  - A missing or empty file counts as an empty object and is written.
  - The file is written only when the merged document differs from the one it holds (however it is formatted),
    in one rendering (sorted keys, 2-space indent, final newline), atomically (a temporary file in the same
    directory, checked with O(validate), then renamed over O(path)).
  - A file that is not valid JSON, or whose top level is not an object, is never overwritten; the module fails
    naming the file and the problem.
version_added: "0.1.0"
author:
  - clusterhub maintainers
options:
  path:
    description: The JSON file. Its directory must exist.
    type: path
    default: /etc/docker/daemon.json
  settings:
    description:
      - The keys to merge in. A V(null) value is written as JSON C(null); nothing is removed.
    type: dict
    required: true
  validate:
    description:
      - A command that checks the merged file before it replaces O(path); C(%s) stands for the temporary file.
        The file is left unchanged when the command fails.
      - For example C(dockerd --validate --config-file %s) (Docker 23 and later) or C(python3 -m json.tool %s).
    type: str
extends_documentation_fragment:
  - ansible.builtin.files
notes:
  - Check mode reports whether the file would change and writes nothing (O(validate) does not run).
  - With C(--diff) the module returns the file's text before and after.
  - Restarting dockerd to apply the change is left to a handler.
"""

EXAMPLES = r"""
- name: Bounded container logs, keeping whatever else daemon.json holds
  docker_daemon_json:
    settings:
      log-driver: json-file
      log-opts:
        max-size: 10m
    owner: root
    group: root
    mode: "0644"
  notify: Restart docker

- name: The nvidia runtime, checked by dockerd before it goes live
  docker_daemon_json:
    path: /etc/docker/daemon.json
    settings:
      runtimes:
        nvidia:
          path: nvidia-container-runtime
          args: []
    validate: /usr/bin/dockerd --validate --config-file %s
    owner: root
    group: root
    mode: "0644"
"""

RETURN = r"""
path:
  description: The file merged into.
  returned: always
  type: str
  sample: /etc/docker/daemon.json
config:
  description: The whole document the file holds after the merge (would hold, in check mode).
  returned: always
  type: dict
  sample: {"log-driver": "json-file", "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}
diff:
  description: The file's text before and after (with C(--diff)).
  returned: when diff mode is on
  type: dict
  sample: {"before": "{}\n", "after": "{\n  \"iptables\": false\n}\n"}
"""

import os
import shlex
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.clusterhub_json import JsonFileError, plan_merge

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def argument_spec() -> dict:
    """This module's own options (AnsibleModule adds the file options, owner, group, mode, ..., to a copy)."""
    return {
        "path": {"type": "path", "default": "/etc/docker/daemon.json"},
        "settings": {"type": "dict", "required": True},
        "validate": {"type": "str"},
    }


def read(path: str):
    """The file's bytes, or None when there is no file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write(module: AnsibleModule, path: str, text: str) -> None:
    """text into path through a checked temporary file in the same directory; the old file stays on any failure."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        module.fail_json(msg=f"{path} cannot be written: its directory {directory} does not exist", path=path)
    fd, tmp = tempfile.mkstemp(prefix=".daemon_json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        check = module.params["validate"]
        if check:
            if "%s" not in check:
                module.fail_json(msg=f"validate must contain %s (the file to check), got {check!r}", path=path)
            rc, out, err = module.run_command(
                [word.replace("%s", tmp) for word in shlex.split(check)], environ_update=C_LOCALE
            )
            if rc != 0:
                module.fail_json(
                    msg=f"the merged {path} failed the check {check!r}; the file was left unchanged",
                    rc=rc,
                    stdout=out,
                    stderr=err,
                    path=path,
                )
        module.atomic_move(tmp, path, unsafe_writes=module.params["unsafe_writes"])
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), add_file_common_args=True, supports_check_mode=True)
    path = module.params["path"]
    before = read(path)
    try:
        document, text = plan_merge(before, module.params["settings"], path)
    except JsonFileError as exc:
        module.fail_json(msg=str(exc), path=path, changed=False)
    result = {"changed": text is not None, "path": path, "config": document}
    before_text = (before or b"").decode("utf-8")
    if module._diff:
        after_text = before_text if text is None else text
        result["diff"] = {"before_header": path, "after_header": path, "before": before_text, "after": after_text}
    if text is not None and not module.check_mode:
        write(module, path, text)
    if os.path.exists(path):  # owner, group, mode (in check mode: whether they would change)
        file_args = module.load_file_common_arguments(module.params)
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
