"""The queryable read model (SQLModel): reforms, stages, milestones, decisions, baselines, adjustments.

Written at each checkpoint from the reform's state (the stream's sink); writes
are upserts keyed by natural ids (event id for decisions and adjustments), and
`updated_at` is the evaluation's own time, so a redelivered batch or a replayed
evaluation leaves the tables as they were.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Optional

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, Session, SQLModel, select

from services.milepael.core import StageVerdict, reform_view
from services.shared.db import create_tables, make_engine


def _now() -> datetime:
    return datetime.now(timezone.utc)


class MilepaelReform(SQLModel, table=True):
    __tablename__ = "milepael_reforms"
    reform_id: str = Field(primary_key=True, max_length=64)
    title: str
    owner: str = Field(max_length=8)
    registered_at: str
    as_of: str
    adjustment_required: bool = False
    document: str = Field(sa_column=Column(Text, nullable=False))  # the API document, JSON
    updated_at: datetime = Field(default_factory=_now)  # the time of the evaluation that wrote the row


class MilepaelStage(SQLModel, table=True):
    __tablename__ = "milepael_stages"
    reform_id: str = Field(primary_key=True, max_length=64)
    stage_id: str = Field(primary_key=True, max_length=64)
    position: int
    name: str
    status: str = Field(max_length=32)
    baseline_version: int
    planned_start: date
    planned_finish: date
    forecast_finish: date
    schedule_variance_days: int
    bac_ore: int = Field(sa_column=Column(BigInteger, nullable=False))
    pv_ore: int = Field(sa_column=Column(BigInteger, nullable=False))
    ev_ore: int = Field(sa_column=Column(BigInteger, nullable=False))
    ac_ore: int = Field(sa_column=Column(BigInteger, nullable=False))
    eac_ore: int = Field(sa_column=Column(BigInteger, nullable=False))
    spi: Optional[float] = None
    spi_t: Optional[float] = None
    cpi: Optional[float] = None
    time_tolerance_level: int = 0
    cost_tolerance_level: int = 0
    adjustment_required: bool = False


class MilepaelMilestone(SQLModel, table=True):
    __tablename__ = "milepael_milestones"
    reform_id: str = Field(primary_key=True, max_length=64)
    stage_id: str = Field(primary_key=True, max_length=64)
    milestone_id: str = Field(primary_key=True, max_length=64)
    name: str
    weight: int
    due: date
    required: bool
    responsible: str = Field(max_length=8)
    state: str = Field(max_length=16)
    started_on: Optional[date] = None
    completed_on: Optional[date] = None
    forecast_date: Optional[date] = None


class MilepaelStatePartition(SQLModel, table=True):
    """The input partition that holds the reform's state: a tick must go to the same one."""

    __tablename__ = "milepael_state_partitions"
    reform_id: str = Field(primary_key=True, max_length=64)
    partition: int


class MilepaelFunding(SQLModel, table=True):
    """Which budget lines fund which reform: a change in a line's totals re-evaluates these reforms."""

    __tablename__ = "milepael_funding"
    reform_id: str = Field(primary_key=True, max_length=64)
    stage_id: str = Field(primary_key=True, max_length=64)
    line_id: str = Field(primary_key=True, index=True, max_length=64)
    phase: str = Field(primary_key=True, max_length=32)


class MilepaelDecision(SQLModel, table=True):
    __tablename__ = "milepael_decisions"
    event_id: str = Field(primary_key=True, max_length=128)
    reform_id: str = Field(index=True, max_length=64)
    stage_id: str = Field(max_length=64)
    decision: str = Field(max_length=16)
    rationale: str = ""
    ministry: str = Field(max_length=8)
    decided_at: str
    baseline_version: int


class MilepaelBaseline(SQLModel, table=True):
    __tablename__ = "milepael_baselines"
    reform_id: str = Field(primary_key=True, max_length=64)
    stage_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    planned_start: date
    planned_finish: date
    planned_cost_ore: int = Field(sa_column=Column(BigInteger, nullable=False))
    milestone_due: str = Field(sa_column=Column(Text, nullable=False))  # JSON {milestone_id: due}
    reason: str = ""
    event_id: str = Field(max_length=128)
    recorded_at: str


