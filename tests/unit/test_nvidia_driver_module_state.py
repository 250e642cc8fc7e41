"""The nvidia_driver role's decision: module loaded, loadable, or why not (roles/nvidia_driver/filter_plugins)."""

from pathlib import Path

import nvidia_driver
import pytest

ROOT = Path(__file__).resolve().parents[2]
state = nvidia_driver.nvidia_driver_module_state

KERNEL = "6.12.57+deb13-amd64"
# /proc/modules lines: name size refcount dependents state address [taint flags] (proc(5)).
EXT4 = "ext4 1118208 1 - Live 0x0000000000000000\n"
NOUVEAU = "nouveau 3096576 0 - Live 0x0000000000000000\n"
NVIDIA = "nvidia 60022784 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n"
BUILT = [f"/lib/modules/{KERNEL}/updates/dkms/nvidia-current.ko.xz"]
BUILT_OTHER = ["/lib/modules/6.12.48+deb13-amd64/updates/dkms/nvidia-current.ko.xz"]


def test_loaded_module_is_reported_loaded():
    assert state(EXT4 + NVIDIA, BUILT, KERNEL) == {"loaded": True, "reason": "", "reboot_required": False}


def test_driver_proc_entry_counts_as_loaded():
    assert state(EXT4, [], KERNEL, driver_proc_entry=True)["loaded"] is True


def test_built_module_for_the_running_kernel_is_to_be_loaded():
    assert state(EXT4, BUILT, KERNEL) == {"loaded": False, "reason": "", "reboot_required": False}


def test_container_never_loads_and_never_reboots():
    result = state(None, [], KERNEL, container="docker")
    assert result == {
        "loaded": False,
        "reason": "running in a container (docker): the host's kernel must load it",
        "reboot_required": False,
    }


def test_kernel_without_module_support():
    assert state(None, [], "6.18.44-fc-v595")["reason"] == (
        "the running kernel 6.18.44-fc-v595 cannot load modules (no /proc/modules)"
    )


def test_nouveau_loaded_needs_a_reboot():
    result = state(EXT4 + NOUVEAU, BUILT, KERNEL)
    assert result["reboot_required"] is True
    assert "nouveau holds the GPU" in result["reason"]


def test_module_built_only_for_another_kernel_needs_a_reboot():
    result = state(EXT4, BUILT_OTHER, KERNEL)
    assert result["reboot_required"] is True
    assert f"another kernel than the running {KERNEL}" in result["reason"]


def test_no_module_built_names_the_headers():
    result = state(EXT4, [], KERNEL)
    assert result["reboot_required"] is False
    assert result["reason"] == f"no module built for kernel {KERNEL} (are its headers installed? see `dkms status`)"


@pytest.mark.parametrize(
    "path",
    [
        f"/lib/modules/{KERNEL}/updates/dkms/nvidia.ko",
        f"/lib/modules/{KERNEL}/updates/dkms/nvidia-current-open.ko.zst",
        f"/lib/modules/{KERNEL}/kernel/drivers/video/nvidia-open.ko.gz",
    ],
)
def test_module_file_names_of_the_flavours(path):
    assert state(EXT4, [path], KERNEL)["reason"] == ""


def test_other_nvidia_modules_are_not_the_driver():
    # nvidia-uvm, nvidia-drm, nvidia-modeset alone do not make a loadable driver
    uvm = [f"/lib/modules/{KERNEL}/updates/dkms/nvidia-current-uvm.ko.xz"]
    assert state(EXT4, uvm, KERNEL)["reason"].startswith("no module built")
