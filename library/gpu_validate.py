#!/usr/bin/python
"""Ansible module gpu_validate: read a node's NVIDIA GPUs and check them against the site's requirements."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_validate
short_description: Read the NVIDIA GPUs of a node and check them against minimum requirements
description:
  - Reads the NVIDIA GPUs of the node through NVML (the C(nvidia-ml-py) binding, C(import pynvml)) when
    that binding is importable, otherwise through
    C(nvidia-smi --query-gpu=... --format=csv,noheader,nounits).
  - >-
    Returns one dictionary of facts per GPU and fails with one sentence per problem, each naming the
    node, for example "node3: 2 GPUs found, 4 required" or
    "node3: GPU 1 (NVIDIA A100-SXM4-40GB) has 40960 MiB, 81920 MiB required".
  - >-
    Tells a node without a driver ("no NVIDIA driver installed (nvidia-smi not found)") from a node whose
    driver package is installed but whose kernel module is not loaded
    ("driver package installed but no NVIDIA kernel driver loaded (no nvidia module in /proc/modules)"),
    using nvidia-smi's own error output, C(/proc/driver/nvidia/version) and C(/proc/modules).
  - Optionally runs C(nvidia-smi -L) inside a container (C(docker run --rm --gpus all IMAGE) and/or
    C(apptainer exec --nv IMAGE)) and checks that it sees the same GPU UUIDs as the host.
  - The module only reads; it never changes the node and always reports C(changed=false).
    It never reports a GPU value the driver did not give; such values are C(null).
version_added: "0.1.0"
author:
  - clusterhub maintainers
requirements:
  - an NVIDIA driver with C(nvidia-smi), or the C(nvidia-ml-py) Python package (C(import pynvml)) on the node
  - C(docker) with the NVIDIA Container Toolkit, or C(apptainer), for the container check
options:
  node:
    description:
      - Name of the node used at the start of every message.
      - Defaults to the node's host name; playbooks usually pass C(inventory_hostname).
    type: str
  source:
    description:
      - Where to read the GPUs from.
      - V(auto) uses NVML when C(pynvml) can be imported and initialised, otherwise nvidia-smi.
      - V(nvml) requires C(pynvml); V(nvidia-smi) never uses NVML.
    type: str
    choices: [auto, nvml, nvidia-smi]
    default: auto
  min_count:
    description:
      - Minimum number of GPUs the node must have. V(0) disables the check.
    type: int
    default: 1
  min_memory_mib:
    description:
      - Minimum total memory of every GPU in MiB, as nvidia-smi reports C(memory.total)
        (an A100 40GB reports 40960, an H100 80GB HBM3 81559). V(0) disables the check.
    type: int
    default: 0
  min_driver:
    description:
      - Minimum NVIDIA driver version, dotted numbers such as V(535) or V(535.104.05); missing parts count as 0.
    type: str
  min_compute_cap:
    description:
      - Minimum CUDA compute capability of every GPU, such as V(7.0) or V(8.0).
      - Drivers whose nvidia-smi does not know the C(compute_cap) field (older than about 510) report no
        compute capability, which fails this check.
    type: str
  require_ecc_clean:
    description:
      - Fail when a GPU reports uncorrected volatile ECC errors (errors since the driver was loaded).
      - GPUs without ECC, such as GeForce cards, report no count and pass.
    type: bool
    default: true
  require_persistence:
    description:
      - Fail when a GPU has persistence mode disabled or does not report it.
    type: bool
    default: true
  container_runtime:
    description:
      - Container runtimes in which to run C(nvidia-smi -L) in O(container_image) and compare the GPU UUIDs
        it lists with the host's.
      - V(docker) runs C(docker run --rm --gpus all IMAGE nvidia-smi -L);
        V(apptainer) runs C(apptainer exec --nv IMAGE nvidia-smi -L).
      - The runtime may pull the image the first time. In check mode the container check is skipped.
    type: list
    elements: str
    choices: [docker, apptainer]
  container_image:
    description:
      - Image for the container check, for example V(nvidia/cuda:12.4.1-base-ubuntu22.04) for docker or
        V(docker://nvidia/cuda:12.4.1-base-ubuntu22.04) or a C(.sif) path for apptainer.
      - Required with O(container_runtime).
    type: str
  proc_root:
    description:
      - Where the node's proc file system is mounted; C(driver/nvidia/version) and C(modules) are read below it.
      - Change it only when the host's C(/proc) is mounted elsewhere, as in a monitoring container.
    type: path
    default: /proc
notes:
  - Supports check mode; the container check does not run in check mode.
  - nvidia-smi runs with C(LC_ALL=C).
seealso:
  - name: nvidia-smi documentation
    description: The fields of C(nvidia-smi --query-gpu).
    link: https://docs.nvidia.com/deploy/nvidia-smi/index.html
"""

