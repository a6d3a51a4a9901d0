"""The ACL matrix: one table (deploy/kafka/acls.csv) is both the documentation and what gets applied."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.shared import acls
from services.shared.acls import (AclBinding, MatrixError, Operation, PatternKind, ResourceKind, load_matrix,
                                  matrix_path, ministry_bindings, parse_matrix, service_bindings)
from services.shared.config import Settings
from services.shared.kafka_security import SERVICES

MATRIX = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "acls.csv"


class RecordingAdmin:
    """Stands in for kafka-python's admin client: records what would be sent to the broker."""

    def __init__(self):
        self.created = []

    def create_acls(self, kafka_acls):
        self.created.extend(kafka_acls)
        return {"succeeded": list(kafka_acls), "failed": []}

    def describe_acls(self, _filter):
        return self.created, None

    def delete_acls(self, filters):
        gone = {_as_binding(kafka_filter) for kafka_filter in filters}
        removed = [acl for acl in self.created if _as_binding(acl) in gone]
        self.created = [acl for acl in self.created if _as_binding(acl) not in gone]
        return [(kafka_filter, removed, None) for kafka_filter in filters]


def _as_binding(acl) -> AclBinding:
    pattern = acl.resource_pattern
    return AclBinding(acl.principal, ResourceKind(pattern.resource_type.name), PatternKind(pattern.pattern_type.name),
                      pattern.resource_name, Operation(acl.operation.name))


def test_the_applied_acls_are_exactly_the_rows_of_the_table_file(tmp_path):
    settings = Settings(topic_prefix="reformspor.", home=tmp_path)
    admin = RecordingAdmin()
    acls.apply_bindings(admin, service_bindings(load_matrix(matrix_path(settings)), settings))
    applied = {_as_binding(acl) for acl in admin.created}
    assert ("User:budsjett", "reformspor.budsjett.totals", Operation.WRITE) in {
        (b.principal, b.resource_name, b.operation) for b in applied}

    # The same table with one row dropped: the code applies one grant fewer, so it reads this file, not a copy.
    lines = MATRIX.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("budsjett,TOPIC,LITERAL,{topics.totals}"))
    edited = tmp_path / "acls.csv"
    edited.write_text("\n".join(lines[:row] + lines[row + 1:]) + "\n")
    edited_settings = Settings(topic_prefix="reformspor.", home=tmp_path, kafka_acl_file=str(edited))
    admin = RecordingAdmin()
    acls.apply_bindings(admin, service_bindings(load_matrix(matrix_path(edited_settings)), edited_settings))
    removed = applied - {_as_binding(acl) for acl in admin.created}
    assert {(b.principal, b.resource_name) for b in removed} == {("User:budsjett", "reformspor.budsjett.totals")}


def test_the_matrix_is_least_privilege():
    settings = Settings(topic_prefix="reformspor.")
    rules = load_matrix(MATRIX)
    bindings = service_bindings(rules, settings)
    assert {b.principal for b in bindings} == {f"User:{service}" for service in SERVICES}
    assert all("*" not in b.resource_name for b in bindings), "no wildcard grants"
    writers = {}
    for binding in bindings:
        if binding.resource_kind is ResourceKind.TOPIC and binding.operation is Operation.WRITE:
            writers.setdefault(binding.resource_name, set()).add(binding.principal.removeprefix("User:"))
    topics = settings.topics
    assert writers[topics.budget] == {"ingest", "budsjett"}
    assert writers[topics.totals] == {"budsjett"}  # milepael trusts it: nobody else may write it
    assert writers[topics.reform] == {"ingest"}
    assert topics.inbound_for("BFD") not in writers, "no service writes a ministry's inbound topic"


def test_a_ministry_gets_its_own_inbound_topic_and_nothing_else():
    settings = Settings(topic_prefix="reformspor.")
    bindings = ministry_bindings(load_matrix(MATRIX), settings, "bfd")
    assert {(b.principal, b.resource_kind, b.pattern, b.resource_name) for b in bindings} == {
        ("User:ministry-BFD", ResourceKind.TOPIC, PatternKind.LITERAL, "reformspor.inbound.BFD")}
    assert {b.operation for b in bindings} == {Operation.WRITE, Operation.DESCRIBE}


@pytest.mark.parametrize("row, message", [
    ("ingest,TOPIC,LITERAL,{topics.budget},WRITE;DELETE,x", "row 1: 'DELETE' is not a valid Operation"),
    ("ingest,TOPICS,LITERAL,{topics.budget},WRITE,x", "row 1: 'TOPICS' is not a valid ResourceKind"),
    ("ingest,TOPIC,MATCH,{topics.budget},WRITE,x", "row 1: 'MATCH' is not a valid PatternKind"),
])
def test_a_bad_matrix_row_is_one_clear_error(row, message):
    with pytest.raises(MatrixError, match=message):
        parse_matrix("principal,resource_type,pattern_type,resource,operations,reason\n" + row + "\n")


def test_an_unknown_topic_name_in_the_matrix_is_named():
    rules = parse_matrix("principal,resource_type,pattern_type,resource,operations,reason\n"
                         "ingest,TOPIC,LITERAL,{topics.no_such_topic},WRITE,x\n")
    with pytest.raises(MatrixError, match="no_such_topic"):
        service_bindings(rules, Settings())


def test_a_row_deleted_from_the_table_is_revoked_on_the_broker_but_other_prefixes_stay(tmp_path):
    settings = Settings(topic_prefix="reformspor.", home=tmp_path)
    rules = load_matrix(MATRIX)
    admin = RecordingAdmin()
    other_stack = service_bindings(rules, Settings(topic_prefix="andre."))
    acls.apply_bindings(admin, other_stack)
    acls.sync_bindings(admin, service_bindings(rules, settings), settings.topic_prefix)

    fewer = [rule for rule in rules if rule.resource_template != "{topics.totals}" or rule.role != "budsjett"]
    removed = acls.sync_bindings(admin, service_bindings(fewer, settings), settings.topic_prefix)
    assert {(b.principal, b.resource_name) for b in removed} == {("User:budsjett", "reformspor.budsjett.totals")}
    held = {_as_binding(acl) for acl in admin.created}
    assert held == set(service_bindings(fewer, settings)) | set(other_stack)
