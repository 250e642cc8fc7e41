"""Parsing and decisions for the gpu_validate module (library/gpu_validate.py).

Plain functions without Ansible, tested by tests/unit/test_gpu_validate.py against real
nvidia-smi output.  They run on the managed node, so they stay compatible with Python 3.8.

Nothing here makes up GPU data: every fact comes from NVML or from nvidia-smi's output, and a
value the driver does not report is None.
"""

from __future__ import annotations

import os
import re

# The fields the module asks nvidia-smi for, in this order.
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "driver_version",
    "utilization.gpu",
    "compute_cap",
    "persistence_mode",
    "ecc.errors.uncorrected.volatile.total",
)

# nvidia-smi field name -> fact name returned by the module.
FACT_NAMES = {
    "index": "index",
    "name": "name",
    "uuid": "uuid",
    "memory.total": "memory_total_mib",
    "driver_version": "driver_version",
    "utilization.gpu": "utilization_gpu",
    "compute_cap": "compute_cap",
    "persistence_mode": "persistence_mode",
    "ecc.errors.uncorrected.volatile.total": "ecc_errors_uncorrected",
}

# Alternative query names; the CSV header always prints the canonical name on the right.
FIELD_ALIASES = {"gpu_name": "name", "gpu_uuid": "uuid", "gpu_serial": "serial", "gpu_bus_id": "pci.bus_id"}

# Field names without a dot or underscore, so that a header line can be told from a data line.
PLAIN_FIELD_NAMES = frozenset({"timestamp", "count", "name", "serial", "uuid", "index", "pstate", "hostname"})

_HEADER_CELL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.]*)(?: \[[^\]]*\])?$")
_NUMBER_RE = re.compile(r"^(-?\d+(?:\.\d+)?)(?:\s*(\S+))?$")
_LIST_GPU_RE = re.compile(r"^GPU (\d+): (.*) \(UUID: ([^)]*)\)\s*$")
_LIST_MIG_RE = re.compile(r"^\s+MIG .*\(UUID: ([^)]*)\)\s*$")
_INVALID_FIELD_RE = re.compile(r'Field "([^"]+)" is not a valid field to query')
_NO_DRIVER_RE = re.compile(r"couldn.t communicate with the NVIDIA driver", re.IGNORECASE)
_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")


class ParseError(ValueError):
    """nvidia-smi printed something this parser does not understand."""


# ---------------------------------------------------------------------------------------------
# nvidia-smi --query-gpu
# ---------------------------------------------------------------------------------------------


