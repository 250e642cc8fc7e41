"""The ``notebook_image`` module's whole sequence: plan (recipe, hash, current image, whether to build), build under
a temporary name, validate the new image (user uid, JupyterLab, papermill, kernels), then swap it in.

A failed build or validation raises ``BuildError`` and leaves the previous image untouched.  The engine is one of
clusterhub_image_engine's, driven through the ``run`` callable the module hands in.

The other clusterhub_image_* files are imported as ``ansible.module_utils.<name>``, the way Ansible ships them with
the module (the unit tests point those names at the plain files: tests/unit/conftest.py).
"""

from __future__ import annotations

import json
import tempfile
import time

from ansible.module_utils.clusterhub_image_engine import LOG_TAIL_LINES, BuildError, encode_recipe_label, tail_lines
from ansible.module_utils.clusterhub_image_recipe import (
    add_hash_label,
    plan_inputs,
    render_recipe,
    spec_hash,
    stage_inputs,
)

# ---------------------------------------------------------------------------------------------------------------
# Validation of a built image
# ---------------------------------------------------------------------------------------------------------------

KERNEL_START_SCRIPT = """\
import sys
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=120)
try:
    reply = kc.execute_interactive("print(6 * 7)", timeout=120, output_hook=lambda msg: None)
    status = reply["content"]["status"]
    print("kernel %s: execute %s" % (sys.argv[1], status))
    sys.exit(0 if status == "ok" else 1)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
"""


def validation_checks(spec: dict) -> list[dict]:
    """What a new image must pass before it replaces the current one (argv runs inside the image)."""
    u = spec["user"]
    checks = [
        {"check": "user", "argv": ["id", "-u", u["name"]], "expect_stdout": str(u["uid"])},
        {"check": "jupyterlab", "argv": ["jupyter", "lab", "--version"]},
        {"check": "papermill", "argv": ["python3", "-m", "papermill", "--version"]},
    ]
    if spec["kernels"]:
        checks.append(
            {
                "check": "kernelspecs",
                "argv": ["jupyter", "kernelspec", "list", "--json"],
                "expect_kernels": [k["name"] for k in spec["kernels"]],
            }
        )
        if spec["kernel_start_check"]:
            for k in spec["kernels"]:
                checks.append(
                    {"check": f"kernel {k['name']} starts", "argv": ["python3", "-c", KERNEL_START_SCRIPT, k["name"]]}
                )
    return checks


def evaluate_check(check: dict, rc: int, stdout: str, stderr: str) -> tuple[bool, str]:
    """(passed, one-line detail) for one validation check's result."""
    out = (stdout or "").strip()
    if rc != 0:
        return False, f"exit status {rc}: {tail_lines((stdout or '') + (stderr or ''), 5)}"
    if "expect_stdout" in check and out != check["expect_stdout"]:
        return False, f"expected {check['expect_stdout']!r}, got {out!r}"
    if "expect_kernels" in check:
        try:
            listed = set(json.loads(out)["kernelspecs"])
        except (ValueError, KeyError, TypeError):
            return False, f"could not read `jupyter kernelspec list --json`: {out[:200]!r}"
        missing = [k for k in check["expect_kernels"] if k not in listed]
        if missing:
            return False, f"kernels not registered: {', '.join(missing)} (listed: {', '.join(sorted(listed))})"
        return True, "listed: " + ", ".join(sorted(listed))
    return True, out.splitlines()[-1] if out else "ok"


# ---------------------------------------------------------------------------------------------------------------
# The whole sequence
# ---------------------------------------------------------------------------------------------------------------


def final_recipe(spec: dict, recipe: str, digest: str) -> str:
    """The recipe as it is written for the build (Apptainer gets the hash in %labels)."""
    return add_hash_label(recipe, digest) if spec["engine"] == "apptainer" else recipe


def plan(spec: dict, engine) -> dict:
    """Everything a run decides without building: recipe, hash, current image, whether to build."""
    recipe = render_recipe(spec)
    inputs = plan_inputs(spec)
    digest = spec_hash(spec["engine"], recipe, inputs, engine.base_fingerprint(spec))
    current = engine.inspect(spec["name"])
    return {
        "recipe": recipe,
        "final_recipe": final_recipe(spec, recipe, digest),
        "inputs": inputs,
        "hash": digest,
        "current": current,
        "build": bool(spec["force"] or current is None or current.get("hash") != digest),
    }


def run_validation(spec: dict, engine, image: str) -> list[dict]:
    """Run every check inside ``image``; raise BuildError at the first failure."""
    results = []
    for check in validation_checks(spec):
        rc, out, err = engine.run(engine.exec_argv(image, check["argv"]))
        ok, detail = evaluate_check(check, rc, out, err)
        results.append({"check": check["check"], "command": " ".join(check["argv"][:3]), "ok": ok, "detail": detail})
        if not ok:
            raise BuildError(
                f"validation of the new image failed: {check['check']} ({' '.join(check['argv'][:4])}): {detail}; "
                "the previous image is unchanged",
                rc if rc != 0 else 1,
                tail_lines(out),
                tail_lines(err),
            )
    return results


def ensure_image(spec: dict, engine, check_mode: bool = False, clock=time.monotonic, tmpdir: str | None = None) -> dict:
    """Build the image when its hash differs from the current one; return the module's result (without diff)."""
    p = plan(spec, engine)
    current = p["current"]
    result = {
        "changed": p["build"],
        "built": False,
        "engine": spec["engine"],
        "image": spec["name"],
        "image_id": current["id"] if current else None,
        "sif_path": spec["name"] if spec["engine"] == "apptainer" and current else None,
        "size": current["size"] if current else None,
        "hash": p["hash"],
        "previous_hash": current["hash"] if current else None,
        "build_seconds": 0.0,
        "recipe": p["final_recipe"],
        "previous_recipe": current["recipe"] if current else "",
        "validation": [],
        "stdout": "",
    }
    if not p["build"] or check_mode:
        return result

    temp = engine.temp_ref(spec, p["hash"])
    started = clock()
    with tempfile.TemporaryDirectory(prefix="clusterhub-image-", dir=tmpdir) as context:
        stage_inputs(p["inputs"], context)
        rc, out, err = engine.build(spec, p["final_recipe"], p["hash"], context, temp)
    # The legacy Docker builder echoes the recipe label in full; keep the tail about the build itself.
    log = "\n".join(part for part in (out, err) if part).replace(encode_recipe_label(p["final_recipe"]), "<recipe>")
    if rc != 0:
        engine.discard(temp)
        tail = tail_lines(log)
        raise BuildError(
            f"{engine.name} build of {spec['name']} failed (rc={rc}); the previous image is unchanged. "
            f"Last {LOG_TAIL_LINES} lines of the build log:\n{tail}",
            rc,
            tail,
            tail_lines(err),
        )
    try:
        if spec["validate"]:
            result["validation"] = run_validation(spec, engine, temp)
    except BuildError:
        engine.discard(temp)
        raise
    engine.promote(temp, spec["name"])
    new = engine.inspect(spec["name"])
    result["build_seconds"] = round(clock() - started, 3)
    if current and spec["remove_previous"] and new:
        engine.remove_previous(current, new)
    result.update(
        built=True,
        image_id=new["id"] if new else None,
        sif_path=spec["name"] if spec["engine"] == "apptainer" else None,
        size=new["size"] if new else None,
        stdout=tail_lines(log),
    )
    return result
