-- Schema version 1: the event log, the projections (trades, signals, positions, daily stats, status history, journal, audit), dead letters and meta.
-- Frozen: never edit a released migration; add the next file instead.

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    account TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    subject TEXT,
    ts TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    committed_at TEXT NOT NULL,
    body TEXT NOT NULL
);

CREATE INDEX events_subject ON events(source, subject);

CREATE TABLE trades (
    source TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    account TEXT,
    plugin_id TEXT,
    mode TEXT,
    symbol TEXT,
    side TEXT,
    quantity REAL,
    entry_price REAL,
    stop_loss REAL,
    take_profit REAL,
    exit_price REAL,
    current_price REAL,
    realized_pnl REAL,
    unrealized_pnl REAL,
    fees REAL,
    exit_reason TEXT,
    strategy TEXT,
    notes TEXT,
    status TEXT,
    opened_at TEXT,
    closed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (source, trade_id)
);

CREATE INDEX trades_status ON trades(status, account);

CREATE INDEX trades_closed_at ON trades(closed_at);

CREATE INDEX trades_account_closed ON trades(account, closed_at);

CREATE INDEX trades_plugin ON trades(plugin_id, status);

CREATE INDEX trades_symbol ON trades(symbol);

CREATE TABLE trade_status_history (
    event_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    status TEXT NOT NULL,
    ts TEXT NOT NULL,
    event_type TEXT NOT NULL
);

CREATE INDEX trade_status_history_trade ON trade_status_history(source, trade_id, ts);

CREATE TABLE signals (
    source TEXT NOT NULL,
    signal_id TEXT NOT NULL,
    account TEXT,
    plugin_id TEXT,
    mode TEXT,
    symbol TEXT,
    side TEXT,
    entry_price REAL,
    stop_loss REAL,
    take_profit REAL,
    current_price REAL,
    exit_price REAL,
    realized_pnl REAL,
    unrealized_pnl REAL,
    confidence REAL,
    timeframe TEXT,
    strategy TEXT,
    exit_reason TEXT,
    notes TEXT,
    status TEXT,
    emitted_at TEXT,
    closed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (source, signal_id)
);

CREATE INDEX signals_status ON signals(status, account);

CREATE INDEX signals_closed_at ON signals(closed_at);

CREATE TABLE positions (
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    mode TEXT NOT NULL,
    position_key TEXT NOT NULL,
    plugin_id TEXT,
    symbol TEXT,
    quantity REAL,
    entry_price REAL,
    current_price REAL,
    unrealized_pnl REAL,
    realized_pnl REAL,
    lot_size REAL,
    exchange TEXT,
    instrument_token TEXT,
    is_active INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (account, source, mode, position_key)
);

CREATE INDEX positions_active ON positions(is_active, account);

CREATE TABLE daily_stats (
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    date TEXT NOT NULL,
    total_realized_pnl REAL,
    total_unrealized_pnl REAL,
    protected_profit REAL,
    number_of_trades INTEGER,
    daily_loss_used REAL,
    daily_loss_limit REAL,
    loss_limit_hit INTEGER,
    trading_blocked INTEGER,
    trailing_sl_active INTEGER,
    trailing_sl_level REAL,
    paper_balance REAL,
    signals_today INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (account, source, plugin_id, mode, date)
);

CREATE INDEX daily_stats_date ON daily_stats(date, account);

CREATE TABLE journal_entries (
    event_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    account TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    at TEXT NOT NULL,
    title TEXT,
    text TEXT NOT NULL,
    trade_id TEXT,
    signal_id TEXT,
    category TEXT,
    tags TEXT,
    attributes TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX journal_at ON journal_entries(at);

CREATE TABLE audit_log (
    event_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    account TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    ts TEXT NOT NULL,
    action TEXT NOT NULL,
    user TEXT,
    component TEXT,
    level TEXT,
    details TEXT,
    ip_address TEXT,
    attributes TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_ts ON audit_log(ts);

CREATE INDEX audit_action ON audit_log(action);

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    event_id TEXT,
    raw BLOB NOT NULL,
    reason TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    received_at TEXT NOT NULL,
    replayed_at TEXT
);

CREATE INDEX dead_letters_received ON dead_letters(received_at);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
