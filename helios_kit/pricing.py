"""Pricing tables of backends: what one chunk costs where it runs, for estimates and `--max-cost`.

A backend says what it costs through :meth:`helios_kit.backends.base.Backend.pricing` (a classmethod, so no
client or credentials are needed to ask); the Lambda and Cloud Run plugins ship their list prices. A user
overrides any field from a JSON file (`--pricing FILE`) or one at a time (`--price memory_gb=3`), see
:func:`apply_overrides`. Cost of one attempt = billed seconds x (memory GB x price per GB-second + vCPUs x
price per vCPU-second) + the price of one request; billed seconds are rounded up to `billing_increment_s`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, ValidationError

from helios_kit.errors import SpecError
from helios_kit.protocol import EventKind, ProgressEvent, WireModel

#: Events that end an attempt (a skip reported by a worker was an invocation too).
ATTEMPT_ENDS = (EventKind.RENDERED, EventKind.SKIPPED, EventKind.FAILED, EventKind.RETRYING, EventKind.CANCELLED)


class Pricing(WireModel):
    """One backend's prices and the speed of its workers compared with one local render slot."""

    backend: str = Field(description="The backend these prices are for.")
    memory_gb: float = Field(0.0, ge=0, description="Memory of one worker (GB), billed per second.")
    vcpu: float = Field(0.0, ge=0, description="vCPUs of one worker, billed per second.")
    gb_second_usd: float = Field(0.0, ge=0, description="Price of one GB-second of memory.")
    vcpu_second_usd: float = Field(0.0, ge=0, description="Price of one vCPU-second.")
    request_usd: float = Field(0.0, ge=0, description="Price of one invocation / request.")
    billing_increment_s: float = Field(0.001, gt=0, description="Billed time is rounded up to this.")
    startup_s: float = Field(1.0, ge=0, description="Seconds before a worker starts rendering (cold start).")
    speed: float = Field(1.0, gt=0, description="A worker's render speed relative to one local render slot.")
    concurrency: int = Field(1, ge=1, description="Chunks at once when --concurrency is not given.")

    def attempt_usd(self, seconds: float) -> float:
        """What one attempt running `seconds` costs (billed time rounded up, plus its request)."""
        billed = math.ceil(max(seconds, 0.0) / self.billing_increment_s - 1e-9) * self.billing_increment_s
        per_second = self.memory_gb * self.gb_second_usd + self.vcpu * self.vcpu_second_usd
        return billed * per_second + self.request_usd


def apply_overrides(pricing: Pricing, file: str | Path | None = None, prices: tuple[str, ...] = ()) -> Pricing:
    """`pricing` with the fields of a JSON file, then `FIELD=VALUE` pairs, replaced; SpecError (one line
    naming the file or pair) for an unknown field or a bad value."""
    values = pricing.model_dump()
    if file is not None:
        try:
            data = json.loads(Path(file).read_text())
        except (OSError, ValueError) as error:
            raise SpecError(f"--pricing {file}: {error}", retryable=False) from None
        if not isinstance(data, dict):
            raise SpecError(f"--pricing {file}: expected a JSON object of prices", retryable=False)
        values.update({_field_name(key, f"--pricing {file}"): value for key, value in data.items()})
    for pair in prices:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SpecError(f"--price {pair!r}: expected FIELD=VALUE, e.g. memory_gb=3", retryable=False)
        values[_field_name(key.strip(), f"--price {pair}")] = value.strip()
    try:
        return Pricing.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SpecError(f"pricing: {where}: {first['msg']}", retryable=False) from None


def _field_name(key: str, where: str) -> str:
    """The Python name of a pricing field given as snake_case, kebab-case or camelCase."""
    by_alias = {field.alias: name for name, field in Pricing.model_fields.items() if field.alias}
    name = by_alias.get(key, key.replace("-", "_"))
    if name not in Pricing.model_fields or name == "backend":
        known = ", ".join(n for n in Pricing.model_fields if n != "backend")
        raise SpecError(f"{where}: unknown pricing field {key!r}; known: {known}", retryable=False)
    return name


class CostMeter:
    """An event sink adding up a run's cost as it goes: finished attempts billed, running ones so far.
    Used by the run records (`costUsd`, shown by the dashboard) and by `--max-cost`."""

    def __init__(self, pricing: Pricing, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.pricing = pricing
        self.clock = clock
        self.spent = 0.0
        self.running: dict[int, float] = {}
        self._lock = threading.Lock()

    def running_cost(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        with self._lock:
            return self.spent + sum(self.pricing.attempt_usd(now - began) for began in self.running.values())

    def __call__(self, event: ProgressEvent) -> None:
        if event.chunk_id is None:
            return
        with self._lock:
            if event.kind is EventKind.STARTED:
                self.running[event.chunk_id] = self.clock()
            elif event.kind in ATTEMPT_ENDS:
                began = self.running.pop(event.chunk_id, None)
                if began is not None:
                    self.spent += self.pricing.attempt_usd(self.clock() - began)
