"""clusterhub's runtime Python: the hub's spawners and form (`clusterhub.hub`), the nodes' standard-library tools
(`clusterhub.gate`, `clusterhub.overlay`, `clusterhub.relay`) and the protocol they share (`clusterhub.protocol`).

The Ansible roles install the hub side as a wheel built from this checkout and copy the tools as single files."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clusterhub")
except PackageNotFoundError:  # a checkout that is not installed
    __version__ = "0+unknown"
