"""Backfill: the durable queue of spans to fetch again from a provider's history.

`queue` keeps gaps (`gaps`), jobs (`backfill_jobs`) and jobs that failed for good
(`backfill_dead_letters`) in PostgreSQL; any number of workers share it, each claiming a job
with `for update skip locked`. The tables are made by `streams.migrations.migrate`.
"""