EXAMPLES = r"""
- name: Require four GPUs with 80 GB, driver 535 or newer and compute capability 8.0
  gpu_validate:
    node: "{{ inventory_hostname }}"
    min_count: 4
    min_memory_mib: 81920
    min_driver: "535"
    min_compute_cap: "8.0"

- name: Also check that Docker and Apptainer containers see the same GPUs
  gpu_validate:
    node: "{{ inventory_hostname }}"
    container_runtime:
      - docker
      - apptainer
    container_image: nvidia/cuda:12.4.1-base-ubuntu22.04

- name: Only read the GPUs, check nothing, and keep going when a node fails
  gpu_validate:
    min_count: 0
    require_ecc_clean: false
    require_persistence: false
  register: gpu_facts
  failed_when: false
"""

RETURN = r"""
node:
  description: Name of the node used in the messages.
  returned: always
  type: str
  sample: node3
source:
  description: Where the GPUs were read from, V(nvml) or V(nvidia-smi).
  returned: when the GPUs could be read
  type: str
  sample: nvidia-smi
gpu_count:
  description: Number of GPUs found.
  returned: when the GPUs could be read
  type: int
  sample: 1
driver_version:
  description: NVIDIA driver version reported with the first GPU, V(null) without GPUs.
  returned: when the GPUs could be read
  type: str
  sample: 590.48.01
gpus:
  description: One entry per GPU; a value the driver does not report is V(null).
  returned: when the GPUs could be read
  type: list
  elements: dict
  contains:
    index:
      description: GPU index as nvidia-smi numbers it.
      type: int
      sample: 0
    name:
      description: Product name.
      type: str
      sample: NVIDIA H100 80GB HBM3
    uuid:
      description: GPU UUID.
      type: str
      sample: GPU-63d1e50a-b952-d15c-0740-12bc14859142
    memory_total_mib:
      description: Total memory in MiB.
      type: int
      sample: 81559
    driver_version:
      description: Driver version.
      type: str
      sample: 590.48.01
    utilization_gpu:
      description: GPU utilisation in percent at the time of the query.
      type: int
      sample: 0
    compute_cap:
      description: CUDA compute capability, V(null) when the driver cannot report it.
      type: str
      sample: "9.0"
    persistence_mode:
      description: Whether persistence mode is enabled, V(null) when not reported.
      type: bool
      sample: true
    ecc_errors_uncorrected:
      description: Uncorrected volatile ECC errors, V(null) for GPUs without ECC.
      type: int
      sample: 0
container_checks:
  description: One entry per container runtime checked.
  returned: when O(container_runtime) is set and not in check mode
  type: list
  elements: dict
  contains:
    runtime:
      description: Container runtime.
      type: str
      sample: docker
    image:
      description: Image used.
      type: str
      sample: nvidia/cuda:12.4.1-base-ubuntu22.04
    rc:
      description: Exit status of the container command, V(null) when the runtime is not installed.
      type: int
      sample: 0
    uuids:
      description: GPU UUIDs the container listed.
      type: list
      elements: str
      sample: [GPU-63d1e50a-b952-d15c-0740-12bc14859142]
    problems:
      description: Sentences for the differences found.
      type: list
      elements: str
      sample: []
problems:
  description: One sentence per problem found; empty when the node meets every requirement.
  returned: always
  type: list
  elements: str
  sample: ["node3: 2 GPUs found, 4 required"]
msg:
  description: The sentences of RV(problems) joined with C(; ).
  returned: failure
  type: str
  sample: "node3: GPU 1 (NVIDIA A100-SXM4-40GB) has 40960 MiB, 81920 MiB required"
rc:
  description: Exit status of the nvidia-smi query, V(0) when NVML was used.
  returned: always
  type: int
  sample: 0
stdout:
  description: Output of the nvidia-smi query.
  returned: always
  type: str
stderr:
  description: Error output of the nvidia-smi query.
  returned: always
  type: str
"""

import socket
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.clusterhub_gpu import (
    QUERY_FIELDS,
    ParseError,
    check_gpus,
    compare_container_gpus,
    container_command,
    diagnose_nvml_failure,
    diagnose_smi_failure,
    invalid_field,
    kernel_driver_state,
    no_devices_found,
    no_driver_installed,
    parse_gpus,
    parse_list_gpus,
    query_command,
    read_nvml,
    version_tuple,
)

try:
    import pynvml
except ImportError:
    pynvml = None
    PYNVML_IMPORT_ERROR = traceback.format_exc()
else:
    PYNVML_IMPORT_ERROR = None

# nvidia-smi and the container runtimes run in the C locale, so that their output can be parsed.
C_LOCALE = {"LC_ALL": "C"}
# Fields the module cannot do without; others are dropped when an older nvidia-smi refuses them.
ESSENTIAL_FIELDS = ("index", "name", "uuid")