class MilepaelAdjustment(SQLModel, table=True):
    __tablename__ = "milepael_adjustments"
    event_id: str = Field(primary_key=True, max_length=64)  # the justering event's deterministic id
    reform_id: str = Field(index=True, max_length=64)
    stage_id: str = Field(max_length=64)
    state: str = Field(max_length=16)          # required | cleared
    level: Optional[str] = Field(default=None, max_length=16)
    baseline_version: int
    reasons: str = Field(sa_column=Column(Text, nullable=False))   # JSON list
    numbers: str = Field(sa_column=Column(Text, nullable=False))   # JSON object
    emitted_at: str


class MilepaelAppliedEvent(SQLModel, table=True):
    """A reform event milepael applied (for GET /v1/events/{id}); the reform's state keeps only recent ids."""

    __tablename__ = "milepael_applied_events"
    event_id: str = Field(primary_key=True, max_length=128)
    reform_id: str = Field(max_length=64)
    recorded_at: datetime = Field(default_factory=_now)


TABLES = [MilepaelReform, MilepaelStatePartition, MilepaelStage, MilepaelMilestone, MilepaelFunding, MilepaelDecision,
          MilepaelBaseline, MilepaelAdjustment, MilepaelAppliedEvent]


@dataclass(frozen=True)
class ReformLocation:
    """A reform and the partition of the reform and ticks topics where its state lives."""

    reform_id: str
    partition: int


