"""The two image engines of the ``notebook_image`` module, Docker and Apptainer, behind one interface: inspect an
image, fingerprint the base, build under a temporary name, run a command inside, promote, discard.

Nothing here runs a command itself: the module (library/notebook_image.py) hands in a ``run(argv, cwd=None,
env=None)`` callable that returns ``(rc, stdout, stderr)``, so the unit tests drive the engines with fake runners.
A failed engine call raises ``BuildError`` with the tail of its output (``tail_lines``).

The other clusterhub_image_* files are imported as ``ansible.module_utils.<name>``, the way Ansible ships them with
the module (the unit tests point those names at the plain files: tests/unit/conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import tempfile

from ansible.module_utils.clusterhub_image_recipe import HASH_LABEL
from ansible.module_utils.clusterhub_image_spec import SIF_COMPRESSION, split_tag

RECIPE_LABEL = "org.clusterhub.recipe"
LOG_TAIL_LINES = 40


class BuildError(RuntimeError):
    """A failed build or validation (or engine call); the previous image is untouched when this is raised."""

    def __init__(self, msg: str, rc: int | None = None, stdout: str = "", stderr: str = ""):
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


def tail_lines(text: str | bytes | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a build log (carriage-return progress redraws collapsed)."""
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = [line.rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")]
    return "\n".join(out[-lines:])


# ---------------------------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------------------------


def encode_recipe_label(recipe: str) -> str:
    """The recipe as a label value: base64, because the legacy Docker builder expands ``$VAR`` in label values."""
    return "base64:" + base64.b64encode(recipe.encode("utf-8")).decode("ascii")


def decode_recipe_label(value: str | None) -> str:
    if not value:
        return ""
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[len("base64:") :]).decode("utf-8")
        except ValueError:
            return ""
    return value


class _Engine:
    """An engine CLI (binary path) and the command runner it uses (run(argv) -> rc, out, err)."""

    def __init__(self, binary: str, run):
        self.bin = binary
        self.run = run


class DockerEngine(_Engine):
    """Builds with a temporary tag, validates, then ``docker tag`` to the final name and drops the temporary tag."""

    name = "docker"

    def inspect(self, ref: str) -> dict | None:
        rc, out, err = self.run([self.bin, "image", "inspect", ref])
        if rc != 0:
            if "no such image" in (err + out).lower():
                return None
            raise BuildError(f"docker image inspect {ref} failed: {tail_lines(err, 5)}", rc, out, err)
        data = json.loads(out)[0]
        labels = (data.get("Config") or {}).get("Labels") or {}
        return {
            "id": data.get("Id"),
            "size": data.get("Size"),
            "hash": labels.get(HASH_LABEL),
            "recipe": decode_recipe_label(labels.get(RECIPE_LABEL)),
            "path": None,
        }

    def base_fingerprint(self, spec: dict) -> str | None:
        base = self.inspect(spec["base"])
        return base["id"] if base else spec["base"]

    def temp_ref(self, spec: dict, digest: str) -> str:
        repo, _tag = split_tag(spec["name"])
        return f"{repo}:clusterhub-tmp-{digest[:12]}-{secrets.token_hex(4)}"

    def build_argv(self, spec: dict, recipe: str, digest: str, context: str, temp: str) -> list[str]:
        argv = [self.bin, "build", "--force-rm", "-f", os.path.join(context, "Dockerfile")]
        if not spec["build_cache"]:
            argv.append("--no-cache")
        argv += [
            "--label",
            f"{HASH_LABEL}={digest}",
            "--label",
            f"{RECIPE_LABEL}={encode_recipe_label(recipe)}",
            "-t",
            temp,
            context,
        ]
        return argv

    def build(self, spec: dict, recipe: str, digest: str, context: str, temp: str) -> tuple[int, str, str]:
        with open(os.path.join(context, "Dockerfile"), "w", encoding="utf-8") as fh:
            fh.write(recipe)
        return self.run(self.build_argv(spec, recipe, digest, context, temp), cwd=context)

    def exec_argv(self, image: str, argv: list[str]) -> list[str]:
        return [self.bin, "run", "--rm", "--network", "none", "--entrypoint", argv[0], image, *argv[1:]]

    def promote(self, temp: str, final: str) -> None:
        rc, out, err = self.run([self.bin, "tag", temp, final])
        if rc != 0:
            self.discard(temp)
            raise BuildError(f"docker tag {temp} {final} failed: {tail_lines(err, 5)}", rc, out, err)
        self.run([self.bin, "image", "rm", temp])  # only the temporary tag: the final name still holds the image

    def discard(self, temp: str) -> None:
        self.run([self.bin, "image", "rm", temp])

    def remove_previous(self, previous: dict, current: dict) -> None:
        # Without --force: an image still used by a container, or tagged elsewhere, stays.
        if previous.get("id") and previous["id"] != current.get("id"):
            self.run([self.bin, "image", "rm", previous["id"]])


