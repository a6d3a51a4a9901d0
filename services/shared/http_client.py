"""Reading the services' HTTP APIs from the CLI and the demo (httpx), with one-line errors."""
from __future__ import annotations

from typing import Any

import httpx

from services.shared.usererror import UserError


def get_json(url: str, service: str, timeout_s: float = 10.0, params: dict[str, Any] | None = None) -> Any:
    """GET a JSON document; an unreachable service or an error answer raises UserError naming the service."""
    try:
        response = httpx.get(url, params=params, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise UserError(f"{service} is not reachable at {url} ({error or type(error).__name__}); "
                        "start the stack with `reformspor up`") from None
    if response.status_code >= 400:
        try:
            problem = response.json()
            detail = problem.get("detail") or problem.get("title") if isinstance(problem, dict) else str(problem)
        except ValueError:
            detail = response.text[:300]
        raise UserError(f"{service} answered {response.status_code} for {url}: {detail}", exit_code=1)
    try:
        return response.json()
    except ValueError:
        raise UserError(f"{service} at {url} did not answer with JSON") from None
