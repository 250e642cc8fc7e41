"""Slurm accounting's registration rules, shared by the slurm_accounting module (on the controller) and the
slurm role's validation (filter slurm_account_errors, on the control node): what sacctmgr may be given, how its
parsable output reads, and which `sacctmgr add` commands bring the database to what the inventory says."""

from __future__ import annotations

import re

NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")
USER = re.compile(r"^[a-z_][a-z0-9_.-]*$")
# sacctmgr takes key=value words; a value is one argv word, but no control character, quote or '=' in it
TEXT = re.compile(r"^[^\x00-\x1f\x7f'\"=]*$")


def account_errors(cluster: str, accounts: list[dict]) -> list[str]:
    """What is wrong with the requested cluster and accounts, one message per problem."""
    errors = []
    if not NAME.match(cluster.lower()):
        errors.append(f"cluster {cluster!r}: letters, digits and _ . - only")
    seen = {"root"}
    for account in accounts:
        name = account["name"]
        if not NAME.match(name):
            errors.append(f"account {name!r}: lower case letters, digits and _ . - only")
        elif name in seen:
            errors.append(f"account {name!r} is listed twice (or is root)")
        parent = account.get("parent") or "root"
        if parent not in seen:
            errors.append(f"account {name!r}: parent {parent!r} must be root or an account listed before it")
        seen.add(name)
        for key in ("description", "organization"):
            if account.get(key) is not None and not TEXT.match(account[key]):
                errors.append(f"account {name!r}: {key} must be one line without quotes or '='")
        errors.extend(
            f"account {name!r}: user {user!r} is not a valid user name"
            for user in account.get("users") or []
            if not USER.match(user)
        )
    return errors


def parse_associations(text: str) -> set[tuple[str, str]]:
    """(account, user) of each association `sacctmgr -nP show assoc format=account,user,parentname` printed; an
    account's own association has user ''."""
    pairs = set()
    for line in text.splitlines():
        if line.strip():
            account, user = line.split("|")[:2]
            pairs.add((account.lower(), user))
    return pairs


def plan(cluster: str, accounts: list[dict], clusters: set[str], associations: set[tuple[str, str]]) -> list[list]:
    """The sacctmgr commands that add what is missing, parents before children, accounts before their users."""
    commands = []
    cluster_key = f"cluster={cluster}"
    if cluster.lower() not in clusters:
        commands.append(["add", "cluster", cluster])
    for account in accounts:
        name = account["name"]
        if (name, "") not in associations:
            words = ["add", "account", name, cluster_key, f"parent={account.get('parent') or 'root'}"]
            words += [f"{key}={account[key]}" for key in ("description", "organization") if account.get(key)]
            commands.append(words)
        commands.extend(
            ["add", "user", user, f"account={name}", cluster_key]
            for user in dict.fromkeys(account.get("users") or [])
            if (name, user) not in associations
        )
    return commands
