"""Secrets for commands (tokens, passwords) without putting them on the command line.

A value on the command line shows in `ps` and the shell history, so each
secret can also come from a file (`--token-file`) or the environment
(`REFORMSPOR_TOKEN`, or `REFORMSPOR_TOKEN_FILE` naming a file, as Docker and
systemd credentials provide).
"""
from __future__ import annotations

import os
from pathlib import Path

from services.shared.usererror import UserError


def secret_from(value: str | None, file: str | None, env_name: str) -> str | None:
    """The flag's value, else the flag's file, else $ENV_NAME, else the file $ENV_NAME_FILE names; else None."""
    if value:
        return value
    if file:
        return read_secret_file(file)
    if os.environ.get(env_name):
        return os.environ[env_name]
    env_file = os.environ.get(f"{env_name}_FILE")
    return read_secret_file(env_file) if env_file else None


def read_secret_file(path: str) -> str:
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the secret file {path}: {getattr(error, 'strerror', None) or error}") from None
    if not secret:
        raise UserError(f"the secret file {path} is empty")
    return secret
