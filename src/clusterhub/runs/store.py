"""The runs service's records: one row per run and one per job definition (a notebook on a cron schedule), in
SQLite by default or any database SQLAlchemy reaches by URL (PostgreSQL). A run (and a definition) is always read
through its owner: another user's run id finds nothing (the API's 404).

No secret is stored: a run holds its validated resources, its typed parameters, its Slurm job id and what Slurm
said of it. Rows survive restarts of the service and of the hub; the reconciler brings their states up to date.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from clusterhub.runs.states import IN_PROGRESS, QUEUED

metadata = sa.MetaData()
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("input_filename", sa.String(255), nullable=False, default=""),
    sa.Column("request", sa.Text, nullable=False, default="{}"),  # the validated Request's user options (JSON)
    sa.Column("parameters", sa.Text, nullable=False, default="{}"),  # JSON
    sa.Column("sweep", sa.String(64), nullable=False, default=""),
    sa.Column("tasks", sa.Integer, nullable=False, default=1),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("status_message", sa.Text, nullable=False, default=""),
    sa.Column("job_id", sa.String(32), nullable=False, default=""),
    sa.Column("efficiency", sa.Text, nullable=False, default=""),  # JSON, once finished
    sa.Column("create_time", sa.Float, nullable=False),
    sa.Column("update_time", sa.Float, nullable=False),
    sa.Column("start_time", sa.Float),
    sa.Column("end_time", sa.Float),
    sa.Column("gone_since", sa.Float),  # first poll at which neither squeue nor sacct knew the job
    sa.Column("job_definition_id", sa.String(36), nullable=False, default="", server_default=""),
    # the external data declared (JSON: [{name, direction, host, path}]; places, never credentials)
    sa.Column("data", sa.Text, nullable=False, default="[]", server_default="[]"),
    # remote HPC mode: the HPC account the run's job runs as (hpc-gate's `as`); "" on the cluster's own partitions
    sa.Column("account", sa.String(64), nullable=False, default="", server_default=""),
    sa.Index("ix_runs_owner_create", "owner", "create_time"),
)
# a job definition: what to run (the notebook and the request as the user gave it, checked again at each firing, so
# a partition's limits that changed since apply) and its cron schedule
definitions = sa.Table(
    "job_definitions",
    metadata,
    sa.Column("job_definition_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("input_filename", sa.String(255), nullable=False, default=""),
    sa.Column("notebook", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False, default="{}"),  # JSON: options, parameters, sweep, kernel
    sa.Column("schedule", sa.String(120), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False, default="UTC"),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("next_time", sa.Float),  # when it fires next (None while paused)
    sa.Column("last_run_id", sa.String(36), nullable=False, default=""),
    sa.Column("status_message", sa.Text, nullable=False, default=""),
    sa.Column("create_time", sa.Float, nullable=False),
    sa.Column("update_time", sa.Float, nullable=False),
)
JSON_COLUMNS = ("request", "parameters", "efficiency", "spec", "data")


@dataclass
class Run:
    run_id: str
    owner: str
    status: str
    create_time: float
    update_time: float
    name: str = ""
    input_filename: str = ""
    request: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    sweep: str = ""
    tasks: int = 1
    status_message: str = ""
    job_id: str = ""
    efficiency: dict | str = ""
    start_time: float | None = None
    end_time: float | None = None
    gone_since: float | None = None
    job_definition_id: str = ""
    data: list = field(default_factory=list)
    account: str = ""

    @property
    def active(self) -> bool:
        return self.status in (QUEUED, IN_PROGRESS)


@dataclass
class Definition:
    job_definition_id: str
    owner: str
    notebook: str
    schedule: str
    create_time: float
    update_time: float
    name: str = ""
    input_filename: str = ""
    spec: dict = field(default_factory=dict)
    timezone: str = "UTC"
    active: bool = True
    next_time: float | None = None
    last_run_id: str = ""
    status_message: str = ""


def _to_row(values: dict) -> dict:
    return {
        k: (json.dumps(v, sort_keys=True) if k in JSON_COLUMNS and not isinstance(v, str) else v)
        for k, v in values.items()
    }


def _from_row(row, kind=None):
    values = dict(row._mapping)
    for key in JSON_COLUMNS:
        if key in values:
            values[key] = json.loads(values[key]) if values[key] else ({} if key != "efficiency" else "")
    return (kind or Run)(**values)


def _migrate(engine) -> None:
    """Columns added since a database was created (create_all makes missing tables, never missing columns)."""
    have = {column["name"] for column in sa.inspect(engine).get_columns("runs")}
    with engine.begin() as db:
        for column in runs.columns:
            if column.name not in have:
                kind = column.type.compile(engine.dialect)
                default = column.server_default.arg if column.server_default is not None else None
                extra = f" NOT NULL DEFAULT '{default}'" if default is not None else ""
                db.execute(sa.text(f"ALTER TABLE runs ADD COLUMN {column.name} {kind}{extra}"))


class Store:
    """The runs table behind a SQLAlchemy engine."""

    def __init__(self, url: str = "sqlite:///runs.sqlite"):
        self.engine = sa.create_engine(url, future=True)
        metadata.create_all(self.engine)
        _migrate(self.engine)

    def add(self, run: Run) -> Run:
        with self.engine.begin() as db:
            db.execute(runs.insert().values(_to_row(run.__dict__)))
        return run

    def get(self, owner: str, run_id: str) -> Run | None:
        """The run, if `owner` owns it (None for a run of somebody else's, as for one that does not exist)."""
        with self.engine.connect() as db:
            row = db.execute(runs.select().where(runs.c.run_id == run_id, runs.c.owner == owner)).first()
        return _from_row(row) if row else None

    def list(
        self,
        owner: str,
        *,
        limit: int = 100,
        before: float | None = None,
        status: str | None = None,
        job_definition_id: str | None = None,
    ):
        """`owner`'s runs, newest first, `limit` at a time (`before`: the create_time of the last one seen)."""
        query = runs.select().where(runs.c.owner == owner)
        if before is not None:
            query = query.where(runs.c.create_time < before)
        if status:
            query = query.where(runs.c.status == status)
        if job_definition_id:
            query = query.where(runs.c.job_definition_id == job_definition_id)
        query = query.order_by(runs.c.create_time.desc()).limit(max(1, min(limit, 1000)))
        with self.engine.connect() as db:
            return [_from_row(row) for row in db.execute(query)]

    def count(self, owner: str, status: str | None = None, job_definition_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(runs).where(runs.c.owner == owner)
        if status:
            query = query.where(runs.c.status == status)
        if job_definition_id:
            query = query.where(runs.c.job_definition_id == job_definition_id)
        with self.engine.connect() as db:
            return db.execute(query).scalar_one()

    def active(self) -> list[Run]:
        """Every user's runs that are queued or running (what the reconciler asks Slurm about)."""
        with self.engine.connect() as db:
            return [_from_row(row) for row in db.execute(runs.select().where(runs.c.status.in_([QUEUED, IN_PROGRESS])))]

    def delete(self, owner: str, run_id: str) -> None:
        """Forget `owner`'s run (its files stay where the job wrote them, in the owner's home)."""
        with self.engine.begin() as db:
            db.execute(runs.delete().where(runs.c.run_id == run_id, runs.c.owner == owner))

    def update(self, run_id: str, **values) -> None:
        values.setdefault("update_time", time.time())
        with self.engine.begin() as db:
            db.execute(runs.update().where(runs.c.run_id == run_id).values(_to_row(values)))

    # job definitions, read through their owner as runs are
    def add_definition(self, definition: Definition) -> Definition:
        with self.engine.begin() as db:
            db.execute(definitions.insert().values(_to_row(definition.__dict__)))
        return definition

    def definition(self, owner: str, definition_id: str) -> Definition | None:
        with self.engine.connect() as db:
            row = db.execute(
                definitions.select().where(
                    definitions.c.job_definition_id == definition_id, definitions.c.owner == owner
                )
            ).first()
        return _from_row(row, Definition) if row else None

    def definitions(self, owner: str) -> list[Definition]:
        query = definitions.select().where(definitions.c.owner == owner).order_by(definitions.c.create_time.desc())
        with self.engine.connect() as db:
            return [_from_row(row, Definition) for row in db.execute(query)]

    def count_definitions(self, owner: str) -> int:
        query = sa.select(sa.func.count()).select_from(definitions).where(definitions.c.owner == owner)
        with self.engine.connect() as db:
            return db.execute(query).scalar_one()

    def due(self, now: float) -> list[Definition]:
        """Every user's active definitions whose time has come."""
        query = definitions.select().where(definitions.c.active.is_(True), definitions.c.next_time <= now)
        with self.engine.connect() as db:
            return [_from_row(row, Definition) for row in db.execute(query)]

    def update_definition(self, definition_id: str, **values) -> None:
        values.setdefault("update_time", time.time())
        with self.engine.begin() as db:
            db.execute(
                definitions.update().where(definitions.c.job_definition_id == definition_id).values(_to_row(values))
            )

    def delete_definition(self, owner: str, definition_id: str) -> None:
        """Forget `owner`'s definition (the runs it made stay, as runs)."""
        with self.engine.begin() as db:
            db.execute(
                definitions.delete().where(
                    definitions.c.job_definition_id == definition_id, definitions.c.owner == owner
                )
            )
