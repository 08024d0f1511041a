"""Batches: many videos from one template and rows of props (DESIGN §8, docs/ARCHITECTURE.md "Batches").

- :mod:`.rows`: reading rows (JSONL, CSV, a JSON array), the output template, asset props;
- :mod:`.plan`: rows → one JobSpec per video (long videos chunked like jobs), job files written when changed;
- :mod:`.run`: one doit DAG over every video's chunks and merges, a report per video.

Nothing here is imported by ``import helios_kit``: :mod:`helios_kit.api` loads it on first use.
"""