def query_command(nvidia_smi, fields=QUERY_FIELDS):
    """The argument list for the CSV query: no header, no units."""
    return [nvidia_smi, "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]


def _split(line):
    # nvidia-smi neither quotes nor escapes: a comma always separates two values.
    return [cell.strip() for cell in line.split(",")]


def _canonical(field):
    field = field.strip()
    return FIELD_ALIASES.get(field, field)


def header_fields(cells):
    """The field names of a CSV header line, or None when the line is data."""
    names = []
    for cell in cells:
        match = _HEADER_CELL_RE.match(cell)
        if not match:
            return None
        name = match.group(1)
        if "." not in name and "_" not in name and name not in PLAIN_FIELD_NAMES:
            return None
        names.append(_canonical(name))
    return names


def parse_query_csv(text, fields=None):
    """Rows of ``nvidia-smi --query-gpu`` CSV output as dicts of field name -> raw string.

    Works with and without the header line and with and without units.  With a header the
    columns are mapped by its names (units such as ``[MiB]`` are dropped from the names);
    without one they are mapped to ``fields``, the list the query asked for.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = header_fields(_split(lines[0]))
    if header is not None:
        names, data = header, lines[1:]
    elif fields is not None:
        names, data = [_canonical(f) for f in fields], lines
    else:
        raise ParseError(f"the first line is not a CSV header and no field list was given: {lines[0]!r}")
    rows = []
    for number, line in enumerate(data, start=1):
        cells = _split(line)
        if len(cells) != len(names):
            raise ParseError(f"line {number} has {len(cells)} values for {len(names)} fields: {line!r}")
        rows.append({name: cells[position] for position, name in enumerate(names)})
    return rows


def is_missing(value):
    """nvidia-smi's markers for a value it cannot give: [N/A], N/A, [Not Supported], [Unknown Error], ..."""
    if value is None:
        return True
    value = value.strip()
    return value == "" or value.upper() == "N/A" or (value.startswith("[") and value.endswith("]"))


def parse_number(value, unit=None):
    """A number from a CSV cell with or without its unit (``40960 MiB`` or ``40960``); None when missing."""
    if is_missing(value):
        return None
    match = _NUMBER_RE.match(value.strip())
    if not match:
        raise ParseError(f"{value!r} is not a number")
    number, found_unit = match.groups()
    if found_unit is not None and unit is not None and found_unit != unit:
        raise ParseError(f"{value!r} is not in {unit}")
    return float(number) if "." in number else int(number)


def _enabled(value):
    if is_missing(value):
        return None
    if value.strip() == "Enabled":
        return True
    if value.strip() == "Disabled":
        return False
    raise ParseError(f"{value!r} is neither Enabled nor Disabled")


def _text(value):
    return None if is_missing(value) else value.strip()


def _int(value, unit=None):
    number = parse_number(value, unit)
    return None if number is None else int(number)


def gpu_facts(row):
    """The module's facts for one GPU from one parsed CSV row; fields the row lacks are None."""
    return {
        "index": _int(row.get("index")),
        "name": _text(row.get("name")),
        "uuid": _text(row.get("uuid")),
        "memory_total_mib": _int(row.get("memory.total"), "MiB"),
        "driver_version": _text(row.get("driver_version")),
        "utilization_gpu": _int(row.get("utilization.gpu"), "%"),
        "compute_cap": _text(row.get("compute_cap")),
        "persistence_mode": _enabled(row.get("persistence_mode")),
        "ecc_errors_uncorrected": _int(row.get("ecc.errors.uncorrected.volatile.total")),
    }


def parse_gpus(text, fields=QUERY_FIELDS):
    """GPU facts from the CSV output of the module's query (or any query with a header)."""
    if no_devices_found(text):
        return []
    return [gpu_facts(row) for row in parse_query_csv(text, fields)]


def invalid_field(output):
    """The field an older nvidia-smi refused ('Field "compute_cap" is not a valid field to query.')."""
    match = _INVALID_FIELD_RE.search(output or "")
    return match.group(1) if match else None


def no_devices_found(output):
    return "No devices were found" in (output or "")


# ---------------------------------------------------------------------------------------------
# nvidia-smi -L
# ---------------------------------------------------------------------------------------------


def parse_list_gpus(text):
    """``nvidia-smi -L`` as a list of {index, name, uuid, mig_uuids}; MIG lines belong to the GPU above."""
    gpus = []
    for line in (text or "").splitlines():
        match = _LIST_GPU_RE.match(line)
        if match:
            gpus.append({"index": int(match.group(1)), "name": match.group(2), "uuid": match.group(3), "mig_uuids": []})
            continue
        match = _LIST_MIG_RE.match(line)
        if match and gpus:
            gpus[-1]["mig_uuids"].append(match.group(1))
    return gpus


# ---------------------------------------------------------------------------------------------
# NVML (nvidia-ml-py, ``import pynvml``)
# ---------------------------------------------------------------------------------------------


def _decode(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _nvml_or_none(pynvml, call, *args):
    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def read_nvml(pynvml):
    """GPU facts through NVML.  nvmlInit's NVMLError propagates: the caller decides what it means."""
    pynvml.nvmlInit()
    try:
        driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = _nvml_or_none(pynvml, pynvml.nvmlDeviceGetMemoryInfo, handle)
            utilization = _nvml_or_none(pynvml, pynvml.nvmlDeviceGetUtilizationRates, handle)
            capability = _nvml_or_none(pynvml, pynvml.nvmlDeviceGetCudaComputeCapability, handle)
            persistence = _nvml_or_none(pynvml, pynvml.nvmlDeviceGetPersistenceMode, handle)
            ecc = _nvml_or_none(
                pynvml,
                pynvml.nvmlDeviceGetTotalEccErrors,
                handle,
                pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                pynvml.NVML_VOLATILE_ECC,
            )
            gpus.append(
                {
                    "index": index,
                    "name": _decode(pynvml.nvmlDeviceGetName(handle)),
                    "uuid": _decode(pynvml.nvmlDeviceGetUUID(handle)),
                    "memory_total_mib": None if memory is None else int(memory.total) // (1024 * 1024),
                    "driver_version": driver,
                    "utilization_gpu": None if utilization is None else int(utilization.gpu),
                    "compute_cap": None if capability is None else "{}.{}".format(*capability),
                    "persistence_mode": None if persistence is None else persistence == pynvml.NVML_FEATURE_ENABLED,
                    "ecc_errors_uncorrected": None if ecc is None else int(ecc),
                }
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


# ---------------------------------------------------------------------------------------------
# No driver: not installed, or installed without its kernel module
# ---------------------------------------------------------------------------------------------


def kernel_driver_state(proc_root="/proc"):
    """('loaded' | 'absent' | 'unknown', evidence) from /proc/driver/nvidia/version and /proc/modules."""
    version_path = os.path.join(proc_root, "driver", "nvidia", "version")
    modules_path = os.path.join(proc_root, "modules")
    if os.path.exists(version_path):
        return "loaded", f"{version_path} exists"
    try:
        with open(modules_path, encoding="utf-8", errors="replace") as handle:
            modules = {line.split(" ", 1)[0] for line in handle if line.strip()}
    except OSError:
        return "unknown", f"{version_path} missing, {modules_path} unreadable"
    if "nvidia" in modules:
        return "loaded", f"nvidia module listed in {modules_path}"
    return "absent", f"no nvidia module in {modules_path}"


def no_driver_installed(node):
    return f"{node}: no NVIDIA driver installed (nvidia-smi not found)"


def no_kernel_driver(node, evidence):
    return f"{node}: driver package installed but no NVIDIA kernel driver loaded ({evidence})"


def _first_line(text):
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def diagnose_smi_failure(node, rc, stdout, stderr, kernel_state):
    """One sentence for a failed nvidia-smi run.  kernel_state is kernel_driver_state()'s result."""
    output = f"{stdout or ''}\n{stderr or ''}"
    state, evidence = kernel_state
    said = _first_line(stderr) or _first_line(stdout)
    if state == "absent":
        return no_kernel_driver(node, evidence)
    if _NO_DRIVER_RE.search(output):
        if state == "loaded":
            return (
                f"{node}: nvidia-smi cannot communicate with the NVIDIA kernel driver although it is loaded "
                f"({evidence}); check the /dev/nvidia* device nodes and their permissions"
            )
        return no_kernel_driver(node, f"nvidia-smi: {said}")
    if "Driver/library version mismatch" in output:
        return (
            f"{node}: the loaded NVIDIA kernel driver does not match the installed driver libraries "
            f"(nvidia-smi: {said}); reboot or reload the nvidia kernel module"
        )
    return f"{node}: nvidia-smi failed with rc {rc}: {said or 'no output'}"


def diagnose_nvml_failure(node, error, kernel_state):
    """One sentence for nvmlInit failing (used when source is nvml)."""
    state, evidence = kernel_state
    if state == "absent":
        return no_kernel_driver(node, evidence)
    if "Driver Not Loaded" in str(error):
        return no_kernel_driver(node, f"NVML: {error}")
    return f"{node}: NVML could not be initialised: {error}"


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def version_tuple(version):
    """'535.129.03' -> (535, 129, 3); ValueError for anything that is not dotted numbers."""
    version = str(version).strip()
    if not _VERSION_RE.match(version):
        raise ValueError(f"{version!r} is not a version made of dotted numbers, such as 535.104.05")
    return tuple(int(part) for part in version.split("."))


def version_at_least(version, minimum):
    have, want = version_tuple(version), version_tuple(minimum)
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))


def _at_least(reported, minimum):
    """version_at_least for a value the driver reported: one that is not dotted numbers does not pass."""
    try:
        return version_at_least(reported, minimum)
    except ValueError:
        return False


def _gpu_label(gpu):
    # The module always queries the index; other field lists may leave only the UUID to name a GPU.
    number = gpu.get("index") if gpu.get("index") is not None else gpu.get("uuid") or "?"
    return f"GPU {number} ({gpu.get('name') or 'unnamed'})"


def _plural(count, word):
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def check_gpus(
    node,
    gpus,
    *,
    min_count=0,
    min_memory_mib=0,
    min_driver=None,
    min_compute_cap=None,
    require_ecc_clean=False,
    require_persistence=False,
):
    """One sentence per problem with the node's GPUs; an empty list when they meet every requirement."""
    problems = []
    if min_count and len(gpus) < min_count:
        problems.append(f"{node}: {_plural(len(gpus), 'GPU')} found, {min_count} required")
    if min_driver:
        versions = sorted({gpu["driver_version"] for gpu in gpus if gpu.get("driver_version")})
        if gpus and not versions:
            problems.append(f"{node}: the NVIDIA driver did not report its version, {min_driver} required")
        for version in versions:
            if not _at_least(version, min_driver):
                problems.append(f"{node}: NVIDIA driver {version} is older than the {min_driver} required")
    for gpu in gpus:
        label = _gpu_label(gpu)
        memory = gpu.get("memory_total_mib")
        if min_memory_mib and memory is None:
            problems.append(f"{node}: {label} did not report its memory, {min_memory_mib} MiB required")
        elif min_memory_mib and memory < min_memory_mib:
            problems.append(f"{node}: {label} has {memory} MiB, {min_memory_mib} MiB required")
        capability = gpu.get("compute_cap")
        if min_compute_cap and capability is None:
            problems.append(f"{node}: {label} did not report its compute capability, {min_compute_cap} required")
        elif min_compute_cap and not _at_least(capability, min_compute_cap):
            problems.append(f"{node}: {label} has compute capability {capability}, {min_compute_cap} required")
        errors = gpu.get("ecc_errors_uncorrected")
        if require_ecc_clean and errors:
            problems.append(f"{node}: {label} has {_plural(errors, 'uncorrected volatile ECC error')}")
        persistence = gpu.get("persistence_mode")
        if require_persistence and persistence is False:
            problems.append(f"{node}: {label} has persistence mode disabled, enabled required")
        elif require_persistence and persistence is None:
            problems.append(f"{node}: {label} does not report a persistence mode, enabled required")
    return problems


def container_command(runtime, executable, image):
    """The list-form command that runs ``nvidia-smi -L`` in a container with all GPUs."""
    if runtime == "docker":
        return [executable, "run", "--rm", "--gpus", "all", image, "nvidia-smi", "-L"]
    if runtime == "apptainer":
        return [executable, "exec", "--nv", image, "nvidia-smi", "-L"]
    raise ValueError(f"unknown container runtime {runtime!r}")


def compare_container_gpus(node, runtime, image, host_gpus, *, rc, stdout, stderr):
    """Sentences for the GPUs a container does not see the way the host does; empty when it sees the same."""
    if rc != 0:
        said = _first_line(stderr) or _first_line(stdout) or "no output"
        return [f"{node}: {runtime} could not run nvidia-smi -L in {image} (rc {rc}): {said}"]
    seen = {gpu["uuid"] for gpu in parse_list_gpus(stdout)}
    if not seen and host_gpus:
        return [f"{node}: {runtime} container {image} sees no GPU, the host has {_plural(len(host_gpus), 'GPU')}"]
    problems = []
    host_uuids = set()
    for gpu in host_gpus:
        host_uuids.add(gpu.get("uuid"))
        if gpu.get("uuid") not in seen:
            problems.append(f"{node}: {runtime} container {image} does not see {_gpu_label(gpu)} {gpu.get('uuid')}")
    for uuid in sorted(seen - host_uuids):
        problems.append(f"{node}: {runtime} container {image} sees GPU {uuid}, which the host does not list")
    return problems
