"""The runs service's records: one row per run, in SQLite by default or any database SQLAlchemy reaches by URL
(PostgreSQL). A run is always read through its owner: another user's run id finds nothing (the API's 404).

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
    sa.Index("ix_runs_owner_create", "owner", "create_time"),
)
JSON_COLUMNS = ("request", "parameters", "efficiency")


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

    @property
    def active(self) -> bool:
        return self.status in (QUEUED, IN_PROGRESS)


def _to_row(values: dict) -> dict:
    return {
        k: (json.dumps(v, sort_keys=True) if k in JSON_COLUMNS and not isinstance(v, str) else v)
        for k, v in values.items()
    }


def _from_row(row) -> Run:
    values = dict(row._mapping)
    for key in JSON_COLUMNS:
        values[key] = json.loads(values[key]) if values[key] else ({} if key != "efficiency" else "")
    return Run(**values)


class Store:
    """The runs table behind a SQLAlchemy engine."""

    def __init__(self, url: str = "sqlite:///runs.sqlite"):
        self.engine = sa.create_engine(url, future=True)
        metadata.create_all(self.engine)

    def add(self, run: Run) -> Run:
        with self.engine.begin() as db:
            db.execute(runs.insert().values(_to_row(run.__dict__)))
        return run

    def get(self, owner: str, run_id: str) -> Run | None:
        """The run, if `owner` owns it (None for a run of somebody else's, as for one that does not exist)."""
        with self.engine.connect() as db:
            row = db.execute(runs.select().where(runs.c.run_id == run_id, runs.c.owner == owner)).first()
        return _from_row(row) if row else None

    def list(self, owner: str, *, limit: int = 100, before: float | None = None, status: str | None = None):
        """`owner`'s runs, newest first, `limit` at a time (`before`: the create_time of the last one seen)."""
        query = runs.select().where(runs.c.owner == owner)
        if before is not None:
            query = query.where(runs.c.create_time < before)
        if status:
            query = query.where(runs.c.status == status)
        query = query.order_by(runs.c.create_time.desc()).limit(max(1, min(limit, 1000)))
        with self.engine.connect() as db:
            return [_from_row(row) for row in db.execute(query)]

    def count(self, owner: str) -> int:
        with self.engine.connect() as db:
            return db.execute(sa.select(sa.func.count()).select_from(runs).where(runs.c.owner == owner)).scalar_one()

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
