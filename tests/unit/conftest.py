"""Unit tests import the project's plugins and module_utils as plain Python."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for sub in ("filter_plugins", "module_utils", "library"):
    sys.path.insert(0, str(ROOT / sub))
sys.path.insert(0, str(ROOT / "roles" / "jupyterhub" / "files"))
sys.path.insert(0, str(ROOT / "roles" / "job_wrappers" / "files"))