class ReadModel:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        create_tables(self.engine, [t.__table__ for t in TABLES])

    def save(self, state: dict, verdicts: dict[str, StageVerdict], justering_events: list[dict],
             evaluated_at: datetime | None = None, partition: int | None = None) -> None:
        """Upsert the reform's current picture and append its new decisions, baselines and adjustments."""
        with Session(self.engine) as session:
            if partition is not None:
                session.merge(MilepaelStatePartition(reform_id=state["reform_id"], partition=partition))
            for event in justering_events:
                data = event["data"]
                session.merge(MilepaelAdjustment(
                    event_id=event["id"], reform_id=data["reform_id"], stage_id=data["stage_id"], state=data["state"],
                    level=data["level"], baseline_version=data["baseline_version"],
                    reasons=json.dumps(data["reasons"], ensure_ascii=False),
                    numbers=json.dumps(data["numbers"], ensure_ascii=False), emitted_at=event["time"]))
            session.flush()
            adjustments = self._adjustments(session, state["reform_id"])
            document = reform_view(state, verdicts, adjustments)
            session.merge(MilepaelReform(
                reform_id=state["reform_id"], title=state["title"], owner=state["owner"],
                registered_at=state["registered_at"], as_of=state["as_of"],
                adjustment_required=document["adjustment_required"],
                document=json.dumps(document, ensure_ascii=False), updated_at=evaluated_at or _now()))
            for position, stage in enumerate(state["stages"]):
                v = verdicts[stage["stage_id"]]
                numbers = v.numbers()
                session.merge(MilepaelStage(
                    reform_id=state["reform_id"], stage_id=stage["stage_id"], position=position, name=stage["name"],
                    status=v.status, baseline_version=stage["baseline_version"], planned_start=v.planned_start,
                    planned_finish=v.planned_finish, forecast_finish=v.forecast_finish,
                    schedule_variance_days=v.schedule_variance_days, bac_ore=v.bac_ore, pv_ore=v.pv_ore,
                    ev_ore=v.ev_ore, ac_ore=v.ac_ore, eac_ore=v.eac_ore, spi=numbers["spi"], spi_t=numbers["spi_t"],
                    cpi=numbers["cpi"], time_tolerance_level=v.time_level, cost_tolerance_level=v.cost_level,
                    adjustment_required=v.adjustment_required))
                for f in stage["funding"]:
                    session.merge(MilepaelFunding(reform_id=state["reform_id"], stage_id=stage["stage_id"],
                                                  line_id=f["line_id"], phase=f["phase"]))
                for m in stage["milestones"]:
                    session.merge(MilepaelMilestone(
                        reform_id=state["reform_id"], stage_id=stage["stage_id"], milestone_id=m["milestone_id"],
                        name=m["name"], weight=m["weight"], due=date.fromisoformat(m["due"]), required=m["required"],
                        responsible=m["responsible"], state=m["state"],
                        started_on=date.fromisoformat(m["started_on"]) if m["started_on"] else None,
                        completed_on=date.fromisoformat(m["completed_on"]) if m["completed_on"] else None,
                        forecast_date=date.fromisoformat(m["forecast_date"]) if m["forecast_date"] else None))
            self._record_applied(session, state)
            for d in state["decisions"]:
                session.merge(MilepaelDecision(reform_id=state["reform_id"], **d))
            for b in state["baselines"]:
                session.merge(MilepaelBaseline(
                    reform_id=state["reform_id"], stage_id=b["stage_id"], version=b["version"],
                    planned_start=date.fromisoformat(b["planned_start"]),
                    planned_finish=date.fromisoformat(b["planned_finish"]), planned_cost_ore=b["planned_cost_ore"],
                    milestone_due=json.dumps(b["milestone_due"]), reason=b["reason"], event_id=b["event_id"],
                    recorded_at=b["recorded_at"]))
            session.commit()

    @staticmethod
    def _record_applied(session: Session, state: dict) -> None:
        """Keep every id the state has applied; the state's own list is bounded, this table is not."""
        ids = set(state["processed_ids"])
        if not ids:
            return
        known = set(session.exec(select(MilepaelAppliedEvent.event_id).where(MilepaelAppliedEvent.event_id.in_(ids))))
        session.add_all(MilepaelAppliedEvent(event_id=event_id, reform_id=state["reform_id"])
                        for event_id in sorted(ids - known))

    def event_outcome(self, event_id: str) -> dict[str, Any] | None:
        """An applied reform event (its reform, when it was recorded), or None when milepael has not applied it."""
        with Session(self.engine) as session:
            row = session.get(MilepaelAppliedEvent, event_id)
            if row is None:
                return None
            return {"id": row.event_id, "status": "applied", "reform_id": row.reform_id,
                    "applied_at": row.recorded_at.replace(tzinfo=row.recorded_at.tzinfo or timezone.utc).isoformat()}

    @staticmethod
    def _adjustments(session: Session, reform_id: str) -> list[dict[str, Any]]:
        rows = session.exec(select(MilepaelAdjustment).where(MilepaelAdjustment.reform_id == reform_id)
                            .order_by(MilepaelAdjustment.emitted_at, MilepaelAdjustment.event_id)).all()
        return [{"event_id": r.event_id, "stage_id": r.stage_id, "state": r.state, "level": r.level,
                 "baseline_version": r.baseline_version, "reasons": json.loads(r.reasons),
                 "numbers": json.loads(r.numbers), "emitted_at": r.emitted_at} for r in rows]

    def list_reforms(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            reforms = session.exec(select(MilepaelReform).order_by(MilepaelReform.reform_id)).all()
            stages = session.exec(select(MilepaelStage).order_by(MilepaelStage.reform_id, MilepaelStage.position)).all()
        by_reform: dict[str, list[dict]] = {}
        for s in stages:
            by_reform.setdefault(s.reform_id, []).append({
                "stage_id": s.stage_id, "name": s.name, "status": s.status, "spi_t": s.spi_t, "cpi": s.cpi,
                "schedule_variance_days": s.schedule_variance_days, "adjustment_required": s.adjustment_required})
        return [{"reform_id": r.reform_id, "title": r.title, "owner": r.owner, "as_of": r.as_of,
                 "adjustment_required": r.adjustment_required, "stages": by_reform.get(r.reform_id, [])}
                for r in reforms]

    def reform_locations(self) -> list[ReformLocation]:
        with Session(self.engine) as session:
            rows = session.exec(select(MilepaelStatePartition).order_by(MilepaelStatePartition.reform_id)).all()
            return [ReformLocation(r.reform_id, r.partition) for r in rows]

    def reform_funding(self) -> dict[ReformLocation, frozenset[str]]:
        """Every reform with the budget lines that fund it."""
        with Session(self.engine) as session:
            locations = {r.reform_id: ReformLocation(r.reform_id, r.partition)
                         for r in session.exec(select(MilepaelStatePartition)).all()}
            lines: dict[str, set[str]] = {}
            for row in session.exec(select(MilepaelFunding)).all():
                lines.setdefault(row.reform_id, set()).add(row.line_id)
        return {location: frozenset(lines.get(reform_id, ())) for reform_id, location in locations.items()}

    def get_reform(self, reform_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(MilepaelReform, reform_id)
            return json.loads(row.document) if row else None

    def reform_documents(self, reform_id: str | None = None) -> list[dict[str, Any]]:
        """Every reform's API document (get_reform's), by reform id; or only `reform_id`'s."""
        with Session(self.engine) as session:
            query = select(MilepaelReform).order_by(MilepaelReform.reform_id)
            if reform_id is not None:
                query = query.where(MilepaelReform.reform_id == reform_id)
            return [json.loads(row.document) for row in session.exec(query).all()]

    def dispose(self) -> None:
        self.engine.dispose()
