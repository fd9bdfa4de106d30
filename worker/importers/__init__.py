"""Importers of legacy data: one module per format, each a ``read(path, ctx)``."""

from __future__ import annotations

from worker.importers import csv_mapped, csv_trades, plays, pnl_json, sqlite_legacy
from worker.importers.base import ImportContext, Item, Reader, Record, Skip

FORMATS: dict[str, Reader] = {
    "csv-trades": csv_trades.read,
    "pnl-json": pnl_json.read,
    "sqlite-legacy": sqlite_legacy.read,
    "plays": plays.read,
    "csv": csv_mapped.read,
}

__all__ = ["FORMATS", "ImportContext", "Item", "Reader", "Record", "Skip"]
