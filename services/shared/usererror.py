"""The one error type a command raises for bad input or an unreachable peer.

`services.cli.main` turns it into one line on stderr and its exit code; any
other exception is a bug and gets a traceback only with `--debug`.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: the message is the whole story, no traceback."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
