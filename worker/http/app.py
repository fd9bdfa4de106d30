"""The ASGI application: pages, the JSON API, the live stream, ingest.

Starlette, not FastAPI: the routes are generated from the query registry
(``contracts.query.QUERIES``), whose filters are already one pydantic model, so
FastAPI's signature-driven validation and OpenAPI would have to be fed through
generated functions; Starlette (already beside anyio) routes them directly and
the OpenAPI document is built from the same registry (``openapi.py``). Uvicorn
serves it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.query import QueryError
from worker.http import openapi, reads, seed
from worker.http.answers import Answers, LocalAnswers, Unavailable
from worker.http.auth import (
    SESSION_COOKIE,
    RateLimit,
    Sessions,
    TooLarge,
    authenticate,
    bearer,
    client_address,
    login_token,
    read_capped,
)
from worker.http.ingest import MAX_BODY_BYTES, IngestError, append, token_in_body, validate
from worker.http.live import CommitWatch, event_stream
from worker.http.shared import SharedAnswers
from worker.http.tokens import Principal, TokenStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]  # fmt: skip
Handler = Callable[[Request, Principal], Awaitable[Response]]


@dataclass
class ServeConfig:
    db: Path | str | None  # the file or a PostgreSQL URL; None: the worker's ``answers``
    tokens: Path
    answers: Answers | None = None  # None: the database ``db``, read-only
    redis_url: str | None = None
    stream: str = "tradescribe:events"
    partitions: int = 1  # ingest routes each event to its source's partition stream
    group: str = "tradescribe"
    heartbeat_ttl_s: float = 30.0
    channel_key: bytes | None = None  # checks the worker's signed heartbeat
    poll_s: float = 0.25
    secure_cookie: bool = False
    rate_limit: RateLimit = field(default_factory=RateLimit)


class SecurityHeaders:
    """Adds the CSP and friends to every response (pages, API, errors, static)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def query_params(request: Request) -> dict[str, Any]:
    return {k.replace("-", "_"): v for k, v in request.query_params.items() if k != "format"}


def _seq(value: Any) -> int:
    try:
        return max(0, int(value)) if value is not None else 0
    except ValueError:
        return 0


