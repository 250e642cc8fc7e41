"""gpu_validate (library/gpu_validate.py, module_utils/clusterhub_gpu.py) against real nvidia-smi output.

The fixtures are captures from public issues and repositories (see fixtures/nvidia-smi/README.md).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import gpu_validate
import pytest
from ansible.module_utils import basic
from ansible.module_utils.clusterhub_gpu import (
    QUERY_FIELDS,
    ParseError,
    check_gpus,
    compare_container_gpus,
    container_command,
    diagnose_smi_failure,
    invalid_field,
    kernel_driver_state,
    no_devices_found,
    parse_gpus,
    parse_list_gpus,
    parse_number,
    parse_query_csv,
    query_command,
    read_nvml,
    version_at_least,
    version_tuple,
)
from ansible.module_utils.testing import patch_module_args
from module_harness import Exited

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"

H100_CSV = "query-gpu-all_h100-80gb-hbm3_590.48.01.csv"
RTX4080_CSV = "query-gpu-all_rtx-4080-super_595.71.05.csv"
TITAN_CSV = "query-gpu_titan-v_rtx-5880-ada_570.86.15.csv"
RTX2080_CSV = "query-gpu-noheader-nounits_rtx-2080_440.64.csv"
# The --query-gpu lists of the captures without a header line, as their sources give them.
RTX2080_FIELDS = [
    "power.limit",
    "power.min_limit",
    "power.max_limit",
    "memory.total",
    "vbios_version",
    "driver_version",
    "name",
    "gpu_uuid",
    "power.draw",
    "temperature.gpu",
    "temperature.memory",
    "clocks.current.graphics",
    "clocks.sm",
    "clocks.mem",
    "utilization.gpu",
    "utilization.memory",
    "fan.speed",
    "pcie.link.width.current",
    "pstate",
]
GTX770_FIELDS = [
    "gpu_name",
    "utilization.gpu",
    "utilization.memory",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "fan.speed",
    "pstate",
    "clocks.current.graphics",
    "clocks.current.memory",
    "power.max_limit",
    "power.default_limit",
]
FAN_FIELDS = [
    "memory.total",
    "memory.free",
    "memory.used",
    "temperature.gpu",
    "fan.speed",
    "utilization.gpu",
    "utilization.memory",
]
NO_DRIVER = "error_couldnt-communicate-with-driver.txt"
MASKED_UUID = "GPU-00000000-0000-0000-0000-000000000000"


def fixture(name):
    return (FIXTURES / name).read_text(encoding="utf-8")


def gpus_of(name, fields=None):
    return parse_gpus(fixture(name), fields)


H100 = {
    "index": 0,
    "name": "NVIDIA H100 80GB HBM3",
    "uuid": MASKED_UUID,
    "memory_total_mib": 81559,
    "driver_version": "590.48.01",
    "utilization_gpu": 0,
    "compute_cap": "9.0",
    "persistence_mode": True,
    "ecc_errors_uncorrected": 0,
}
RTX4080 = {
    "index": 0,
    "name": "NVIDIA GeForce RTX 4080 SUPER",
    "uuid": MASKED_UUID,
    "memory_total_mib": 16376,
    "driver_version": "595.71.05",
    "utilization_gpu": 0,
    "compute_cap": "8.9",
    "persistence_mode": False,
    "ecc_errors_uncorrected": None,
}
UNREPORTED = dict.fromkeys(H100, None)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        (H100_CSV, None, [H100]),
        (H100_CSV, QUERY_FIELDS, [H100]),  # the header wins over the field list
        (RTX4080_CSV, None, [RTX4080]),
        (
            TITAN_CSV,
            None,
            [
                {
                    **UNREPORTED,
                    "index": 0,
                    "name": "NVIDIA TITAN V",
                    "driver_version": "570.86.15",
                    "compute_cap": "7.0",
                },
                {
                    **UNREPORTED,
                    "index": 1,
                    "name": "NVIDIA RTX 5880 Ada Generation",
                    "driver_version": "570.86.15",
                    "compute_cap": "8.9",
                },
            ],
        ),
        (
            RTX2080_CSV,
            RTX2080_FIELDS,
            [
                {
                    **UNREPORTED,
                    "name": "GeForce RTX 2080",
                    "uuid": "GPU-22b2c6ac-2d49-4863-197c-9c469071178a",
                    "memory_total_mib": 7979,
                    "driver_version": "440.64",
                    "utilization_gpu": 86,
                },
            ],
        ),
        (
            "query-gpu-noheader-nounits_h100l-2-24c-vgpu.csv",
            ["clocks.max.sm", "memory.total", "gpu_name"],
            [{**UNREPORTED, "name": "NVIDIA H100L-2-24C", "memory_total_mib": 24576}],
        ),
        (
            "query-gpu-noheader_gtx-770.csv",
            GTX770_FIELDS,
            [{**UNREPORTED, "name": "GeForce GTX 770"}],
        ),
        ("query-gpu_gtx-650_410.78.csv", None, [UNREPORTED]),
        ("error_no-devices-were-found.txt", QUERY_FIELDS, []),
    ],
    ids=[
        "h100",
        "h100-header-wins",
        "rtx4080",
        "titan-v+rtx5880",
        "rtx2080-nounits",
        "h100l-vgpu",
        "gtx770",
        "gtx650",
        "none",
    ],
)
def test_real_outputs_parse_to_the_right_facts(name, fields, expected):
    assert gpus_of(name, fields) == expected


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        (H100_CSV, None, {"memory.total": "81559 MiB", "utilization.gpu": "0 %", "fan.speed": "[N/A]"}),
        (RTX4080_CSV, None, {"temperature.memory": "N/A", "platform.chassis_serial_number": ""}),
        (
            "query-gpu-noheader-nounits_na-fan.csv",
            FAN_FIELDS,
            {"memory.total": "2004", "fan.speed": "[N/A]"},
        ),
        (
            "query-gpu-noheader-nounits_not-supported-fan.csv",
            FAN_FIELDS,
            {"memory.total": "2004", "fan.speed": "[Not Supported]"},
        ),
        ("query-gpu_gtx-650_410.78.csv", None, {"utilization.gpu": "[Not Supported]"}),
    ],
)
def test_columns_are_mapped_by_header_or_field_list(name, fields, expected):
    (row,) = parse_query_csv(fixture(name), fields)
    assert {key: row[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("81559 MiB", "MiB", 81559),
        ("81559", "MiB", 81559),
        ("0 %", "%", 0),
        ("176.98", None, 176.98),
        ("[N/A]", "MiB", None),
        ("N/A", None, None),
        ("[Not Supported]", "%", None),
        ("[Requested functionality has been deprecated]", None, None),
        ("", None, None),
    ],
)
def test_numbers_with_and_without_units(value, unit, expected):
    assert parse_number(value, unit) == expected


def test_a_number_in_another_unit_is_refused():
    with pytest.raises(ParseError, match="not in MiB"):
        parse_number("80 GiB", "MiB")


def test_a_short_line_is_a_parse_error():
    with pytest.raises(ParseError, match="has 19 values for 9 fields"):
        parse_query_csv(fixture(RTX2080_CSV), QUERY_FIELDS)


def test_data_without_header_needs_a_field_list():
    with pytest.raises(ParseError, match="not a CSV header"):
        parse_query_csv(fixture(RTX2080_CSV))


def test_the_query_is_one_list_without_header_or_units():
    assert query_command("/usr/bin/nvidia-smi") == [
        "/usr/bin/nvidia-smi",
        "--query-gpu=index,name,uuid,memory.total,driver_version,utilization.gpu,compute_cap,persistence_mode,"
        "ecc.errors.uncorrected.volatile.total",
        "--format=csv,noheader,nounits",
    ]


@pytest.mark.parametrize(
    ("name", "count", "first", "migs"),
    [
        ("list-gpus_h100-80gb-hbm3_590.48.01.txt", 1, ("NVIDIA H100 80GB HBM3", MASKED_UUID), [0]),
        ("list-gpus_rtx-4080-super_595.71.05.txt", 1, ("NVIDIA GeForce RTX 4080 SUPER", MASKED_UUID), [0]),
        (
            "list-gpus_8x-h100-80gb-hbm3-mig.txt",
            8,
            ("NVIDIA H100 80GB HBM3", "GPU-63d1e50a-b952-d15c-0740-12bc14859142"),
            [7] * 8,
        ),
        (
            "list-gpus_4x-a100-sxm4-80gb-mig.txt",
            4,
            ("NVIDIA A100-SXM4-80GB", "GPU-513536b6-7d19-9063-b049-1e69664bb298"),
            [4, 0, 0, 0],
        ),
        (
            "list-gpus_2x-quadro-rtx-4000_535.129.03.txt",
            2,
            ("Quadro RTX 4000", "GPU-c7b57be0-94ff-d352-a59b-d0ee00aeed43"),
            [0, 0],
        ),
        (
            "list-gpus_titan-v_rtx-5880-ada_570.86.15.txt",
            2,
            ("NVIDIA TITAN V", "GPU-b5169cef-2205-c30e-f2b3-220cfa14bafd"),
            [0, 0],
        ),
    ],
)
def test_list_gpus(name, count, first, migs):
    gpus = parse_list_gpus(fixture(name))
    assert len(gpus) == count
    assert [gpu["index"] for gpu in gpus] == list(range(count))
    assert (gpus[0]["name"], gpus[0]["uuid"]) == first
    assert [len(gpu["mig_uuids"]) for gpu in gpus] == migs


def test_an_old_driver_names_the_field_it_does_not_know():
    assert invalid_field(fixture("error_compute-cap-not-a-valid-field.txt")) == "compute_cap"
    assert invalid_field(fixture(H100_CSV)) is None


def test_no_devices():
    assert no_devices_found(fixture("error_no-devices-were-found.txt"))
    assert not no_devices_found(fixture(H100_CSV))


# --- NVML --------------------------------------------------------------------------------------


class FakeNVMLError(Exception):
    pass


def nvml_binding(gpus, driver, unsupported=()):
    """A pynvml stand-in answering with given values; calls named in `unsupported` raise NVMLError."""

    def call(name, value):
        def answer(*_args):
            if name in unsupported:
                raise FakeNVMLError("Not Supported")
            return value

        return answer

    def per_gpu(name, pick):
        def answer(handle, *_args):
            if name in unsupported:
                raise FakeNVMLError("Not Supported")
            return pick(gpus[handle])

        return answer

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_FEATURE_ENABLED=1,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1,
        NVML_VOLATILE_ECC=0,
        nvmlInit=call("init", None),
        nvmlShutdown=call("shutdown", None),
        nvmlSystemGetDriverVersion=call("driver", driver),
        nvmlDeviceGetCount=call("count", len(gpus)),
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetName=per_gpu("name", lambda gpu: gpu["name"].encode()),  # older bindings return bytes
        nvmlDeviceGetUUID=per_gpu("uuid", lambda gpu: gpu["uuid"]),
        nvmlDeviceGetMemoryInfo=per_gpu("memory", lambda gpu: SimpleNamespace(total=gpu["memory_total_mib"] << 20)),
        nvmlDeviceGetUtilizationRates=per_gpu("utilization", lambda gpu: SimpleNamespace(gpu=gpu["utilization_gpu"])),
        nvmlDeviceGetCudaComputeCapability=per_gpu(
            "capability", lambda gpu: tuple(int(part) for part in gpu["compute_cap"].split("."))
        ),
        nvmlDeviceGetPersistenceMode=per_gpu("persistence", lambda gpu: int(gpu["persistence_mode"])),
        nvmlDeviceGetTotalEccErrors=per_gpu("ecc", lambda gpu: gpu["ecc_errors_uncorrected"]),
    )


def test_nvml_gives_the_same_facts_as_nvidia_smi():
    # The values nvidia-smi printed for the H100 capture, answered through the NVML calls instead.  NVML gives
    # the memory in bytes: 85520809984 for an H100 (https://github.com/modal-labs/modal-client/pull/2797),
    # which is the 81559 MiB nvidia-smi prints.
    assert H100["memory_total_mib"] << 20 == 85520809984
    assert read_nvml(nvml_binding([H100], "590.48.01")) == gpus_of(H100_CSV)


def test_nvml_calls_a_gpu_does_not_support_give_none():
    binding = nvml_binding([{**RTX4080, "ecc_errors_uncorrected": 0}], "595.71.05", unsupported=("ecc",))
    assert read_nvml(binding) == [RTX4080]


# --- checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields", "requirements", "expected"),
    [
        (TITAN_CSV, None, {"min_count": 4}, ["node3: 2 GPUs found, 4 required"]),
        (H100_CSV, None, {"min_count": 2}, ["node3: 1 GPU found, 2 required"]),
        ("error_no-devices-were-found.txt", QUERY_FIELDS, {"min_count": 1}, ["node3: 0 GPUs found, 1 required"]),
        (H100_CSV, None, {"min_count": 1}, []),
        # An "80GB" H100 reports 81559 MiB: less than 80 GiB.
        (
            H100_CSV,
            None,
            {"min_memory_mib": 81920},
            ["node3: GPU 0 (NVIDIA H100 80GB HBM3) has 81559 MiB, 81920 MiB required"],
        ),
        (
            RTX4080_CSV,
            None,
            {"min_memory_mib": 24576},
            ["node3: GPU 0 (NVIDIA GeForce RTX 4080 SUPER) has 16376 MiB, 24576 MiB required"],
        ),
        (
            TITAN_CSV,
            None,
            {"min_memory_mib": 8192},
            [
                "node3: GPU 0 (NVIDIA TITAN V) did not report its memory, 8192 MiB required",
                "node3: GPU 1 (NVIDIA RTX 5880 Ada Generation) did not report its memory, 8192 MiB required",
            ],
        ),
        (H100_CSV, None, {"min_memory_mib": 81559}, []),
        (
            RTX2080_CSV,
            RTX2080_FIELDS,
            {"min_driver": "450"},
            ["node3: NVIDIA driver 440.64 is older than the 450 required"],
        ),
        (RTX2080_CSV, RTX2080_FIELDS, {"min_driver": "440.64"}, []),
        (
            H100_CSV,
            None,
            {"min_driver": "590.48.2"},
            ["node3: NVIDIA driver 590.48.01 is older than the 590.48.2 required"],
        ),
        (H100_CSV, None, {"min_driver": "535.104.05"}, []),
        (
            TITAN_CSV,
            None,
            {"min_compute_cap": "8.0"},
            ["node3: GPU 0 (NVIDIA TITAN V) has compute capability 7.0, 8.0 required"],
        ),
        (
            RTX2080_CSV,
            RTX2080_FIELDS,
            {"min_compute_cap": "7.5"},
            [
                "node3: GPU GPU-22b2c6ac-2d49-4863-197c-9c469071178a (GeForce RTX 2080) did not report its compute "
                "capability, 7.5 required"
            ],
        ),
        (H100_CSV, None, {"min_compute_cap": "9.0"}, []),
        (H100_CSV, None, {"require_ecc_clean": True}, []),
        (RTX4080_CSV, None, {"require_ecc_clean": True}, []),  # no ECC on GeForce: nothing to count
        (
            RTX4080_CSV,
            None,
            {"require_persistence": True},
            ["node3: GPU 0 (NVIDIA GeForce RTX 4080 SUPER) has persistence mode disabled, enabled required"],
        ),
        (
            TITAN_CSV,
            None,
            {"require_persistence": True},
            [
                "node3: GPU 0 (NVIDIA TITAN V) does not report a persistence mode, enabled required",
                "node3: GPU 1 (NVIDIA RTX 5880 Ada Generation) does not report a persistence mode, enabled required",
            ],
        ),
        (H100_CSV, None, {"require_persistence": True}, []),
        (
            RTX4080_CSV,
            None,
            {"min_count": 2, "min_memory_mib": 24576, "min_driver": "600", "require_persistence": True},
            [
                "node3: 1 GPU found, 2 required",
                "node3: NVIDIA driver 595.71.05 is older than the 600 required",
                "node3: GPU 0 (NVIDIA GeForce RTX 4080 SUPER) has 16376 MiB, 24576 MiB required",
                "node3: GPU 0 (NVIDIA GeForce RTX 4080 SUPER) has persistence mode disabled, enabled required",
            ],
        ),
    ],
)
def test_each_check_passes_or_fails_with_its_sentence(name, fields, requirements, expected):
    assert check_gpus("node3", gpus_of(name, fields), **requirements) == expected


def test_uncorrected_ecc_errors_fail():
    # No public capture shows uncorrected errors, so the count of the real H100 facts is raised here.
    gpus = [{**gpus_of(H100_CSV)[0], "ecc_errors_uncorrected": 2}]
    assert check_gpus("node3", gpus, require_ecc_clean=True) == [
        "node3: GPU 0 (NVIDIA H100 80GB HBM3) has 2 uncorrected volatile ECC errors"
    ]
    assert check_gpus("node3", gpus, require_ecc_clean=False) == []


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [("590.48.01", "590.48.1", True), ("440.64", "450", False), ("535", "535.0.0", True), ("9.0", "8.9", True)],
)
def test_versions_compare_as_numbers(version, minimum, expected):
    assert version_at_least(version, minimum) is expected


def test_a_version_must_be_dotted_numbers():
    with pytest.raises(ValueError, match="'r535' is not a version"):
        version_tuple("r535")


# --- no driver ---------------------------------------------------------------------------------


def proc_root(tmp_path, modules=None, version=None):
    """A fake /proc with the given files (fixture names); modules='' writes an empty /proc/modules."""
    if modules is not None:
        (tmp_path / "modules").write_text(fixture(modules) if modules else "", encoding="utf-8")
    if version is not None:
        (tmp_path / "driver" / "nvidia").mkdir(parents=True)
        (tmp_path / "driver" / "nvidia" / "version").write_text(fixture(version), encoding="utf-8")
    return str(tmp_path)


def test_kernel_driver_state(tmp_path):
    root = tmp_path / "loaded-version"
    root.mkdir()
    assert kernel_driver_state(proc_root(root, modules="", version="proc-driver-nvidia-version_510.60.02.txt")) == (
        "loaded",
        f"{root}/driver/nvidia/version exists",
    )
    root = tmp_path / "loaded-module"
    root.mkdir()
    assert kernel_driver_state(proc_root(root, modules="proc-modules_nvidia-loaded.txt"))[0] == "loaded"
    root = tmp_path / "absent"
    root.mkdir()
    assert kernel_driver_state(proc_root(root, modules="")) == ("absent", f"no nvidia module in {root}/modules")
    root = tmp_path / "unknown"
    root.mkdir()
    assert kernel_driver_state(str(root))[0] == "unknown"


@pytest.mark.parametrize(
    ("name", "rc", "state", "expected"),
    [
        (
            NO_DRIVER,
            9,
            ("absent", "no nvidia module in /proc/modules"),
            "node1: driver package installed but no NVIDIA kernel driver loaded (no nvidia module in /proc/modules)",
        ),
        (
            NO_DRIVER,
            9,
            ("unknown", "/proc/driver/nvidia/version missing, /proc/modules unreadable"),
            "node1: driver package installed but no NVIDIA kernel driver loaded (nvidia-smi: NVIDIA-SMI has failed "
            "because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is "
            "installed and running.)",
        ),
        (
            NO_DRIVER,
            9,
            ("loaded", "nvidia module listed in /proc/modules"),
            "node1: nvidia-smi cannot communicate with the NVIDIA kernel driver although it is loaded (nvidia module "
            "listed in /proc/modules); check the /dev/nvidia* device nodes and their permissions",
        ),
        (
            "error_driver-library-version-mismatch.txt",
            18,
            ("loaded", "/proc/driver/nvidia/version exists"),
            "node1: the loaded NVIDIA kernel driver does not match the installed driver libraries (nvidia-smi: Failed "
            "to initialize NVML: Driver/library version mismatch); reboot or reload the nvidia kernel module",
        ),
        (
            "error_compute-cap-not-a-valid-field.txt",
            2,
            ("loaded", "/proc/driver/nvidia/version exists"),
            'node1: nvidia-smi failed with rc 2: Field "compute_cap" is not a valid field to query.',
        ),
    ],
    ids=["module-absent", "proc-unreadable", "module-loaded", "version-mismatch", "other"],
)
def test_nvidia_smi_failures_are_told_apart(name, rc, state, expected):
    assert diagnose_smi_failure("node1", rc, fixture(name), "", state) == expected


# --- containers --------------------------------------------------------------------------------


def test_container_commands():
    assert container_command("docker", "/usr/bin/docker", "img") == [
        "/usr/bin/docker",
        "run",
        "--rm",
        "--gpus",
        "all",
        "img",
        "nvidia-smi",
        "-L",
    ]
    assert container_command("apptainer", "/usr/bin/apptainer", "img.sif") == [
        "/usr/bin/apptainer",
        "exec",
        "--nv",
        "img.sif",
        "nvidia-smi",
        "-L",
    ]


def host_gpus(name):
    return parse_list_gpus(fixture(name))


@pytest.mark.parametrize(
    ("host", "rc", "stdout", "stderr", "expected"),
    [
        ("list-gpus_8x-h100-80gb-hbm3-mig.txt", 0, "list-gpus_8x-h100-80gb-hbm3-mig.txt", None, []),
        ("list-gpus_h100-80gb-hbm3_590.48.01.txt", 0, "list-gpus_h100-80gb-hbm3_590.48.01.txt", None, []),
        (
            "list-gpus_titan-v_rtx-5880-ada_570.86.15.txt",
            0,
            "list-gpus_2x-quadro-rtx-4000_535.129.03.txt",
            None,
            [
                "node3: docker container img does not see GPU 0 (NVIDIA TITAN V) "
                "GPU-b5169cef-2205-c30e-f2b3-220cfa14bafd",
                "node3: docker container img does not see GPU 1 (NVIDIA RTX 5880 Ada Generation) "
                "GPU-7518f6b0-991f-ce2b-3d37-c779130d3137",
                "node3: docker container img sees GPU GPU-c7b57be0-94ff-d352-a59b-d0ee00aeed43, "
                "which the host does not list",
                "node3: docker container img sees GPU GPU-d6de6afc-bdfe-75c4-5273-0544439153fc, "
                "which the host does not list",
            ],
        ),
        (
            "list-gpus_2x-quadro-rtx-4000_535.129.03.txt",
            125,
            None,
            "error_docker-could-not-select-device-driver.txt",
            [
                "node3: docker could not run nvidia-smi -L in img (rc 125): docker: Error response from daemon: "
                'could not select device driver "" with capabilities: [[gpu]].'
            ],
        ),
        (
            "list-gpus_2x-quadro-rtx-4000_535.129.03.txt",
            0,
            "error_no-devices-were-found.txt",
            None,
            ["node3: docker container img sees no GPU, the host has 2 GPUs"],
        ),
    ],
    ids=["same-mig", "same", "different", "docker-error", "none-seen"],
)
def test_the_container_must_see_the_hosts_gpus(host, rc, stdout, stderr, expected):
    out = fixture(stdout) if stdout else ""
    err = fixture(stderr) if stderr else ""
    assert compare_container_gpus("node3", "docker", "img", host_gpus(host), rc=rc, stdout=out, stderr=err) == expected


# --- the module, end to end through main() -----------------------------------------------------


@pytest.fixture
def module_run(monkeypatch):
    """Run gpu_validate.main() with run_command replaying fixtures; returns (result, commands)."""

    def run(args, replies, binaries=("nvidia-smi",), check_mode=False, nvml=None):
        commands = []
        warnings = []
        queue = list(replies)

        def run_command(_self, command, **kwargs):
            commands.append((command, kwargs))
            return queue.pop(0)

        def get_bin_path(_self, name, required=False, opt_dirs=None):
            return f"/usr/bin/{name}" if name in binaries else None

        def exit_json(_self, **result):
            raise Exited(False, {**result, "warnings": warnings})

        def fail_json(_self, msg, **result):
            raise Exited(True, {"msg": msg, **result, "warnings": warnings})

        monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
        monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", get_bin_path)
        monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
        monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
        monkeypatch.setattr(basic.AnsibleModule, "warn", lambda _self, warning: warnings.append(warning))
        monkeypatch.setattr(gpu_validate, "pynvml", nvml)
        module_args = dict(args, _ansible_check_mode=check_mode)
        with patch_module_args(module_args), pytest.raises(Exited) as exited:
            gpu_validate.main()
        assert not queue, "not every reply was used"
        return exited.value, commands

    return run


def smi(name, rc=0):
    return (rc, fixture(name), "")


@pytest.mark.parametrize(
    ("args", "replies", "binaries", "expected"),
    [
        ({"node": "node3"}, [], (), "node3: no NVIDIA driver installed (nvidia-smi not found)"),
        (
            {"node": "node3", "min_count": 2, "min_memory_mib": 81920},
            [smi(H100_CSV)],
            ("nvidia-smi",),
            "node3: 1 GPU found, 2 required; node3: GPU 0 (NVIDIA H100 80GB HBM3) has 81559 MiB, 81920 MiB required",
        ),
        (
            {"node": "node3"},
            [smi(RTX4080_CSV)],
            ("nvidia-smi",),
            "node3: GPU 0 (NVIDIA GeForce RTX 4080 SUPER) has persistence mode disabled, enabled required",
        ),
        (
            {"node": "node3", "min_count": 4},
            [smi("error_no-devices-were-found.txt", rc=6)],
            ("nvidia-smi",),
            "node3: 0 GPUs found, 4 required",
        ),
        (
            {"node": "node3", "container_runtime": ["docker"], "container_image": "img"},
            [smi(H100_CSV), (125, "", fixture("error_docker-could-not-select-device-driver.txt"))],
            ("nvidia-smi", "docker"),
            "node3: docker could not run nvidia-smi -L in img (rc 125): docker: Error response from daemon: could not "
            'select device driver "" with capabilities: [[gpu]].',
        ),
        (
            {"node": "node3", "container_runtime": ["apptainer"], "container_image": "img.sif"},
            [smi(H100_CSV)],
            ("nvidia-smi",),
            "node3: apptainer is not installed, so the container check with img.sif cannot run",
        ),
        (
            {"node": "node3", "source": "nvml"},
            [],
            ("nvidia-smi",),
            "node3: source=nvml but Failed to import the required Python library (nvidia-ml-py)",
        ),
        ({"node": "node3", "min_driver": "r535"}, [], ("nvidia-smi",), "min_driver: 'r535' is not a version"),
    ],
    ids=[
        "no-driver",
        "count-and-memory",
        "persistence",
        "no-devices",
        "docker-error",
        "no-apptainer",
        "no-pynvml",
        "bad-min-driver",
    ],
)
def test_main_fails_with_the_sentences(module_run, args, replies, binaries, expected):
    exited, _commands = module_run(args, replies, binaries)
    assert exited.failed
    assert exited.result["msg"].startswith(expected)
    assert exited.result["changed"] is False


def test_main_tells_a_missing_kernel_module(module_run, tmp_path):
    root = proc_root(tmp_path, modules="")
    exited, _ = module_run({"node": "node1", "proc_root": root}, [smi(NO_DRIVER, rc=9)])
    assert exited.failed
    assert exited.result["msg"] == (
        f"node1: driver package installed but no NVIDIA kernel driver loaded (no nvidia module in {root}/modules)"
    )
    assert "no NVIDIA kernel driver loaded" in exited.result["msg"]
    assert exited.result["rc"] == 9
    assert exited.result["stdout"] == fixture(NO_DRIVER)
    assert exited.result["problems"] == [exited.result["msg"]]


def test_main_reports_the_facts_and_runs_nvidia_smi_as_a_list_in_the_c_locale(module_run):
    exited, commands = module_run({"node": "node3", "min_count": 1, "min_compute_cap": "9.0"}, [smi(H100_CSV)])
    assert not exited.failed
    result = exited.result
    assert result["changed"] is False
    assert (result["source"], result["gpu_count"], result["driver_version"]) == ("nvidia-smi", 1, "590.48.01")
    assert result["gpus"] == [H100]
    assert result["problems"] == []
    ((command, kwargs),) = commands
    assert command == query_command("/usr/bin/nvidia-smi")
    assert kwargs["environ_update"] == {"LC_ALL": "C"}
    json.dumps(result)  # what Ansible sends back must be plain JSON


def test_main_drops_a_field_an_old_nvidia_smi_refuses(module_run):
    refused = (2, fixture("error_compute-cap-not-a-valid-field.txt"), "")
    exited, commands = module_run({"node": "node3"}, [refused, smi(H100_CSV)])
    assert not exited.failed
    first, second = (command for command, _kwargs in commands)
    assert "compute_cap" in first[1]
    assert second[1] == "--query-gpu=" + ",".join(field for field in QUERY_FIELDS if field != "compute_cap")


def test_main_compares_the_container(module_run):
    replies = [smi(H100_CSV), smi("list-gpus_h100-80gb-hbm3_590.48.01.txt")]
    args = {"node": "node3", "container_runtime": ["docker"], "container_image": "nvidia/cuda:12.4.1-base-ubuntu22.04"}
    exited, commands = module_run(args, replies, binaries=("nvidia-smi", "docker"))
    assert not exited.failed
    assert exited.result["container_checks"] == [
        {
            "runtime": "docker",
            "image": "nvidia/cuda:12.4.1-base-ubuntu22.04",
            "rc": 0,
            "uuids": [MASKED_UUID],
            "problems": [],
        }
    ]
    assert commands[1][0] == container_command("docker", "/usr/bin/docker", "nvidia/cuda:12.4.1-base-ubuntu22.04")


def test_check_mode_reads_but_runs_no_container(module_run):
    args = {"node": "node3", "container_runtime": ["docker", "apptainer"], "container_image": "img"}
    exited, commands = module_run(
        args, [smi(H100_CSV)], binaries=("nvidia-smi", "docker", "apptainer"), check_mode=True
    )
    assert not exited.failed
    assert exited.result["changed"] is False
    assert exited.result["container_checks"] == []
    assert [command[0] for command, _kwargs in commands] == ["/usr/bin/nvidia-smi"]
    assert any("docker container check with img was not run" in warning for warning in exited.result["warnings"])


def test_the_container_image_is_required_with_a_runtime(module_run):
    exited, _ = module_run({"container_runtime": ["docker"]}, [])
    assert exited.failed
    assert "container_image" in exited.result["msg"]


def test_main_reads_through_nvml_when_it_can(module_run):
    exited, commands = module_run({"node": "node3"}, [], binaries=(), nvml=nvml_binding([H100], "590.48.01"))
    assert not exited.failed
    assert (exited.result["source"], exited.result["gpus"]) == ("nvml", [H100])
    assert commands == []


def test_main_falls_back_to_nvidia_smi_when_nvml_fails(module_run, tmp_path):
    binding = nvml_binding([H100], "590.48.01", unsupported=("init",))
    root = proc_root(tmp_path, modules="")
    exited, _ = module_run({"node": "node1", "proc_root": root}, [smi(NO_DRIVER, rc=9)], nvml=binding)
    assert exited.failed
    assert "no NVIDIA kernel driver loaded" in exited.result["msg"]
