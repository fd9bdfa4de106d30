-- Schema version 3: trade_days: closed trades summed per UTC day and tenant (kept by triggers then), and partial indexes of what is active.
-- Frozen: never edit a released migration; add the next file instead.

CREATE TABLE trade_days (
    day TEXT NOT NULL,
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    strategy TEXT NOT NULL,
    trades INTEGER NOT NULL,
    wins INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    gross_profit REAL NOT NULL,
    gross_loss REAL NOT NULL,
    best REAL,
    worst REAL,
    PRIMARY KEY (day, account, source, plugin_id, mode, strategy)
) WITHOUT ROWID;

CREATE TRIGGER trade_days_insert AFTER INSERT ON trades
WHEN NEW.status = 'closed' AND NEW.closed_at IS NOT NULL BEGIN
    INSERT INTO trade_days (day, account, source, plugin_id, mode, strategy, trades, wins, losses,
        gross_profit, gross_loss, best, worst)
    SELECT substr(NEW.closed_at, 1, 10), coalesce(NEW.account, ''), coalesce(NEW.source, ''), coalesce(NEW.plugin_id, ''), coalesce(NEW.mode, ''), coalesce(NEW.strategy, ''), 1, coalesce(NEW.realized_pnl > 0, 0), coalesce(NEW.realized_pnl < 0, 0), max(coalesce(NEW.realized_pnl, 0), 0), min(coalesce(NEW.realized_pnl, 0), 0), NEW.realized_pnl, NEW.realized_pnl WHERE NEW.status = 'closed' AND NEW.closed_at IS NOT NULL
    ON CONFLICT (day, account, source, plugin_id, mode, strategy) DO UPDATE SET trades = trades + 1,
        wins = wins + excluded.wins, losses = losses + excluded.losses,
        gross_profit = gross_profit + excluded.gross_profit,
        gross_loss = gross_loss + excluded.gross_loss,
        best = CASE WHEN best IS NULL OR excluded.best > best THEN excluded.best ELSE best END,
        worst = CASE WHEN worst IS NULL OR excluded.worst < worst THEN excluded.worst ELSE worst
        END;
END;

CREATE TRIGGER trade_days_update AFTER UPDATE ON trades BEGIN
    UPDATE trade_days SET trades = trades - 1,
        wins = wins - coalesce(OLD.realized_pnl > 0, 0), losses = losses - coalesce(OLD.realized_pnl < 0, 0),
        gross_profit = gross_profit - max(coalesce(OLD.realized_pnl, 0), 0),
        gross_loss = gross_loss - min(coalesce(OLD.realized_pnl, 0), 0)
     WHERE trade_days.day = substr(OLD.closed_at, 1, 10) AND trade_days.account = coalesce(OLD.account, '') AND trade_days.source = coalesce(OLD.source, '') AND trade_days.plugin_id = coalesce(OLD.plugin_id, '') AND trade_days.mode = coalesce(OLD.mode, '') AND trade_days.strategy = coalesce(OLD.strategy, '') AND OLD.status = 'closed' AND OLD.closed_at IS NOT NULL;
    UPDATE trade_days SET
        best = (SELECT max(t.realized_pnl) FROM trades t WHERE t.status = 'closed' AND t.closed_at >= trade_days.day AND t.closed_at < date(trade_days.day, '+1 day') AND coalesce(t.account, '') = trade_days.account AND coalesce(t.source, '') = trade_days.source AND coalesce(t.plugin_id, '') = trade_days.plugin_id AND coalesce(t.mode, '') = trade_days.mode AND coalesce(t.strategy, '') = trade_days.strategy AND NOT (t.source = OLD.source AND t.trade_id = OLD.trade_id)),
        worst = (SELECT min(t.realized_pnl) FROM trades t WHERE t.status = 'closed' AND t.closed_at >= trade_days.day AND t.closed_at < date(trade_days.day, '+1 day') AND coalesce(t.account, '') = trade_days.account AND coalesce(t.source, '') = trade_days.source AND coalesce(t.plugin_id, '') = trade_days.plugin_id AND coalesce(t.mode, '') = trade_days.mode AND coalesce(t.strategy, '') = trade_days.strategy AND NOT (t.source = OLD.source AND t.trade_id = OLD.trade_id))
     WHERE trade_days.day = substr(OLD.closed_at, 1, 10) AND trade_days.account = coalesce(OLD.account, '') AND trade_days.source = coalesce(OLD.source, '') AND trade_days.plugin_id = coalesce(OLD.plugin_id, '') AND trade_days.mode = coalesce(OLD.mode, '') AND trade_days.strategy = coalesce(OLD.strategy, '') AND OLD.status = 'closed' AND OLD.closed_at IS NOT NULL
        AND (OLD.realized_pnl = trade_days.best OR OLD.realized_pnl = trade_days.worst);
    INSERT INTO trade_days (day, account, source, plugin_id, mode, strategy, trades, wins, losses,
        gross_profit, gross_loss, best, worst)
    SELECT substr(NEW.closed_at, 1, 10), coalesce(NEW.account, ''), coalesce(NEW.source, ''), coalesce(NEW.plugin_id, ''), coalesce(NEW.mode, ''), coalesce(NEW.strategy, ''), 1, coalesce(NEW.realized_pnl > 0, 0), coalesce(NEW.realized_pnl < 0, 0), max(coalesce(NEW.realized_pnl, 0), 0), min(coalesce(NEW.realized_pnl, 0), 0), NEW.realized_pnl, NEW.realized_pnl WHERE NEW.status = 'closed' AND NEW.closed_at IS NOT NULL
    ON CONFLICT (day, account, source, plugin_id, mode, strategy) DO UPDATE SET trades = trades + 1,
        wins = wins + excluded.wins, losses = losses + excluded.losses,
        gross_profit = gross_profit + excluded.gross_profit,
        gross_loss = gross_loss + excluded.gross_loss,
        best = CASE WHEN best IS NULL OR excluded.best > best THEN excluded.best ELSE best END,
        worst = CASE WHEN worst IS NULL OR excluded.worst < worst THEN excluded.worst ELSE worst
        END;
