"""Decide whether the NVIDIA kernel module is loaded, can be loaded, or why not.

Plain function, tested by tests/unit/test_nvidia_driver_module_state.py without Ansible.
"""

from __future__ import annotations

import re

# Debian names its DKMS module nvidia-current(.ko), NVIDIA's packages nvidia(.ko); open flavours add -open.
MODULE_FILE_RE = re.compile(r"(^|/)nvidia(-current)?(-open)?\.ko(\.(xz|zst|gz))?$")


def loaded_modules(proc_modules: str) -> set[str]:
    """Module names from the text of /proc/modules (first field of each line)."""
    return {line.split(" ", 1)[0] for line in proc_modules.splitlines() if line.strip()}


def nvidia_driver_module_state(
    proc_modules: str | None,
    module_files,
    kernel: str,
    container: str = "",
    driver_proc_entry: bool = False,
) -> dict:
    """{loaded, reason, reboot_required}; an empty reason with loaded false means: try modprobe.

    proc_modules: the text of /proc/modules, None where the kernel has none (no module support).
    module_files: paths of NVIDIA kernel module files found under /lib/modules.
    kernel: the running kernel's release (uname -r).
    container: the container type when running in one (docker, podman, lxc...), else "".
    driver_proc_entry: whether /proc/driver/nvidia/version exists (the driver is up).
    """
    modules = loaded_modules(proc_modules or "")
    files = [str(path) for path in module_files if MODULE_FILE_RE.search(str(path))]
    for_running = [path for path in files if path.startswith(f"/lib/modules/{kernel}/")]
    if driver_proc_entry or "nvidia" in modules:
        return {"loaded": True, "reason": "", "reboot_required": False}
    if container:
        reason = f"running in a container ({container}): the host's kernel must load it"
        return {"loaded": False, "reason": reason, "reboot_required": False}
    if proc_modules is None:
        reason = f"the running kernel {kernel} cannot load modules (no /proc/modules)"
        return {"loaded": False, "reason": reason, "reboot_required": False}
    if "nouveau" in modules:
        reason = "nouveau holds the GPU (it is blacklisted now); reboot required"
        return {"loaded": False, "reason": reason, "reboot_required": True}
    if not for_running and files:
        reason = f"the module is built for another kernel than the running {kernel}; reboot required"
        return {"loaded": False, "reason": reason, "reboot_required": True}
    if not for_running:
        reason = f"no module built for kernel {kernel} (are its headers installed? see `dkms status`)"
        return {"loaded": False, "reason": reason, "reboot_required": False}
    return {"loaded": False, "reason": "", "reboot_required": False}


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"nvidia_driver_module_state": nvidia_driver_module_state}
