"""The end of `make lab`: start a server of every profile of the lab inventory once, as a person would
(log in, POST the choice, wait until JupyterLab answers through the proxy), plus the direct-mode profile in
the Apptainer image. Exits non-zero naming each profile that did not start and the reason the user would
read. Usage: python lab/health.py   (CLUSTERHUB_LAB_PREFIX and CLUSTERHUB_LAB_HUB_PORT select the lab)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from tests.lab.hubclient import Hub, lab_certificate  # run as `python -m lab.health` from the checkout

ROOT = Path(__file__).resolve().parents[1]


GROUP_VARS = ROOT / "inventories" / "lab" / "group_vars" / "all"
USER = "alice"
TIMEOUT = 240


def starts() -> list[tuple[str, dict]]:
    """(label, spawn options): each profile with its own image, and a Slurm profile in each Apptainer image."""
    hub = yaml.safe_load((GROUP_VARS / "hub.yml").read_text())
    images = yaml.safe_load((GROUP_VARS / "images.yml").read_text())["notebook_images_list"]
    chosen = []
    for profile in hub["jupyterhub_profiles"]:
        options = {"profile": profile["slug"]}
        if profile.get("image") and profile.get("kind") != "docker":
            options["image"] = profile["image"]
        chosen.append((profile["slug"], options))
    direct = next(p["slug"] for p in hub["jupyterhub_profiles"] if p.get("kind", "slurm") == "slurm")
    for image in images:
        if "apptainer" in image.get("engines", []):
            chosen.append((f"{direct} in image {image['name']}", {"profile": direct, "image": image["name"]}))
    return chosen


def main() -> int:
    password = yaml.safe_load((GROUP_VARS / "users.yml").read_text())["lab_passwords"][USER]
    hub = Hub(USER, password, verify=lab_certificate())
    hub.stop()
    failed = []
    print("--- health check: one server of each profile ---")
    for label, options in starts():
        try:
            seconds = hub.start(options=options, timeout=TIMEOUT)
            answer = hub.user_get("/api/status")
            if answer.status_code != 200:
                raise RuntimeError(f"the server was ready but its API answered HTTP {answer.status_code}")
            print(f"ok      {label:28} ready in {seconds:5.1f} s")
        except Exception as e:  # a profile that fails is reported with what its user would read
            failed.append(label)
            print(f"FAILED  {label:28} {e}")
        finally:
            hub.stop()
    if failed:
        print(f"lab: {len(failed)} profile(s) did not start: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
