"""What `helios job run` does around a run for other tools and budgets: `--events FILE` (JSON lines),
`--webhook URL` (signed JSON on completion and failure), `--max-cost USD` (refuse to start over the estimate,
stop a run whose running cost passes it). commands/job.py builds one :class:`RunExtras` from the flags,
asks it for its event sinks when the run starts and calls :meth:`RunExtras.finish` when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from pydantic import BaseModel, ConfigDict

from helios_kit.protocol import EventSink

if TYPE_CHECKING:
    from helios_kit.commands.estimate import CostGuard
    from helios_kit.events import EventsWriter
    from helios_kit.run import JobReport
    from helios_kit.spec import JobSpec
    from helios_kit.webhook import Webhook


class ExtraFlags(BaseModel):
    """The flags of `helios job run` this module serves."""

    model_config = ConfigDict(extra="forbid")

    events: str | None = None
    webhook: str | None = None
    webhook_secret: str | None = None
    max_cost: float | None = None
    pricing: str | None = None
    price: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """The same flags for a detached `helios job run` (the secret travels in its environment)."""
        argv: list[str] = []
        for flag, value in (("--events", self.events), ("--webhook", self.webhook), ("--pricing", self.pricing)):
            if value is not None:
                argv += [flag, value]
        if self.max_cost is not None:
            argv += ["--max-cost", repr(self.max_cost)]
        for pair in self.price:
            argv += ["--price", pair]
        return argv


class RunExtras:
    """The events file, the webhook and the cost guard of one `helios job run`."""

    def __init__(self, flags: ExtraFlags, backend: str) -> None:
        from helios_kit.commands.estimate import backend_pricing
        from helios_kit.webhook import Webhook, webhook_secret

        self.flags = flags
        self.backend = backend
        self.webhook: Webhook | None = None
        if flags.webhook is not None:  # one-line errors before anything runs
            self.webhook = Webhook(flags.webhook, webhook_secret(flags.webhook_secret))
        self.pricing = backend_pricing(backend, flags.pricing, flags.price)
        self.events: EventsWriter | None = None
        self.guard: CostGuard | None = None

    def open_events(self) -> None:
        """Create the events file now (a path that cannot be written is one line before anything runs)."""
        from helios_kit.events import EventsWriter

        if self.flags.events is not None:
            self.events = EventsWriter(self.flags.events)

    def export_secret(self) -> None:
        """Put the webhook secret in the environment a detached run inherits (never on its command line)."""
        import os

        from helios_kit.webhook import SECRET_ENV

        if self.webhook is not None:
            os.environ[SECRET_ENV] = self.webhook.secret

    def check_budget(self, source: str, concurrency: int | None) -> None:
        """With --max-cost: estimate (samples rendered here) and refuse to start over budget (one line)."""
        if self.flags.max_cost is None or self.pricing is None:
            return  # nothing billed per chunk (the local backend): no samples to render
        from helios_kit.commands.estimate import describe_estimate, estimate_source, refuse_over_budget

        estimate = estimate_source(
            source,
            backend=self.backend,
            concurrency=concurrency,
            pricing_file=self.flags.pricing,
            prices=self.flags.price,
        )
        refuse_over_budget(estimate, self.flags.max_cost)
        click.echo(f"{describe_estimate(estimate)}; within --max-cost {self.flags.max_cost:g}", err=True)

    def sinks(self, spec: JobSpec, chunk_ids: list[int], stop: Callable[[], None]) -> list[EventSink]:
        """The sinks of this run: the events file and the cost guard (calling `stop` over budget)."""
        from helios_kit.commands.estimate import CostGuard

        sinks: list[EventSink] = []
        if self.events is not None:
            sizes = {chunk.id: chunk.frame_count for chunk in spec.chunks if chunk.id in set(chunk_ids)}
            self.events.begin(spec.job_id, sizes)
            sinks.append(self.events)
        if self.flags.max_cost is not None:
            self.guard = CostGuard(self.pricing, self.flags.max_cost, stop)
            sinks.append(self.guard)
        return sinks

    def finish(self, job_id: str, run_id: str | None, state: str, report: JobReport | None, error: str | None) -> None:
        """The cost note, the events file's last line, the webhook (a failed delivery is one warning)."""
        from helios_kit.webhook import WebhookPayload

        note = self.guard.note() if self.guard is not None else None
        if note:
            click.echo(note, err=True)
        summary = report.summary_line() if report is not None else None
        merge = report.merge if report is not None else None
        output = merge.output if merge is not None else None
        if self.events is not None:
            self.events.finish(state, summary, output)
        if self.webhook is None:
            return
        event = {"completed": "job.completed", "cancelled": "job.cancelled"}.get(state, "job.failed")
        payload = WebhookPayload(
            event=event,  # type: ignore[arg-type]
            job_id=job_id,
            run_id=run_id,
            state=state,
            summary=summary,
            output=output,
            frames=merge.frames if merge is not None else 0,
            duration_ms=report.duration_ms if report is not None else 0.0,
            error=note or error,
            cost_usd=self.guard.running_cost() if self.guard is not None else None,
        )
        warning = self.webhook.notify(payload)
        if warning:
            click.echo(f"warning: {warning}", err=True)
