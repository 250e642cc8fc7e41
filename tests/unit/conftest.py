"""Unit tests import the project's package (`clusterhub`, installed editable in the development venv) and the
Ansible plugins and module_utils as plain Python (pyproject's pytest `pythonpath`)."""
