"""A local stand-in for binance's and kraken's public REST APIs, for end-to-end tests through real ccxt.

Tests never reach a real exchange, yet the point of a ccxt source is that ccxt's own request building,
response parsing and error mapping work with our paging and retry logic. So this serves the few
endpoints ccxt calls for `load_markets` and `fetch_ohlcv`, in each exchange's own response format and
paging rules, from a deterministic candle series under a settable clock:

* binance  GET /api/v3/exchangeInfo, GET /api/v3/klines (startTime/endTime/limit <= 1000, rows with open
  time >= startTime, the still-open candle included), GET /api/v3/time;
* kraken   GET /0/public/Assets, /0/public/AssetPairs, /0/public/OHLC (`since` in seconds, only the most
  recent 720 rows whatever `since` says, the last row being the still-open candle, and `last`), /0/public/Time.

Every response carries the server's clock in its `Date` header, as a real server's does. Faults are injected
per request (`fail_next`: 429 with Retry-After, 500, 503), also from the N-th page on (`fail_page`), a candle
can be revised after it was served (`revise`), and the server's clock can lag ours (`clock_lag`, with
`our_clock` the client's). Point an exchange at it with `ccxt_config(exchange_id)`.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt

from quant_core.data.schema import TIMEFRAME_MINUTES

OFF_GRID_NOW = datetime(2024, 6, 3, 13, 47, 12, tzinfo=UTC)  # the tests' clock: off every candle grid, the last open

BINANCE_MAX_LIMIT = 1000
BINANCE_DEFAULT_LIMIT = 500
KRAKEN_MAX_ROWS = 720
MS_PER_MINUTE = 60_000

# exchange -> unified symbol -> (exchange's market id, base id, quote id, status)
MARKETS: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "binance": {
        "BTC/USDT": ("BTCUSDT", "BTC", "USDT", "TRADING"),
        "ETH/USDT": ("ETHUSDT", "ETH", "USDT", "TRADING"),
        "LUNA/USDT": ("LUNAUSDT", "LUNA", "USDT", "BREAK"),  # halted: not listed by markets()
    },
    "kraken": {
        "BTC/USD": ("XXBTZUSD", "XXBT", "ZUSD", "online"),
        "ETH/USD": ("XETHZUSD", "XETH", "ZUSD", "online"),
    },
}
KRAKEN_ASSETS = {"XXBT": "XBT", "XETH": "ETH", "ZUSD": "USD"}
BASE_PRICE = {"BTC": 40_000.0, "ETH": 2_500.0, "LUNA": 1.0}


@dataclass
class Fault:
    """One injected failure: the next request whose path contains `path` gets HTTP `status`, once `after`
    requests to such paths have been answered successfully (0: at once)."""

    status: int
    path: str
    retry_after: float | None = None
    after: int = 0


@dataclass
class Served:
    """One request the server answered, for assertions on what the client asked and got."""

    exchange: str
    endpoint: str
    params: dict[str, str]
    status: int
    rows: int = 0
    path: str = ""


@dataclass
class FakeExchangeServer:
    """Binance and kraken public endpoints on 127.0.0.1 (a free port) under a settable clock `now_ms`.
    `clock_lag`: how far the server's clock is behind ours (`our_clock`); negative when it is ahead."""

    now: datetime
    clock_lag: timedelta = timedelta(0)
    listed: datetime = datetime(2019, 1, 1, tzinfo=UTC)
    seed: int = 7
    requests: list[Served] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    revisions: dict[tuple[str, str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.now_ms = _ms(self.now)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> FakeExchangeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:  # the Date header: its clock
                return formatdate(server.now_ms / 1000, usegmt=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-exchange", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def ccxt_config(self, exchange_id: str, **extra: Any) -> dict[str, Any]:
        """Constructor config pointing every API url of the exchange here (nothing can leak to the real
        host), with ccxt's rate-limit delay cut to 1 ms so tests do not wait."""
        real = getattr(ccxt, exchange_id)().urls["api"]
        api = {name: f"{self.base_url}/{exchange_id}{urlsplit(url).path}" for name, url in real.items()}
        return {"urls": {"api": api}, "rateLimit": 1, "timeout": 5000, **extra}

    # ------------------------------------------------------------------------- test controls

    def clock(self) -> datetime:
        """The server's now (pass as the source's `now` so both agree on which candle is open)."""
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=self.now_ms)

    def our_clock(self) -> datetime:
        """The client's clock: `clock_lag` ahead of the server's (pass as the source's `now`)."""
        return self.clock() + self.clock_lag

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now_ms += int(delta / timedelta(milliseconds=1))

    def fail_next(self, status: int, *, path: str = "", count: int = 1, retry_after: float | None = None,
                  after: int = 0) -> None:
        """The next `count` requests whose path contains `path` fail with HTTP `status` (once `after` such
        requests have succeeded)."""
        with self._lock:
            self.faults.extend(Fault(status, path, retry_after, after) for _ in range(count))

    def fail_page(self, page: int, status: int, *, path: str, count: int = 1) -> None:
        """Requests for page `page` (1-based: after `page - 1` successful requests to `path`) fail `count` times."""
        self.fail_next(status, path=path, count=count, after=page - 1)

    def revise(self, symbol: str, timeframe: str, open_ms: int, close: float) -> None:
        """Change one candle's close from now on (an exchange correcting its latest candle)."""
        with self._lock:
            self.revisions[(symbol, timeframe, open_ms)] = close

    def last_closed_ms(self, timeframe: str) -> int:
        step = _step(timeframe)
        return (self.now_ms // step) * step - step

    def ohlcv_requests(self, exchange: str | None = None) -> list[Served]:
        """Successful candle requests (klines / OHLC)."""
        return [
            r
            for r in self.requests
            if r.endpoint in ("klines", "OHLC") and r.status == 200 and (exchange is None or r.exchange == exchange)
        ]

    # ----------------------------------------------------------------------------- the series

    def candle(self, symbol: str, timeframe: str, open_ms: int) -> tuple[int, float, float, float, float, float]:
        """The (closed or open) candle at `open_ms`: deterministic, so tests can compute what to expect."""
        step = _step(timeframe)
        open_ = self._level(symbol, open_ms)
        close_at = min(open_ms + step, self.now_ms)  # the open candle closes at 'now' so far
        close = self.revisions.get((symbol, timeframe, open_ms), self._level(symbol, close_at))
        u1, u2, u3 = (_unit(self.seed, symbol, timeframe, open_ms, k) for k in (1, 2, 3))
        high = round(max(open_, close) * (1 + 0.002 * u1), 2)
        low = round(min(open_, close) * (1 - 0.002 * u2), 2)
        volume = round(1 + 100 * u3, 6)
        return open_ms, open_, high, low, close, volume

    def expected(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> list[tuple]:
        """The closed candles with open time in [start, end): what a correct fetch returns."""
        step = _step(timeframe)
        first = max(-(-start_ms // step) * step, self._first_ms(timeframe))
        last = min(end_ms - 1, self.last_closed_ms(timeframe))
        return [self.candle(symbol, timeframe, t) for t in range(first, last + 1, step)] if first <= last else []

    def _level(self, symbol: str, t_ms: int) -> float:
        base = BASE_PRICE[symbol.split("/")[0]]
        days = t_ms / 86_400_000
        wiggle = 0.2 * math.sin(days / 37.0) + 0.05 * math.sin(days * 3.1) + 0.01 * math.sin(t_ms / 7_777_777)
        return round(base * math.exp(wiggle), 2)

    def _first_ms(self, timeframe: str) -> int:
        step = _step(timeframe)
        return -(-_ms(self.listed) // step) * step

    def _open_ms(self, timeframe: str) -> int:
        step = _step(timeframe)
        return (self.now_ms // step) * step

    def _series(self, symbol: str, timeframe: str, first: int, last: int) -> list[tuple]:
        """Candles with open time in [first, last], including the open one, inside the listed history."""
        step = _step(timeframe)
        first = max(-(-first // step) * step, self._first_ms(timeframe))
        last = min(last, self._open_ms(timeframe))
        return [self.candle(symbol, timeframe, t) for t in range(first, last + 1, step)] if first <= last else []

    # --------------------------------------------------------------------------- HTTP plumbing

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        params = dict(parse_qsl(parts.query))
        exchange, _, rest = parts.path.lstrip("/").partition("/")
        endpoint = rest.rsplit("/", 1)[-1]
        with self._lock:
            fault = next((f for f in self.faults if f.path in parts.path and f.after <= sum(
                1 for r in self.requests if r.status == 200 and f.path in r.path)), None)
            if fault is not None:
                self.faults.remove(fault)
            if fault is not None:
                status, body, headers = _fault_response(exchange, fault)
                rows = 0
            else:
                status, payload, rows = self._route(exchange, "/" + rest, params)
                body = payload if isinstance(payload, str) else json.dumps(payload)
                headers = {}
            self.requests.append(Served(exchange, endpoint, params, status, rows, parts.path))
        data = body.encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json" if body[:1] in "[{" else "text/plain")
        req.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(data)

    def _route(self, exchange: str, path: str, params: dict[str, str]) -> tuple[int, Any, int]:
        if exchange == "binance":
            if path == "/api/v3/exchangeInfo":
                return 200, self._binance_exchange_info(), 0
            if path == "/api/v3/klines":
                return self._binance_klines(params)
            if path == "/api/v3/time":
                return 200, {"serverTime": self.now_ms}, 0
        if exchange == "kraken":
            if path == "/0/public/Assets":
                return 200, self._kraken_assets(), 0
            if path == "/0/public/AssetPairs":
                return 200, self._kraken_asset_pairs(), 0
            if path == "/0/public/OHLC":
                return self._kraken_ohlc(params)
            if path == "/0/public/Time":
                return 200, {"error": [], "result": {"unixtime": self.now_ms // 1000,
                                                     "rfc1123": formatdate(self.now_ms / 1000, usegmt=True)}}, 0
        return 404, {"code": -1, "msg": f"fake exchange server does not serve {exchange} {path}"}, 0

    # -------------------------------------------------------------------------------- binance

    def _binance_exchange_info(self) -> dict[str, Any]:
        symbols = []
        for market_id, base, quote, status in MARKETS["binance"].values():
            symbols.append(
                {
                    "symbol": market_id,
                    "status": status,
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"],
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.01",
                            "maxPrice": "1000000.00",
                            "tickSize": "0.01",
                        },
                        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.0", "stepSize": "0.00001"},
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _binance_klines(self, params: dict[str, str]) -> tuple[int, Any, int]:
        by_id = {v[0]: k for k, v in MARKETS["binance"].items()}
        symbol = by_id.get(params.get("symbol", ""))
        if symbol is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}, 0
        timeframe = params.get("interval", "")
        if timeframe not in TIMEFRAME_MINUTES:
            return 400, {"code": -1120, "msg": "Invalid interval."}, 0
        limit = int(params.get("limit", BINANCE_DEFAULT_LIMIT))
        if not 1 <= limit <= BINANCE_MAX_LIMIT:
            return (
                400,
                {"code": -1100, "msg": "Illegal characters found in parameter 'limit'; legal range is '1..1000'."},
                0,
            )
        step = _step(timeframe)
        end = int(params["endTime"]) if "endTime" in params else self.now_ms
        if "startTime" in params:
            rows = self._series(symbol, timeframe, int(params["startTime"]), end)[:limit]
        else:
            rows = self._series(symbol, timeframe, end - (limit + 1) * step, end)[-limit:]
        klines = [
            [
                t,
                _dec(o),
                _dec(h),
                _dec(lo),
                _dec(c),
                _dec(v),
                t + step - 1,
                _dec(v * c),
                100,
                _dec(v / 2),
                _dec(v * c / 2),
                "0",
            ]
            for t, o, h, lo, c, v in rows
        ]
        return 200, klines, len(klines)

    # --------------------------------------------------------------------------------- kraken

    def _kraken_assets(self) -> dict[str, Any]:
        result = {
            asset: {"aclass": "currency", "altname": alt, "decimals": 8, "display_decimals": 5, "status": "enabled"}
            for asset, alt in KRAKEN_ASSETS.items()
        }
        return {"error": [], "result": result}

    def _kraken_asset_pairs(self) -> dict[str, Any]:
        result = {}
        for pair_id, base, quote, status in MARKETS["kraken"].values():
            altname = KRAKEN_ASSETS[base] + KRAKEN_ASSETS[quote]
            result[pair_id] = {
                "altname": altname,
                "wsname": f"{KRAKEN_ASSETS[base]}/{KRAKEN_ASSETS[quote]}",
                "aclass_base": "currency",
                "base": base,
                "aclass_quote": "currency",
                "quote": quote,
                "lot": "unit",
                "cost_decimals": 5,
                "pair_decimals": 2,
                "lot_decimals": 8,
                "lot_multiplier": 1,
                "leverage_buy": [2, 3],
                "leverage_sell": [2, 3],
                "fees": [[0, 0.26], [50000, 0.24]],
                "fees_maker": [[0, 0.16], [50000, 0.14]],
                "fee_volume_currency": "ZUSD",
                "margin_call": 80,
                "margin_stop": 40,
                "ordermin": "0.0001",
                "costmin": "0.5",
                "tick_size": "0.01",
                "status": status,
            }
        return {"error": [], "result": result}

    def _kraken_ohlc(self, params: dict[str, str]) -> tuple[int, Any, int]:
        pairs = {v[0]: k for k, v in MARKETS["kraken"].items()}
        alt = {KRAKEN_ASSETS[v[1]] + KRAKEN_ASSETS[v[2]]: v[0] for v in MARKETS["kraken"].values()}
        pair_id = params.get("pair", "")
        pair_id = alt.get(pair_id, pair_id)
        if pair_id not in pairs:
            return 200, {"error": ["EQuery:Unknown asset pair"]}, 0
        minutes = int(params.get("interval", "1"))
        timeframe = next((tf for tf, m in TIMEFRAME_MINUTES.items() if m == minutes), None)
        if timeframe is None:
            return 200, {"error": ["EGeneral:Invalid arguments"]}, 0
        step = _step(timeframe)
        # Only the most recent 720 rows exist for the API, whatever `since` asks; the open one is last.
        rows = self._series(
            pairs[pair_id], timeframe, self._open_ms(timeframe) - (KRAKEN_MAX_ROWS - 1) * step, self.now_ms
        )
        if "since" in params:
            since_ms = int(params["since"]) * 1000
            rows = [r for r in rows[:-1] if r[0] > since_ms] + rows[-1:]
        out = [
            [t // 1000, _dec(o, 2), _dec(h, 2), _dec(lo, 2), _dec(c, 2), _dec((o + c) / 2, 2), _dec(v), 100]
            for t, o, h, lo, c, v in rows
        ]
        last_committed = rows[-2][0] // 1000 if len(rows) > 1 else (rows[0][0] - step) // 1000
        return 200, {"error": [], "result": {pair_id: out, "last": last_committed}}, len(out)


@contextmanager
def running_server(now: datetime, **kwargs: Any) -> Iterator[FakeExchangeServer]:
    """A started FakeExchangeServer, stopped on exit (what the tests' fixture yields)."""
    server = FakeExchangeServer(now=now, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def _fault_response(exchange: str, fault: Fault) -> tuple[int, str, dict[str, str]]:
    """The body each exchange sends with this status (so ccxt's own error mapping is exercised)."""
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    if fault.status == 429:
        body = (
            {"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."}
            if exchange == "binance"
            else {"error": ["EGeneral:Too many requests"]}
        )
        return 429, json.dumps(body), headers
    if fault.status == 500:
        body = (
            {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
            if exchange == "binance"
            else {"error": ["EGeneral:Internal error"]}
        )
        return 500, json.dumps(body), headers
    return fault.status, HTTPStatus(fault.status).phrase, headers  # a load balancer's plain-text page


def _ms(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def _step(timeframe: str) -> int:
    return TIMEFRAME_MINUTES[timeframe] * MS_PER_MINUTE


def _unit(seed: int, symbol: str, timeframe: str, t: int, k: int) -> float:
    """A reproducible number in [0, 1) for one candle (no RNG state, so any candle is computable alone)."""
    h = (t // 1000) * 2654435761 + seed * 97 + k * 40503 + sum(map(ord, symbol + timeframe)) * 7919
    return ((h ^ (h >> 13)) * 1274126177 % 2**32) / 2**32


def _dec(x: float, places: int = 8) -> str:
    return f"{x:.{places}f}"


def expected_frame(server: FakeExchangeServer, market, start_ms: int, end_ms: int):
    """The candles [start_ms, end_ms) of `market` as a fetch should return them (CANDLE_SCHEMA frame)."""
    import polars as pl

    from quant_core.data.schema import CANDLE_SCHEMA
    from quant_core.data.validation import ms_to_datetime

    rows = server.expected(market.symbol, market.timeframe, start_ms, end_ms)
    return pl.DataFrame({"timestamp": [ms_to_datetime(r[0]) for r in rows],
                         **{c: [float(r[i + 1]) for r in rows] for i, c in enumerate(list(CANDLE_SCHEMA)[1:])}},
                        schema=CANDLE_SCHEMA)