END;

CREATE TRIGGER trade_days_delete AFTER DELETE ON trades BEGIN
    UPDATE trade_days SET trades = trades - 1,
        wins = wins - coalesce(OLD.realized_pnl > 0, 0), losses = losses - coalesce(OLD.realized_pnl < 0, 0),
        gross_profit = gross_profit - max(coalesce(OLD.realized_pnl, 0), 0),
        gross_loss = gross_loss - min(coalesce(OLD.realized_pnl, 0), 0)
     WHERE trade_days.day = substr(OLD.closed_at, 1, 10) AND trade_days.account = coalesce(OLD.account, '') AND trade_days.source = coalesce(OLD.source, '') AND trade_days.plugin_id = coalesce(OLD.plugin_id, '') AND trade_days.mode = coalesce(OLD.mode, '') AND trade_days.strategy = coalesce(OLD.strategy, '') AND OLD.status = 'closed' AND OLD.closed_at IS NOT NULL;
    UPDATE trade_days SET
        best = (SELECT max(t.realized_pnl) FROM trades t WHERE t.status = 'closed' AND t.closed_at >= trade_days.day AND t.closed_at < date(trade_days.day, '+1 day') AND coalesce(t.account, '') = trade_days.account AND coalesce(t.source, '') = trade_days.source AND coalesce(t.plugin_id, '') = trade_days.plugin_id AND coalesce(t.mode, '') = trade_days.mode AND coalesce(t.strategy, '') = trade_days.strategy AND NOT (t.source = OLD.source AND t.trade_id = OLD.trade_id)),
        worst = (SELECT min(t.realized_pnl) FROM trades t WHERE t.status = 'closed' AND t.closed_at >= trade_days.day AND t.closed_at < date(trade_days.day, '+1 day') AND coalesce(t.account, '') = trade_days.account AND coalesce(t.source, '') = trade_days.source AND coalesce(t.plugin_id, '') = trade_days.plugin_id AND coalesce(t.mode, '') = trade_days.mode AND coalesce(t.strategy, '') = trade_days.strategy AND NOT (t.source = OLD.source AND t.trade_id = OLD.trade_id))
     WHERE trade_days.day = substr(OLD.closed_at, 1, 10) AND trade_days.account = coalesce(OLD.account, '') AND trade_days.source = coalesce(OLD.source, '') AND trade_days.plugin_id = coalesce(OLD.plugin_id, '') AND trade_days.mode = coalesce(OLD.mode, '') AND trade_days.strategy = coalesce(OLD.strategy, '') AND OLD.status = 'closed' AND OLD.closed_at IS NOT NULL
        AND (OLD.realized_pnl = trade_days.best OR OLD.realized_pnl = trade_days.worst);
END;

INSERT INTO trade_days (day, account, source, plugin_id, mode, strategy, trades, wins, losses, gross_profit, gross_loss, best, worst)
SELECT substr(closed_at, 1, 10), coalesce(account, ''), coalesce(source, ''), coalesce(plugin_id, ''), coalesce(mode, ''), coalesce(strategy, ''), count(*), sum(coalesce(realized_pnl > 0, 0)),
    sum(coalesce(realized_pnl < 0, 0)),
    total(max(coalesce(realized_pnl, 0), 0)), total(min(coalesce(realized_pnl, 0), 0)),
    max(realized_pnl), min(realized_pnl)
FROM trades WHERE trades.status = 'closed' AND trades.closed_at IS NOT NULL
GROUP BY substr(closed_at, 1, 10), coalesce(account, ''), coalesce(source, ''), coalesce(plugin_id, ''), coalesce(mode, ''), coalesce(strategy, '');

CREATE INDEX trade_days_plugin ON trade_days(plugin_id, trades, wins, losses, gross_profit, gross_loss, best, worst);

CREATE INDEX trade_days_strategy ON trade_days(strategy, trades, wins, losses, gross_profit, gross_loss, best, worst);

CREATE INDEX trades_active ON trades(opened_at) WHERE status IN ('pending', 'open', 'partial');

CREATE INDEX signals_active ON signals(emitted_at) WHERE status IN ('active', 'triggered');

CREATE INDEX positions_open ON positions(account, source) WHERE is_active = 1;
