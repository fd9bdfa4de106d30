"""The store: what a batch of stream entries becomes in the database.

Imports nothing itself, so that the write process (:mod:`worker.store.writer`) starts
without loading the models. :class:`worker.store.sqlite.SqliteStore` is the engine;
the consume loop talks to it only through ``prepare``, ``commit_planned`` and
``commit`` (see docs/architecture.md for adding a second engine).
"""
