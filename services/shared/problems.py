"""The one error type for input that breaks the contract, from raw bytes to the last field.

It lives apart from contract.py so the JSON reader (which contract.py uses)
can raise it too: a caller that reads a message catches `ContractError` and
nothing else, whether the bytes were not JSON or a field was wrong.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with an event: where (dotted path) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ContractError(ValueError):
    """An event that breaks the contract; `problems` lists every reason found."""

    def __init__(self, problems: list[FieldProblem], event_id: str | None = None):
        self.problems = problems
        self.event_id = event_id
        super().__init__("; ".join(str(p) for p in problems))


SURROGATE_REASON = (
    "holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not a character; "
    "send text as valid UTF-8"
)


def printable_key(key: object, limit: int = 30) -> str:
    """A key or value as it may appear in a reason or path: control characters and
    lone surrogates escaped, so the reason itself can always be logged and encoded as UTF-8."""
    text = key if isinstance(key, str) else repr(key)
    text = text[:limit]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
