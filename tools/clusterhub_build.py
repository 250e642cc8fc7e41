"""clusterhub's PEP 517 build backend: a pure-Python wheel of `src/clusterhub`, from the standard library alone.

In tree (pyproject's `backend-path`), so neither a controller nor an air-gapped site needs setuptools to build
the wheel the jupyterhub role installs. The wheel is reproducible: the same sources give the same bytes (sorted
entries, fixed timestamps), so a re-run copies nothing and installs nothing.

    python tools/clusterhub_build.py DIR   builds the wheel into DIR and prints its path (the role's call)
"""

from __future__ import annotations

import base64
import hashlib
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "clusterhub"
# zip's earliest date: the wheel's bytes depend on the sources only
EPOCH = (1980, 1, 1, 0, 0, 0)
WHEEL = b"Wheel-Version: 1.0\nGenerator: clusterhub_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _dist(project: dict) -> str:
    return f"{project['name'].replace('-', '_')}-{project['version']}"


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '')}",
    ]
    lines += [f"Requires-Dist: {requirement}" for requirement in project.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def _entry_points(project: dict) -> str:
    out = []
    groups = dict(project.get("entry-points", {}))
    if project.get("scripts"):  # [project.scripts]: the console_scripts group, which pip makes executables of
        groups["console_scripts"] = project["scripts"]
    for group, points in sorted(groups.items()):
        out.append(f"[{group}]")
        out += [f"{name} = {target}" for name, target in sorted(points.items())]
        out.append("")
    return "\n".join(out)


SOURCES = {".py", ".j2"}


def _sources() -> list[tuple[str, bytes]]:
    base = ROOT / "src"
    # the modules and their data (the spawn form's template)
    files = sorted(
        p for p in (base / PACKAGE).rglob("*") if p.is_file() and p.suffix in SOURCES and "__pycache__" not in p.parts
    )
    return [(p.relative_to(base).as_posix(), p.read_bytes()) for p in files]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(directory: str, files: list[tuple[str, bytes]]) -> str:
    project = _project()
    dist = _dist(project)
    info = f"{dist}.dist-info"
    files = [
        *files,
        (f"{info}/METADATA", _metadata(project).encode()),
        (f"{info}/WHEEL", WHEEL),
        (f"{info}/entry_points.txt", _entry_points(project).encode()),
    ]
    record = "\n".join([*(_record_line(n, d) for n, d in files), f"{info}/RECORD,,"]) + "\n"
    name = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / name, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in [*files, (f"{info}/RECORD", record.encode())]:
            entry = zipfile.ZipInfo(path, EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    return name


# PEP 517 / PEP 660 hooks (pip install ., pip install -e ., pip wheel .)
def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, _sources())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # the checkout's src/ on sys.path: edits take effect without a reinstall
    return _write_wheel(wheel_directory, [(f"_{PACKAGE}_editable.pth", f"{ROOT / 'src'}\n".encode())])


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    print(out / build_wheel(str(out)))
