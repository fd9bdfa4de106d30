"""``tradescribe serve``: the read side over HTTP (JSON API, live dashboard, ingest).

A separate process: it reads the SQLite file read-only through the query layer
(``contracts.query``), learns of commits by polling ``max(seq)`` on its own
read-only connection, and appends ingested events to the Redis stream, so the
worker stays the only writer. With ``--remote`` the same answers come from the
worker over the request channel (``answers.py``).
"""
