"""The ClickHouse side of msgcube (the ``analytics_db`` setting).

With ``analytics_db`` set, the big, append-only data — messages, events, followers — and
everything computed from it — the user-day layer and the finished statistics — live in
ClickHouse (a server, a cluster, or embedded chdb), while the small, transactional data —
accounts, tokens, platforms, quotas, the relay's timings and interface statistics, and the
rollup's bookkeeping (dirty/done marks, ``stats_gen``) — stays in ``db``.

``url`` parses the setting, ``client`` talks to either form, ``schema`` creates the tables,
``writes`` stores batches (deduplicated), ``rollup`` computes periods inside ClickHouse,
``reads`` serves the finished rows.
"""
