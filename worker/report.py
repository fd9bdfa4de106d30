"""``tradescribe report``: seed 002's four dashboard widgets in one offline HTML file.

Everything is inline: CSS, SVG drawn here, and a few lines of script that only
mark the page as rendered (``data-rendered`` on ``<body>``) once every widget
has a size, which is what the browser test checks. No external script, font or
image, so the file opens anywhere, offline.
"""

from __future__ import annotations

import datetime as dt
import html
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from contracts.errors import TradescribeError
from contracts.query import run_query


class ReportError(TradescribeError):
    """The report could not be written."""


WIDGETS = ("widget-pnl", "widget-daily-loss", "widget-calendar", "widget-history")
CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2328;
background:#f6f8fa}
h1{margin:0 0 4px;font-size:22px}.sub{color:#59636e;margin:0 0 16px}
.grid{display:grid;grid-template-columns:2fr 1fr;gap:16px}
.card{background:#fff;border:1px solid #d1d9e0;border-radius:8px;padding:16px}
.card h2{font-size:15px;margin:0 0 12px}.wide{grid-column:1/-1}
.figures{display:flex;gap:18px;flex-wrap:wrap;margin-bottom:8px}
.fig b{display:block;font-size:20px}.fig span{color:#59636e;font-size:12px}
.pos{color:#1a7f37}.neg{color:#cf222e}
.bar{height:14px;background:#eaeef2;border-radius:7px;overflow:hidden;margin:8px 0}
.bar div{height:100%;background:#bf8700}.bar div.over{background:#cf222e}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.summary{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:10px;color:#59636e}
.summary b{color:#1f2328}
"""
SCRIPT = """
addEventListener('load',function(){var ids=%s,n=0;ids.forEach(function(id){
var e=document.getElementById(id);if(e&&e.getBoundingClientRect().height>0)n++;});
document.body.setAttribute('data-rendered',n+'/'+ids.length);});
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def money(value: float | None) -> str:
    if value is None:
        return "-"
    cls = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<span class="{cls}">{value:+,.2f}</span>'


def _day(value: Any, name: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ReportError(f"bad --{name} {value!r}: use YYYY-MM-DD") from None


def gather(
    db: Path | str, filters: dict[str, Any], now: dt.datetime | None = None
) -> dict[str, Any]:
    """Every number the page shows, through the same queries as the CLI.

    ``since`` / ``until`` (local days, inclusive) bound the history, the calendar and
    the equity curve (default: the 53 weeks up to today); the P&L figures stay the
    calendar's periods up to now.
    """
    now = now or dt.datetime.now(dt.UTC)
    zone = ZoneInfo(filters.get("tz") or "UTC")
    since, until = _day(filters.get("since"), "since"), _day(filters.get("until"), "until")
    base = {k: v for k, v in filters.items() if k not in ("since", "until")}
    today = until or now.astimezone(zone).date()
    first = since or today - dt.timedelta(days=today.weekday() + 7 * 52)
    if first > today:
        raise ReportError(f"--since {first} is after --until {today}")
    window = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
    before = run_query(db, "history", {**base, "until": first - dt.timedelta(days=1),
                                       "limit": 1}, now=now).summary or {}  # fmt: skip
    return {
        "pnl": run_query(db, "pnl", base, now=now).as_dict(),
        "calendar": run_query(
            db, "calendar", {**base, "since": first, "until": today}, now=now
        ).as_dict(),
        "history": run_query(db, "history", {**base, **window, "limit": 50}, now=now).as_dict(),
        "daily_loss": run_query(db, "daily-loss", base, now=now).as_dict(),
        "start": before.get("net") or 0.0,
        "first": first,
        "today": today,
        "now": now,
    }


def equity_svg(
    days: list[dict[str, Any]], start: float, first: dt.date, last: dt.date, width: int = 640
) -> str:
    """Cumulative realised P&L at the end of each day from ``first`` to ``last``
    (``start``: the P&L made before ``first``), as a polyline."""
    if not days:
        return '<p id="equity-curve">no closed trades in this window</p>'
    height, pad = 160, 6
    by_day = {d["date"]: d["pnl"] for d in days}
    levels = [start]
    day = first
    while day <= last:
        levels.append(levels[-1] + by_day.get(day.isoformat(), 0.0))
        day += dt.timedelta(days=1)
    lo, hi = min([*levels, 0.0]), max([*levels, 0.0])
    span = (hi - lo) or 1.0
    step = (width - 2 * pad) / max(len(levels) - 1, 1)

    def y(v: float) -> float:
        return pad + (hi - v) / span * (height - 2 * pad)

    points = " ".join(f"{pad + i * step:.1f},{y(v):.1f}" for i, v in enumerate(levels))
    return (
        f'<svg id="equity-curve" width="{width}" height="{height}" viewBox="0 0 {width} '
        f'{height}" role="img" aria-label="equity curve">'
        f'<line x1="0" x2="{width}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#d1d9e0"/>'
        f'<polyline fill="none" stroke="#0969da" stroke-width="2" points="{points}">'
        f"<title>{first} .. {last}: {levels[-1]:+,.2f}</title>"
        "</polyline></svg>"
    )


def _color(pnl: float | None, scale: float) -> str:
    if not pnl:
        return "#ebedf0"
    strength = min(1.0, abs(pnl) / scale) if scale else 1.0
    alpha = 0.25 + 0.75 * strength
    return f"rgba(26,127,55,{alpha:.2f})" if pnl > 0 else f"rgba(207,34,46,{alpha:.2f})"


def calendar_svg(days: list[dict[str, Any]], first: dt.date, last: dt.date) -> str:
    """A year of days, one column per week (Monday on top), coloured by P&L."""
    by_day = {d["date"]: d for d in days}
    scale = max((abs(d["pnl"]) for d in days), default=0.0)
    cell, gap = 12, 3
    weeks = (last - first).days // 7 + 1
    rects = []
    day = first
    while day <= last:
        col, row = (day - first).days // 7, day.weekday()
        d = by_day.get(day.isoformat())
        pnl = d["pnl"] if d else None
        tip = f"{day}: {pnl:+,.2f} ({d['trades']} trades)" if d else f"{day}: no trades"
        rects.append(
            f'<rect class="day" x="{col * (cell + gap)}" y="{row * (cell + gap)}" width="{cell}" '
            f'height="{cell}" rx="2" fill="{_color(pnl, scale)}"><title>{esc(tip)}</title></rect>'
        )
        day += dt.timedelta(days=1)
    w, h = weeks * (cell + gap), 7 * (cell + gap)
    return (
        f'<svg id="pnl-calendar" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="P&amp;L calendar">{"".join(rects)}</svg>'
    )


def _pnl_card(data: dict[str, Any]) -> str:
    rows = data["pnl"]["rows"]
    labels = {"all_time": "All time", "year": "This year", "month": "This month",
              "week": "This week", "today": "Today"}  # fmt: skip
    figures = "".join(
        f'<div class="fig"><b>{money(r["pnl"])}</b><span>{labels[r["period"]]} · '
        f"{r['trades']} trades</span></div>"
        for r in rows
    )
    days = data["calendar"]["rows"]
    return (
        f'<section id="widget-pnl" class="card"><h2>Cumulative realised P&amp;L</h2>'
        f'<div class="figures">{figures}</div>'
        f"{equity_svg(days, data['start'], data['first'], data['today'])}</section>"
    )


def _loss_card(data: dict[str, Any]) -> str:
    """Each account and bot against its own limit; the worst one drives the card (a
    sum over bots would hide one past its limit behind the others' headroom)."""
    s = data["daily_loss"]["summary"]
    rows = sorted((r for r in data["daily_loss"]["rows"] if r["percent"] is not None),
                  key=lambda r: -r["percent"])  # fmt: skip
    if not rows:
        body = f"<p>No daily stats for {esc(s['date'])}.</p>"
    else:
        worst = rows[0]
        pct = worst["percent"]
        blocked = bool(worst["trading_blocked"] or worst["loss_limit_hit"])
        over = " over" if pct >= 100 or blocked else ""
        who = f"{worst['account']} / {worst['source']}"
        body = (
            f'<div class="figures"><div class="fig"><b>{worst["daily_loss_used"] or 0:,.2f} / '
            f"{worst['daily_loss_limit']:,.2f}</b><span>used of limit on {esc(s['date'])} · "
            f"{esc(who)}</span></div></div>"
            f'<div class="bar"><div class="{over.strip()}" style="width:{min(pct, 100):.1f}%">'
            f"</div></div><p>{pct:.1f}% used{' · trading blocked' if blocked else ''}</p>"
        )
        for r in rows[1:]:
            body += (
                f"<p>{esc(r['account'])} / {esc(r['source'])}: "
                f"{r['daily_loss_used'] or 0:,.2f} / {r['daily_loss_limit']:,.2f} "
                f"({r['percent']:.1f}%)</p>"
            )
    return f'<section id="widget-daily-loss" class="card"><h2>Daily loss used</h2>{body}</section>'


def _calendar_card(data: dict[str, Any]) -> str:
    s = data["calendar"]["summary"]
    return (
        f'<section id="widget-calendar" class="card wide"><h2>P&amp;L calendar '
        f"({esc(s['since'])} to {esc(s['until'])}, {s['days_traded']} trading days, net "
        f"{money(s['net'])})</h2>"
        f"{calendar_svg(data['calendar']['rows'], data['first'], data['today'])}"
        "</section>"
    )


def _history_card(data: dict[str, Any]) -> str:
    h = data["history"]
    s = h["summary"]
    pf = s["profit_factor"]
    facts = [("trades", s["count"]), ("wins", s["wins"]), ("losses", s["losses"]),
             ("win rate", f"{s['win_rate']}%" if s["win_rate"] is not None else "-"),
             ("gross profit", money(s["gross_profit"])), ("gross loss", money(s["gross_loss"])),
             ("net", money(s["net"])), ("average", money(s["average"])),
             ("best", money(s["best"])), ("worst", money(s["worst"])),
             ("profit factor", f"{pf:.2f}" if pf is not None else "-")]  # fmt: skip
    summary = "".join(f"<span>{k} <b>{v}</b></span>" for k, v in facts)
    cols = ["closed_at", "source", "symbol", "side", "quantity", "entry_price", "exit_price",
            "realized_pnl", "strategy", "exit_reason"]  # fmt: skip
    numeric = {"quantity", "entry_price", "exit_price", "realized_pnl"}
    head = "".join(f'<th class="{"n" if c in numeric else ""}">{esc(c)}</th>' for c in cols)
    body = []
    for r in h["rows"]:
        cells = []
        for c in cols:
            v = r[c]
            if c == "realized_pnl":
                shown = money(v)
            elif c == "closed_at" and v:
                shown = esc(f"{v[:10]} {v[11:19]}")
            else:
                shown = esc(v)
            cells.append(f'<td class="{"n" if c in numeric else ""}">{shown}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<section id="widget-history" class="card wide"><h2>Trade history (latest '
        f'{len(h["rows"])})</h2><div class="summary">{summary}</div>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def render(data: dict[str, Any], filters: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in filters.items()) or "all accounts and bots"
    script = SCRIPT % ("[" + ",".join(f"'{w}'" for w in WIDGETS) + "]")
    generated = data["now"].strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>tradescribe report</title><style>{CSS}</style></head><body>"
        f'<h1>tradescribe</h1><p class="sub">{esc(shown)} · generated {generated}</p>'
        f'<div class="grid">{_pnl_card(data)}{_loss_card(data)}{_calendar_card(data)}'
        f"{_history_card(data)}</div><script>{script}</script></body></html>\n"
    )


def write_report(db: Path | str, out: Path, filters: dict[str, Any]) -> Path:
    page = render(gather(db, filters), filters)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Every trade of the database is in it: readable by its owner only, like the
        # database, whatever the umask and whatever mode an earlier report had.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fd, 0o600)
            fh.write(page)
    except OSError as exc:
        raise ReportError(f"cannot write {out}: {exc.strerror}; choose another --out") from exc
    return out