def _json(value: dict[str, Any]) -> bytes:
    """A JSON object as ``JSONResponse`` encodes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _encoded(fn: Callable[..., dict[str, Any]], *args: Any) -> bytes:
    return _json(fn(*args))


def respond(request: Request, result: dict[str, Any]) -> Response:
    """JSON as ``query --json`` prints it, or its rows as CSV with ``?format=csv``."""
    if request.query_params.get("format") == "csv":
        from worker.cli.query import write_csv

        out = io.StringIO()
        write_csv(result, out)
        return PlainTextResponse(out.getvalue(), media_type="text/csv; charset=utf-8")
    return JSONResponse(result)


class Server:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.tokens = TokenStore(config.tokens)
        self.sessions = Sessions()
        self.answers: Answers
        if config.answers is not None:
            self.answers = config.answers
        elif config.db is not None:
            self.answers = LocalAnswers(config.db)
        else:
            raise ValueError("serve needs a database file or the worker's answers")
        self.watch = CommitWatch(self.answers, config.poll_s)
        self.dashboards = SharedAnswers(ttl_s=1.0, idle_s=60.0)
        self.pipelines = SharedAnswers(ttl_s=1.0)
        self.lives = SharedAnswers(ttl_s=config.poll_s)
        self._redis: Any = None

    # --- who is asking ---------------------------------------------------------

    def _limited(self, request: Request) -> Response | None:
        wait = self.config.rate_limit.blocked_for(client_address(request))
        if wait > 0:
            return error(429, "too many failed logins; try again later",
                         retry_after_s=round(wait))  # fmt: skip
        return None

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            limited = self._limited(request)
            if limited is not None:
                return limited
            principal = await anyio.to_thread.run_sync(
                authenticate, request, self.tokens, self.sessions
            )
            if principal is None:
                if bearer(request) is not None:
                    self.config.rate_limit.failed(client_address(request))
                return error(401, "a token is needed: Authorization: Bearer <token>, "
                                  "or log in at /login")  # fmt: skip
            try:
                return await handler(request, principal)
            except Unavailable as exc:  # remote mode: no worker, Redis down, a forged reply
                return error(503, str(exc))
            except QueryError as exc:
                return error(400, str(exc))

        return endpoint

    # --- pages -------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        principal = await anyio.to_thread.run_sync(
            authenticate, request, self.tokens, self.sessions
        )
        if principal is None:
            return RedirectResponse("/login", status_code=303)
        return FileResponse(STATIC / "dashboard.html")

    async def login_page(self, request: Request) -> Response:
        return FileResponse(STATIC / "login.html")

    async def login(self, request: Request) -> Response:
        limited = self._limited(request)
        if limited is not None:
            return limited
        try:
            body = await read_capped(request, 4096)
        except TooLarge:
            return error(413, "a login body is a token, at most 4096 bytes")
        token = login_token(request, body.decode("utf-8", "replace"))
        principal = await anyio.to_thread.run_sync(self.tokens.lookup, token)
        if principal is None:
            self.config.rate_limit.failed(client_address(request))
            return RedirectResponse("/login?failed=1", status_code=303)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, self.sessions.open(token), httponly=True,
                            samesite="strict", secure=self.config.secure_cookie,
                            max_age=int(self.sessions.ttl_s), path="/")  # fmt: skip
        return response

    async def logout(self, request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            self.sessions.close(session)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file() or name.endswith(".html"):
            return error(404, "not found")
        return FileResponse(path)

    # --- the API -------------------------------------------------------------------

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    def query_endpoint(self, name: str) -> Handler:
        async def handler(request: Request, principal: Principal) -> Response:
            params = query_params(request)
            result = await self.run(self.answers.query, principal, name, params)
            if name == "trade" and not result["rows"]:
                return error(404, f"no trade {params.get('trade_id')!r}")
            return respond(request, result)

        return handler

    def seed_endpoint(self, name: str) -> Handler:
        async def handler(request: Request, principal: Principal) -> Response:
            params = query_params(request)
            result = await self.run(self.answers.seed, principal, name, params)
            if request.query_params.get("format") == "csv":
                return respond(request, seed.as_table(result))
            return JSONResponse(result)

        return handler

    async def dashboard(self, request: Request, principal: Principal) -> Response:
        params = query_params(request)
        # The last commit the page heard of on its live stream: the answer must hold it.
        at_least = _seq(params.pop("min_seq", None))
        key = (principal, json.dumps(params, sort_keys=True))  # the answer names the token
        seen = self.watch.seq  # what an answer begun now holds at least
        answers = self.answers

        async def compute() -> bytes:
            # encoded once, in the thread: a shared answer is 100-140 kB of JSON
            body: bytes = await self.run(_encoded, answers.dashboard_data, principal, params)
            return body

        async def compute_live() -> dict[str, Any]:
            live: dict[str, Any] = await self.run(answers.dashboard_live, principal)
            return live

        data = await self.dashboards.get(key, compute, seen, at_least)
        # the clock-bound part: made at most once per token and commit watch poll
        live = await self.lives.get(principal, compute_live, seen, at_least)
        if principal.admin:  # one look at Redis a second, whoever asks
            pipeline = await self.pipelines.get("pipeline", self.pipeline)
            live = {**live, "health": {**live["health"], "pipeline": pipeline}}
        # two JSON objects with no key in common, joined into one
        body = _json(live)[:-1] + b"," + data[1:]
        return Response(body, media_type="application/json")

    async def pipeline(self) -> dict[str, Any]:
        c = self.config
        found = await self.run(
            reads.pipeline,
            c.redis_url,
            c.stream,
            c.group,
            c.heartbeat_ttl_s,
            c.channel_key,
            c.partitions,
        )
        return found  # type: ignore[no-any-return]

    async def bots(self, request: Request, principal: Principal) -> Response:
        rows = await self.run(self.answers.bots, principal, query_params(request))
        columns = list(rows[0]) if rows else ["source"]
        return respond(request, {"name": "bots", "columns": columns, "rows": reads.clean(rows),
                                 "summary": None, "sections": {}})  # fmt: skip

    async def health(self, request: Request, principal: Principal) -> Response:
        out = await self.run(self.answers.health, principal)
        if principal.admin:
            out["pipeline"] = await self.pipeline()
        return JSONResponse(reads.clean(out))

    async def dead_letters(self, request: Request, principal: Principal) -> Response:
        if not principal.admin:
            return error(403, "dead letters need an admin token")
        raw = request.query_params.get("limit") or "100"
        if not raw.isdigit():
            return error(400, f"limit must be a whole number from 1 to 1000, not {raw[:40]!r}")
        limit = min(max(int(raw), 1), 1000)
        rows = await self.run(self.answers.dead_letters, limit)
        columns = list(rows[0]) if rows else ["id"]
        return respond(request, {"name": "dead-letters", "columns": columns, "rows": rows,
                                 "summary": None, "sections": {}})  # fmt: skip

    async def whoami(self, request: Request, principal: Principal) -> Response:
        return JSONResponse(principal.as_dict())

    async def openapi_doc(self, request: Request, principal: Principal) -> Response:
        return JSONResponse(openapi.build())

    async def docs_page(self, request: Request, principal: Principal) -> Response:
        return FileResponse(STATIC / "docs.html")

    async def stream(self, request: Request, principal: Principal) -> Response:
        last = request.headers.get("last-event-id") or request.query_params.get("after")
        after = int(last) if last and last.isdigit() else None

        async def still_allowed() -> bool:
            now = await anyio.to_thread.run_sync(authenticate, request, self.tokens, self.sessions)
            return now is not None and now.token_id == principal.token_id

        return StreamingResponse(
            event_stream(self.watch, principal, after, still_allowed),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    async def ingest(self, request: Request) -> Response:
        limited = self._limited(request)
        if limited is not None:
            return limited
        try:
            raw = await read_capped(request, MAX_BODY_BYTES)
        except TooLarge:
            return error(413, f"a request may be at most {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return error(422, f"the body is not JSON: {exc}")
        token = bearer(request) or token_in_body(body)
        principal = await self.run(self.tokens.lookup, token) if token else None
        if principal is None:
            self.config.rate_limit.failed(client_address(request))
            return error(401, "a --publish token is needed (Authorization: Bearer, "
                              'or "token" in the body)')  # fmt: skip
        if not principal.publish:
            return error(403, "this token may not publish; create one with --publish")
        try:
            events = validate(principal, body)
        except IngestError as exc:
            return error(422, "invalid events; nothing was published", events=exc.errors)
        if self.config.redis_url is None:
            return error(503, "this server has no --redis-url to publish to")
        if self._redis is None:
            from contracts.redisclient import async_client

            self._redis = async_client(self.config.redis_url)
        try:
            ids = await append(self._redis, self.config.stream, events, self.config.partitions)
        except Exception as exc:  # redis down: say so, publish nothing
            log.warning("ingest: cannot append to the stream: %s", exc)
            return error(503, f"cannot reach Redis: {exc}; nothing was published")
        return JSONResponse({"ids": ids, "count": len(ids)})

    # --- wiring ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        g = self.guarded
        routes = [
            Route("/", self.index),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/static/{name}", self.static),
            Route("/favicon.ico", lambda request: Response(status_code=204)),
            Route("/api/openapi.json", g(self.openapi_doc)),
            Route("/api/docs", g(self.docs_page)),
            Route("/api/v1/events/stream", g(self.stream)),
            Route("/api/v1/events", self.ingest, methods=["POST"]),
            Route("/api/v1/dashboard", g(self.dashboard)),
            Route("/api/v1/bots", g(self.bots)),
            Route("/api/v1/health", g(self.health)),
            Route("/api/v1/dead-letters", g(self.dead_letters)),
            Route("/api/v1/whoami", g(self.whoami)),
        ]
        routes += [Route(f"/api/v1/{name}", g(self.query_endpoint(name)))
                   for name in reads.QUERY_NAMES]  # fmt: skip
        routes += [Route(f"/api/{name}", g(self.seed_endpoint(name))) for name in seed.ROUTES]
        return routes

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watch.run)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                if self._redis is not None:
                    await self._redis.aclose()
                close = getattr(self.answers, "close", None)
                if close is not None:
                    close()


def create_app(config: ServeConfig) -> tuple[ASGIApp, Server]:
    """The ASGI app (security headers around Starlette) and the server behind it."""
    server = Server(config)
    app = Starlette(routes=server.routes(), lifespan=server.lifespan)
    return SecurityHeaders(app), server
