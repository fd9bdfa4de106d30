"""The OpenAPI document, built from the query registry and the filters model, so
that a query added to ``contracts.query_sql`` is documented (and routed) at once."""

from __future__ import annotations

from typing import Any

from contracts.query import QUERIES, Filters

SEED_ROUTES = {
    "/api/trades": ("Seed 002: closed trades (start_date, end_date, symbol, limit).",
                    ["start_date", "end_date", "symbol", "limit", "offset", "tz"]),
    "/api/cumulative-pnl": ("Seed 002: realised P&L all time, year, month, week, day.", ["tz"]),
    "/api/daily-stats": ("Seed 002: daily loss used vs limit, per account and bot.",
                         ["tz", "date"]),
    "/api/pnl-calendar": ("Seed 002: P&L per local day, {date: pnl}.",
                          ["start_date", "end_date", "tz"]),
}  # fmt: skip
HIDDEN = {"scope_accounts", "scope_sources"}


def _param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    prop = dict(schema.get("properties", {}).get(name, {"type": "string"}))
    description = prop.pop("description", "")
    prop.pop("title", None)
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": prop}  # fmt: skip


def _get(summary: str, params: list[dict[str, Any]], csv: bool = True) -> dict[str, Any]:
    if csv:
        params = [*params, {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "csv"]}}]  # fmt: skip
    content: dict[str, Any] = {"application/json": {}}
    if csv:
        content["text/csv"] = {}
    return {"get": {"summary": summary, "parameters": params, "security": [{"bearer": []}],
                    "responses": {"200": {"description": "OK", "content": content},
                                  "400": {"description": "Bad filter"},
                                  "401": {"description": "No or bad token"}}}}  # fmt: skip


def build() -> dict[str, Any]:
    schema = Filters.model_json_schema()
    paths: dict[str, Any] = {}
    for name, spec in QUERIES.items():
        params = [_param(f, schema) for f in spec.filters if f not in HIDDEN]
        paths[f"/api/v1/{name}"] = _get(spec.help, params)
    for path, (summary, names) in SEED_ROUTES.items():
        paths[path] = _get(summary, [_param(n, schema) for n in names])
    paths["/api/v1/dashboard"] = _get("Everything the dashboard shows, in one answer.",
                                      [_param("tz", schema)], csv=False)  # fmt: skip
    paths["/api/v1/bots"] = _get("Per bot: trades, win rate, net, profit factor, open trades.",
                                 [_param("tz", schema)])  # fmt: skip
    paths["/api/v1/health"] = _get("Last commit and its age, event counts; admin: dead letters.",
                                   [], csv=False)  # fmt: skip
    paths["/api/v1/dead-letters"] = _get("Admin only: the latest dead letters.",
                                         [_param("limit", schema)])  # fmt: skip
    paths["/api/v1/whoami"] = _get("The token's name and scope.", [], csv=False)
    paths["/api/v1/events/stream"] = {"get": {
        "summary": "Server-Sent Events: one `commit` message per committed event in scope.",
        "security": [{"bearer": []}],
        "responses": {"200": {"description": "text/event-stream",
                              "content": {"text/event-stream": {}}}}}}  # fmt: skip
    paths["/api/v1/events"] = {"post": {
        "summary": "Publish 1-1000 events (wire format) with a --publish token; 422 lists "
                   "each bad event's field errors and publishes nothing.",
        "security": [{"bearer": []}],
        "requestBody": {"content": {"application/json": {}}},
        "responses": {"200": {"description": "The event ids"},
                      "422": {"description": "Field errors; nothing published"}}}}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "tradescribe", "version": "1"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
