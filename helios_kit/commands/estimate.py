"""`helios job estimate JOB`: predict a job's wall time and cost from samples rendered here, and the
`--max-cost` guard of `helios job run` (refuse to start over budget; stop a run whose cost passes it).

The prediction itself is :mod:`helios_kit.estimate`'s; this module resolves the job and the backend's
pricing (:meth:`Backend.pricing`, overridden by `--pricing FILE` / `--price FIELD=VALUE`) and prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from helios_kit.errors import SpecError
from helios_kit.estimate import Estimate, estimate_job
from helios_kit.pricing import CostMeter, Pricing, apply_overrides
from helios_kit.protocol import ProgressEvent


def backend_pricing(backend: str, pricing_file: str | None = None, prices: tuple[str, ...] = ()) -> Pricing | None:
    """The registered backend's pricing with the user's overrides; None for a backend that bills nothing."""
    from helios_kit.plugins import get_plugins

    base = get_plugins().backend(backend).pricing()  # UnknownNameError listing the known backends
    if base is None:
        if pricing_file or prices:
            base = Pricing(backend=backend)
        else:
            return None
    return apply_overrides(base, pricing_file, prices)


def estimate_source(
    source: str,
    *,
    backend: str = "local",
    concurrency: int | None = None,
    samples: int = 3,
    sample_frames: int = 8,
    pricing_file: str | None = None,
    prices: tuple[str, ...] = (),
) -> Estimate:
    """Load the job at `source`, resolve its composition as a run does, render samples, predict."""
    from helios_kit.composition.locations import is_local, local_path
    from helios_kit.context import JobContext
    from helios_kit.loaders import load_spec

    pricing = backend_pricing(backend, pricing_file, prices)
    job_url = str(local_path(source).resolve()) if is_local(source) else source
    spec, job_dir = load_spec(job_url)
    ctx = JobContext.prepare(spec, job_url, job_dir)
    try:
        estimate = estimate_job(
            spec,
            ctx.input_location,
            pricing=pricing,
            concurrency=concurrency,
            samples=samples,
            sample_frames=sample_frames,
        )
    finally:
        ctx.close()
    return estimate.model_copy(update={"backend": backend})


def describe_estimate(estimate: Estimate) -> str:
    cost = f", about ${estimate.cost_usd:.4f}" if estimate.cost_usd else ""
    return (
        f"estimate ({estimate.backend}, {estimate.chunks} chunks, {estimate.concurrency} at once): "
        f"{estimate.wall_seconds:.1f} s wall{cost} for {estimate.frames} frames "
        f"({estimate.frames_per_second:.1f} frames/s per render here, from {estimate.sample_frames} sample frames)"
    )


@click.command("estimate")
@click.argument("source")
@click.option("--backend", default="local", show_default=True, help="Where the chunks would run.")
@click.option("--concurrency", "-j", type=click.IntRange(min=1), default=None, help="Chunks at once.")
@click.option("--samples", type=click.IntRange(min=1), default=3, show_default=True, help="Sample renders.")
@click.option("--sample-frames", type=click.IntRange(min=1), default=8, show_default=True, help="Frames each.")
@click.option("--pricing", "pricing_file", default=None, metavar="FILE", help="JSON object of pricing fields.")
@click.option("--price", "prices", multiple=True, metavar="FIELD=VALUE", help="One pricing field, e.g. memory_gb=3.")
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"wallSeconds", "costUsd", "frames", "sampleFrames", ...}.'
)
def estimate_command(
    source: str,
    backend: str,
    concurrency: int | None,
    samples: int,
    sample_frames: int,
    pricing_file: str | None,
    prices: tuple[str, ...],
    as_json: bool,
) -> None:
    """Predict a job's wall time (and cost on a priced backend) from a few frames rendered here."""
    estimate = estimate_source(
        source,
        backend=backend,
        concurrency=concurrency,
        samples=samples,
        sample_frames=sample_frames,
        pricing_file=pricing_file,
        prices=prices,
    )
    click.echo(estimate.model_dump_json(by_alias=True) if as_json else describe_estimate(estimate))


# -- --max-cost -----------------------------------------------------------------------------------------------
def refuse_over_budget(estimate: Estimate, max_cost: float) -> None:
    """SpecError (one line) when the estimate is over `--max-cost`."""
    if estimate.cost_usd > max_cost:
        raise SpecError(
            f"--max-cost {max_cost:g}: the estimate is ${estimate.cost_usd:.4f} on {estimate.backend} "
            f"({estimate.frames} frames, {estimate.chunks} chunks); not started",
            retryable=False,
        )


class CostGuard:
    """An event sink adding up a run's running cost (a :class:`CostMeter`) and calling `stop` once when it
    passes `max_cost`."""

    def __init__(
        self,
        pricing: Pricing | None,
        max_cost: float,
        stop: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter = CostMeter(pricing, clock=clock) if pricing is not None else None
        self.max_cost = max_cost
        self.stop = stop
        self.stopped = False

    @property
    def spent(self) -> float:
        return self.meter.spent if self.meter is not None else 0.0

    def running_cost(self, now: float | None = None) -> float:
        return self.meter.running_cost(now) if self.meter is not None else 0.0

    def __call__(self, event: ProgressEvent) -> None:
        if self.meter is None:
            return
        self.meter(event)
        if not self.stopped and self.running_cost() > self.max_cost:
            self.stopped = True
            self.stop()

    def note(self) -> str | None:
        if not self.stopped:
            return None
        return f"stopped: the running cost ${self.running_cost():.4f} passed --max-cost {self.max_cost:g}"