def parse_apptainer_labels(text: str) -> dict:
    """Labels from ``apptainer inspect --labels --json`` (or the plain ``key: value`` listing)."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        labels = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                labels[key.strip()] = value.strip()
        return labels
    attrs = (data.get("data") or {}).get("attributes") or {}
    labels = attrs.get("labels", data.get("labels", {}))
    return labels if isinstance(labels, dict) else {}


class ApptainerEngine(_Engine):
    """Builds to a temporary SIF in the destination directory, validates, then renames it over the final SIF."""

    name = "apptainer"

    def inspect(self, path: str) -> dict | None:
        if not os.path.exists(path):
            return None
        rc, out, err = self.run([self.bin, "inspect", "--labels", "--json", path])
        if rc != 0:
            raise BuildError(f"apptainer inspect {path} failed: {tail_lines(err, 5)}", rc, out, err)
        labels = parse_apptainer_labels(out)
        rc, deffile, _err = self.run([self.bin, "inspect", "--deffile", path])
        return {
            "id": None,
            "size": os.path.getsize(path),
            "hash": labels.get(HASH_LABEL),
            "recipe": deffile if rc == 0 else "",
            "path": path,
        }

    def base_fingerprint(self, spec: dict) -> str | None:
        base = spec["base"] or ""
        if base.startswith("localimage:"):
            st = os.stat(base[len("localimage:") :])
            return f"{base} {st.st_size} {st.st_mtime_ns}"
        return base or None

    def temp_ref(self, spec: dict, digest: str) -> str:
        directory, fname = os.path.split(spec["name"])
        return os.path.join(directory, f".{fname}.{digest[:12]}-{secrets.token_hex(4)}.tmp.sif")

    def build_argv(self, spec: dict, definition_path: str, temp: str) -> list[str]:
        argv = [self.bin, "build"]
        if spec["fakeroot"]:
            argv.append("--fakeroot")
        if not spec["build_cache"]:
            argv.append("--disable-cache")
        squashfs = SIF_COMPRESSION[spec["sif_compression"]]
        if squashfs:
            argv += ["--mksquashfs-args", " ".join(squashfs)]
        return [*argv, temp, definition_path]

    def build(self, spec: dict, recipe: str, digest: str, context: str, temp: str) -> tuple[int, str, str]:
        definition = os.path.join(context, "notebook.def")
        with open(definition, "w", encoding="utf-8") as fh:
            fh.write(recipe)
        argv = self.build_argv(spec, definition, temp)
        if os.environ.get("APPTAINER_TMPDIR"):
            return self.run(argv, cwd=context)
        # The unpacked root file system needs room and exec rights, which /tmp often lacks (tmpfs, noexec):
        # scratch space next to the SIF instead, on the disk that will hold it, removed afterwards.
        scratch = tempfile.mkdtemp(prefix=".build-", dir=os.path.dirname(spec["name"]))
        try:
            return self.run(argv, cwd=context, env={"APPTAINER_TMPDIR": scratch})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def exec_argv(self, image: str, argv: list[str]) -> list[str]:
        return [self.bin, "exec", "--containall", "--cleanenv", image, *argv]

    def promote(self, temp: str, final: str) -> None:
        os.replace(temp, final)  # same directory: an atomic rename

    def discard(self, temp: str) -> None:
        try:
            if os.path.isdir(temp):
                shutil.rmtree(temp)
            else:
                os.unlink(temp)
        except FileNotFoundError:
            pass

    def remove_previous(self, previous: dict, current: dict) -> None:
        """The rename replaced the previous SIF; nothing is left to remove."""


def make_engine(engine: str, binary: str, run):
    return DockerEngine(binary, run) if engine == "docker" else ApptainerEngine(binary, run)
