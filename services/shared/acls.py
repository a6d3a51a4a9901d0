"""The Kafka ACL matrix as data (deploy/kafka/acls.csv) and the code that applies it.

The pure part reads the table and expands it, for one topic prefix, into
concrete bindings (principal, resource, operation); the shell part hands
those bindings to the broker with kafka-python's admin client. Nothing here
knows a topic or a principal that the table does not name.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from services.shared.config import Settings
from services.shared.kafka_security import ministry_principal

MINISTRY_ROLE = "ministry"
DEFAULT_MATRIX = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "acls.csv"
COLUMNS = ("principal", "resource_type", "pattern_type", "resource", "operations", "reason")


class ResourceKind(str, Enum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"
    CLUSTER = "CLUSTER"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"


class PatternKind(str, Enum):
    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Operation(str, Enum):
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    IDEMPOTENT_WRITE = "IDEMPOTENT_WRITE"


class MatrixError(ValueError):
    pass


@dataclass(frozen=True)
class AclRule:
    """One row of the matrix, its resource still a template."""

    role: str  # a service name, or "ministry"
    resource_kind: ResourceKind
    pattern: PatternKind
    resource_template: str
    operations: tuple[Operation, ...]
    reason: str


@dataclass(frozen=True)
class AclBinding:
    """One ALLOW grant as the broker stores it."""

    principal: str  # "User:<name>"
    resource_kind: ResourceKind
    pattern: PatternKind
    resource_name: str
    operation: Operation


def matrix_path(settings: Settings) -> Path:
    return Path(settings.kafka_acl_file) if settings.kafka_acl_file else DEFAULT_MATRIX


def load_matrix(path: Path) -> list[AclRule]:
    try:
        return parse_matrix(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrixError(f"the Kafka ACL matrix {path} does not exist (set REFORMSPOR_KAFKA_ACL_FILE)") from None


def parse_matrix(text: str) -> list[AclRule]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise MatrixError(f"the ACL matrix must have the columns {','.join(COLUMNS)}")
    return [_rule(row, number) for number, row in enumerate(reader, start=1)]


def _rule(row: dict[str, str], number: int) -> AclRule:
    try:
        return AclRule(
            role=row["principal"].strip(),
            resource_kind=ResourceKind(row["resource_type"].strip()),
            pattern=PatternKind(row["pattern_type"].strip()),
            resource_template=row["resource"].strip(),
            operations=tuple(Operation(op.strip()) for op in row["operations"].split(";") if op.strip()),
            reason=row["reason"].strip(),
        )
    except (ValueError, AttributeError) as error:
        raise MatrixError(f"ACL matrix row {number}: {error}") from None


def _expand(rule: AclRule, settings: Settings, principal: str, ministry: str = "") -> list[AclBinding]:
    try:
        name = rule.resource_template.format(prefix=settings.topic_prefix, topics=settings.topics, ministry=ministry)
    except (KeyError, AttributeError) as error:
        raise MatrixError(f"ACL matrix resource {rule.resource_template!r}: unknown name {error}") from None
    return [AclBinding(f"User:{principal}", rule.resource_kind, rule.pattern, name, operation)
            for operation in rule.operations]


def service_bindings(rules: list[AclRule], settings: Settings) -> list[AclBinding]:
    """Every service's grants for this topic prefix (the service's user has the role's name)."""
    return [binding for rule in rules if rule.role != MINISTRY_ROLE
            for binding in _expand(rule, settings, rule.role)]


def ministry_bindings(rules: list[AclRule], settings: Settings, code: str) -> list[AclBinding]:
    """One ministry's grants: its own inbound topic only."""
    code = code.strip().upper()
    return [binding for rule in rules if rule.role == MINISTRY_ROLE
            for binding in _expand(rule, settings, ministry_principal(code), ministry=code)]


def stale_bindings(present: set[AclBinding], wanted: list[AclBinding], prefix: str) -> list[AclBinding]:
    """Grants the broker holds for these principals under this prefix that the table no longer has.

    Only names under the prefix count (several stacks may share a broker);
    the cluster-wide grants are left alone.
    """
    principals = {binding.principal for binding in wanted}
    scoped = (prefix, f"changelog__{prefix}")
    return sorted((binding for binding in present - set(wanted)
                   if binding.principal in principals and binding.resource_name.startswith(scoped)),
                  key=lambda binding: (binding.principal, binding.resource_name, binding.operation.value))


# --- the shell: kafka-python's admin client ---------------------------------------------------


def sync_bindings(admin, wanted: list[AclBinding], prefix: str) -> list[AclBinding]:
    """Make the broker hold exactly the table's grants for these principals and prefix; returns those removed."""
    apply_bindings(admin, wanted)
    stale = stale_bindings(_present(admin, {binding.principal for binding in wanted}), wanted, prefix)
    remove_bindings(admin, stale)
    return stale


def _kafka_acl(binding: AclBinding, filter_only: bool = False):
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             ResourcePattern, ResourcePatternFilter, ResourceType)

    pattern_class, acl_class = (ResourcePatternFilter, ACLFilter) if filter_only else (ResourcePattern, ACL)
    resource = pattern_class(ResourceType[binding.resource_kind.value], binding.resource_name,
                             ACLResourcePatternType[binding.pattern.value])
    return acl_class(principal=binding.principal, host="*", operation=ACLOperation[binding.operation.value],
                     permission_type=ACLPermissionType.ALLOW, resource_pattern=resource)


def apply_bindings(admin, bindings: list[AclBinding], timeout_s: float = 15.0) -> None:
    """Create the grants and wait until the broker enforces them.

    Creating a grant that exists changes nothing, so this is idempotent. The
    controller commits ACLs before the broker's authorizer has them; waiting
    here means a client started next is not refused by that gap.
    """
    if not bindings:
        return
    result = admin.create_acls([_kafka_acl(binding) for binding in bindings])
    if result["failed"]:
        raise RuntimeError(f"the broker refused {len(result['failed'])} ACLs: {result['failed'][0]}")
    deadline = time.monotonic() + timeout_s
    while not set(bindings) <= _present(admin, {binding.principal for binding in bindings}):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the broker did not enforce the new ACLs within {timeout_s:.0f}s")
        time.sleep(0.1)


def _present(admin, principals: set[str]) -> set[AclBinding]:
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePatternFilter
    from kafka.admin import ResourceType

    found = set()
    for principal in principals:
        acls, _error = admin.describe_acls(ACLFilter(
            principal=principal, host="*", operation=ACLOperation.ANY, permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
        found |= {AclBinding(acl.principal, ResourceKind(acl.resource_pattern.resource_type.name),
                             PatternKind(acl.resource_pattern.pattern_type.name), acl.resource_pattern.resource_name,
                             Operation(acl.operation.name)) for acl in acls}
    return found


def remove_bindings(admin, bindings: list[AclBinding]) -> int:
    """Delete exactly these grants; returns how many the broker removed."""
    if not bindings:
        return 0
    results = admin.delete_acls([_kafka_acl(binding, filter_only=True) for binding in bindings])
    return sum(len(matched) for _filter, matched, _error in results)
