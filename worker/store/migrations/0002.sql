-- Schema version 2: covering indexes for the dashboard queries.
-- Frozen: never edit a released migration; add the next file instead.

CREATE INDEX trades_closed_cover ON trades(status, closed_at, realized_pnl,
    account, source, plugin_id, mode, side, strategy, symbol);

CREATE INDEX trades_plugin_cover ON trades(status, plugin_id, realized_pnl, closed_at);

CREATE INDEX trades_strategy_cover ON trades(status, strategy, realized_pnl, closed_at);

CREATE INDEX trades_source_closed ON trades(source, status, closed_at, realized_pnl);