ARGUMENT_SPEC = {
    "node": {"type": "str"},
    "source": {"type": "str", "default": "auto", "choices": ["auto", "nvml", "nvidia-smi"]},
    "min_count": {"type": "int", "default": 1},
    "min_memory_mib": {"type": "int", "default": 0},
    "min_driver": {"type": "str"},
    "min_compute_cap": {"type": "str"},
    "require_ecc_clean": {"type": "bool", "default": True},
    "require_persistence": {"type": "bool", "default": True},
    "container_runtime": {"type": "list", "elements": "str", "choices": ["docker", "apptainer"]},
    "container_image": {"type": "str"},
    "proc_root": {"type": "path", "default": "/proc"},
}


def query_nvidia_smi(module, nvidia_smi):
    """Run the CSV query; drop, one by one, the optional fields an older nvidia-smi does not know."""
    fields = list(QUERY_FIELDS)
    while True:
        rc, stdout, stderr = module.run_command(query_command(nvidia_smi, fields), environ_update=C_LOCALE)
        refused = invalid_field(stdout + stderr)
        if rc != 0 and refused in fields and refused not in ESSENTIAL_FIELDS:
            fields.remove(refused)
            continue
        return fields, rc, stdout, stderr


def check_containers(module, node, gpus):
    """Run nvidia-smi -L in each requested container runtime and compare its GPUs with the host's."""
    image = module.params["container_image"]
    checks = []
    for runtime in module.params["container_runtime"] or []:
        if module.check_mode:
            module.warn(f"check mode: the {runtime} container check with {image} was not run")
            continue
        executable = module.get_bin_path(runtime, required=False)
        if executable is None:
            found = [f"{node}: {runtime} is not installed, so the container check with {image} cannot run"]
            checks.append({"runtime": runtime, "image": image, "rc": None, "uuids": [], "problems": found})
            continue
        rc, stdout, stderr = module.run_command(container_command(runtime, executable, image), environ_update=C_LOCALE)
        found = compare_container_gpus(node, runtime, image, gpus, rc=rc, stdout=stdout, stderr=stderr)
        uuids = [gpu["uuid"] for gpu in parse_list_gpus(stdout)]
        checks.append({"runtime": runtime, "image": image, "rc": rc, "uuids": uuids, "problems": found})
    return checks


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_by={"container_runtime": ("container_image",)},
        supports_check_mode=True,
    )
    params = module.params
    node = params["node"] or socket.gethostname()
    result = {"changed": False, "node": node, "problems": [], "rc": 0, "stdout": "", "stderr": ""}

    def fail(problems, **extra):
        result.update(extra)
        result["problems"] = problems
        module.fail_json(msg="; ".join(problems), **result)

    for option in ("min_driver", "min_compute_cap"):
        if params[option]:
            try:
                version_tuple(params[option])
            except ValueError as exc:
                module.fail_json(msg=f"{option}: {exc}", **result)

    gpus = None
    if params["source"] in ("auto", "nvml"):
        if pynvml is None and params["source"] == "nvml":
            module.fail_json(
                msg=f"{node}: source=nvml but " + missing_required_lib("nvidia-ml-py"),
                exception=PYNVML_IMPORT_ERROR,
                **result,
            )
        if pynvml is not None:
            try:
                gpus = read_nvml(pynvml)
                result["source"] = "nvml"
            except pynvml.NVMLError as exc:
                if params["source"] == "nvml":
                    fail([diagnose_nvml_failure(node, exc, kernel_driver_state(params["proc_root"]))])
                module.warn(f"NVML could not be used ({exc}); reading the GPUs with nvidia-smi")

    if gpus is None:
        nvidia_smi = module.get_bin_path("nvidia-smi", required=False, opt_dirs=["/usr/local/nvidia/bin"])
        if nvidia_smi is None:
            fail([no_driver_installed(node)])
        fields, rc, stdout, stderr = query_nvidia_smi(module, nvidia_smi)
        result.update(rc=rc, stdout=stdout, stderr=stderr)
        if rc != 0 and not no_devices_found(stdout + stderr):
            fail([diagnose_smi_failure(node, rc, stdout, stderr, kernel_driver_state(params["proc_root"]))])
        try:
            gpus = parse_gpus(stdout, fields)
        except ParseError as exc:
            fail([f"{node}: the output of nvidia-smi could not be read: {exc}"])
        result["source"] = "nvidia-smi"

    result.update(gpus=gpus, gpu_count=len(gpus), driver_version=gpus[0]["driver_version"] if gpus else None)
    problems = check_gpus(
        node,
        gpus,
        min_count=params["min_count"],
        min_memory_mib=params["min_memory_mib"],
        min_driver=params["min_driver"],
        min_compute_cap=params["min_compute_cap"],
        require_ecc_clean=params["require_ecc_clean"],
        require_persistence=params["require_persistence"],
    )
    if params["container_runtime"]:
        result["container_checks"] = check_containers(module, node, gpus)
        for check in result["container_checks"]:
            problems.extend(check["problems"])
    if problems:
        fail(problems)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
