-- Schema version 5: two covering indexes replace nine (reads at 1,000,000 trades), and trade_months.
-- Frozen: never edit a released migration; add the next file instead.

CREATE INDEX trades_closed ON trades(closed_at, trade_id, status, realized_pnl,
    account, source, plugin_id, mode, side, strategy, symbol, quantity, entry_price,
    exit_price, fees, exit_reason, opened_at);

CREATE INDEX trades_symbol_cover ON trades(symbol, status, closed_at, trade_id,
    realized_pnl, account, source, plugin_id, mode, side, strategy);

DROP INDEX IF EXISTS trades_status;

DROP INDEX IF EXISTS trades_closed_at;

DROP INDEX IF EXISTS trades_account_closed;

DROP INDEX IF EXISTS trades_plugin;

DROP INDEX IF EXISTS trades_symbol;

DROP INDEX IF EXISTS trades_closed_cover;

DROP INDEX IF EXISTS trades_plugin_cover;

DROP INDEX IF EXISTS trades_strategy_cover;

DROP INDEX IF EXISTS trades_source_closed;

CREATE TABLE trade_months (
    month TEXT NOT NULL,
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    trades INTEGER NOT NULL,
    wins INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    gross_profit REAL NOT NULL,
    gross_loss REAL NOT NULL,
    best REAL,
    worst REAL,
    PRIMARY KEY (month, account, source, plugin_id, mode, strategy, symbol, side)
) WITHOUT ROWID;

INSERT INTO trade_months (month, account, source, plugin_id, mode, strategy, symbol, side, trades, wins, losses, gross_profit, gross_loss, best, worst)
SELECT substr(closed_at, 1, 7), coalesce(account, ''), coalesce(source, ''), coalesce(plugin_id, ''), coalesce(mode, ''), coalesce(strategy, ''), coalesce(symbol, ''), coalesce(side, ''), count(*), sum(coalesce(realized_pnl > 0, 0)),
    sum(coalesce(realized_pnl < 0, 0)),
    total(max(coalesce(realized_pnl, 0), 0)), total(min(coalesce(realized_pnl, 0), 0)),
    max(realized_pnl), min(realized_pnl)
FROM trades WHERE trades.status = 'closed' AND trades.closed_at IS NOT NULL
GROUP BY substr(closed_at, 1, 7), coalesce(account, ''), coalesce(source, ''), coalesce(plugin_id, ''), coalesce(mode, ''), coalesce(strategy, ''), coalesce(symbol, ''), coalesce(side, '');
