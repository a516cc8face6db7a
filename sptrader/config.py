"""Configuration: resolved home and config file, decoded into a strict typed model.

Unknown keys are rejected (a typo must not pass silently); every error names the file
and the key path, and is raised as ConfigError (exit code 2).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import msgspec

from sptrader.errors import ConfigError, UsageError
from sptrader.models import INSTRUMENT_RE, TIMEFRAMES, timeframe_problem
from sptrader.venue_names import VENUES

PriceSource = Literal["auto", "trade", "bid", "mid"]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class _FeedSection(_Section):
    """A ``[feeds.NAME]`` section: one per feed, named after its instrument prefix."""

    #: False for a history-only source: its instruments cannot be watched.
    live: ClassVar[bool] = True


class SimFeedConfig(_FeedSection):
    enabled: bool = True
    seed: int = 42
    tick_rate: float = 1.0
    price_source: PriceSource = "auto"
    publish_interval_ms: int = 50


class ReplayFeedConfig(_FeedSection):
    enabled: bool = False
    speed: float = 60.0
    source: Literal["bars", "ticks"] = "bars"
    start: str = ""
    loop: bool = True
    price_source: PriceSource = "bid"


class LiveFeedConfig(_FeedSection):
    """What every live exchange feed shares."""

    enabled: bool = False
    price_source: PriceSource = "trade"
    # No message for this long: the feed and its instruments are shown stale.
    stale_after_s: float = 15.0
    # No message for this long: the watchdog reconnects the stream.
    watchdog_s: float = 30.0
    # History requests in flight at once during a backfill.
    max_concurrency: int = 4


class BinanceFeedConfig(LiveFeedConfig):
    ws_url: str = "wss://stream.binance.com:9443"
    rest_url: str = "https://api.binance.com"
    # Binance closes a connection after 24 h: reconnect before that.
    max_connection_s: float = 23.5 * 3600


class CoinbaseFeedConfig(LiveFeedConfig):
    ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    # Public market endpoints: products (symbol search) and candles (history).
    rest_url: str = "https://api.coinbase.com"


class KrakenFeedConfig(LiveFeedConfig):
    ws_url: str = "wss://ws.kraken.com/v2"
    # Public REST: AssetPairs (symbol search) and OHLC (history, last 720 bars only).
    rest_url: str = "https://api.kraken.com"
    # Kraken's public REST limits are tight (about one call a second).
    max_concurrency: int = 2


class OandaFeedConfig(LiveFeedConfig):
    stream_url: str = "https://stream-fxpractice.oanda.com"
    rest_url: str = "https://api-fxpractice.oanda.com"
    account_id: str = ""
    # The API token is read from this environment variable, never from the file.
    token_env: str = "OANDA_TOKEN"
    price_source: PriceSource = "bid"


class AlpacaFeedConfig(LiveFeedConfig):
    """US equities from Alpaca's market data API (sptrader.feeds.alpaca)."""

    # The IEX stream of the free plan; ".../v2/sip" with a paid plan.
    ws_url: str = "wss://stream.data.alpaca.markets/v2/iex"
    # Market data REST: 1m bars for history.
    rest_url: str = "https://data.alpaca.markets"
    # The trading API's asset list (symbol search). Keys work on their own host only:
    # paper keys here, live ones on https://api.alpaca.markets.
    trading_url: str = "https://paper-api.alpaca.markets"
    # The bars history asks for: "iex" (free plan) or "sip" (paid), as ws_url streams.
    data_feed: Literal["iex", "sip"] = "iex"
    # The key id and secret are read from these environment variables, never the file.
    key_env: str = "APCA_API_KEY_ID"
    secret_env: str = "APCA_API_SECRET_KEY"
    # IEX is one venue of many: a quiet stock can go a while without a print or quote.
    stale_after_s: float = 60.0


class DukascopyFeedConfig(_FeedSection):
    """History only: ticks by the hour, aggregated to 1m bars."""

    live: ClassVar[bool] = False
    enabled: bool = False
    url: str = "https://datafeed.dukascopy.com/datafeed"
    format: Literal["bi5", "json"] = "bi5"
    price_source: PriceSource = "bid"
    # Hour files fetched at once; the service throttles with 503s beyond a few.
    max_concurrency: int = 4


class FeedsConfig(_Section):
    """Every feed's section, the one table of them: a new venue is its section class and
    a field here (KNOWN_FEEDS and LIVE_FEEDS follow, in this order)."""

    sim: SimFeedConfig = msgspec.field(default_factory=SimFeedConfig)
    replay: ReplayFeedConfig = msgspec.field(default_factory=ReplayFeedConfig)
    binance: BinanceFeedConfig = msgspec.field(default_factory=BinanceFeedConfig)
    coinbase: CoinbaseFeedConfig = msgspec.field(default_factory=CoinbaseFeedConfig)
    kraken: KrakenFeedConfig = msgspec.field(default_factory=KrakenFeedConfig)
    oanda: OandaFeedConfig = msgspec.field(default_factory=OandaFeedConfig)
    dukascopy: DukascopyFeedConfig = msgspec.field(default_factory=DukascopyFeedConfig)
    alpaca: AlpacaFeedConfig = msgspec.field(default_factory=AlpacaFeedConfig)


class StoreConfig(_Section):
    path: str = "sptrader.duckdb"
    keep_ticks: list[str] = msgspec.field(default_factory=list)
    flush_interval_ms: int = 250
    flush_rows: int = 100_000
    seed_days: float = 3.0
    writer_queue: int = 500_000
    # `sptrader db compact` deletes ticks older than this many days; 0 keeps them forever.
    ticks_retention_days: float = 0.0


class ChartConfig(_Section):
    timeframes: list[str] = msgspec.field(default_factory=lambda: list(TIMEFRAMES))
    default_timeframe: str = "1m"
    bars: int = 120


class UiConfig(_Section):
    refresh_hz: float = 10.0
    chart_refresh_hz: float = 2.0
    sparkline_points: int = 20
    event_queue: int = 20_000


class SupervisorConfig(_Section):
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.2
    stable_after_s: float = 30.0


class ApiConfig(_Section):
    # The daemon always serves a unix socket in the home (mode 0600); TCP is optional.
    tcp_port: int = 0
    tcp_host: str = "127.0.0.1"
    client_queue: int = 50_000
    # A TUI or command attaching to a writer on another host: "ws://HOST:PORT" (its
    # tcp_port) and the env var holding that writer's HOME/api.token. "" = this home.
    url: str = ""
    token_env: str = "SPTRADER_API_TOKEN"


class NatsConfig(_Section):
    # Off: one process collects, stores and serves. On: events cross NATS JetStream
    # between `sptrader start --role collector` and `--role writer` (or both, `all`).
    enabled: bool = False
    # One URL or a cluster's: "nats://127.0.0.1:4222" or ["nats://a:4222", "nats://b:4222"].
    url: str | list[str] = "nats://127.0.0.1:4222"
    # Env vars naming a .creds file / holding a token ("" = none): never the secret here.
    creds_env: str = ""
    token_env: str = ""
    # Streams are PREFIX_BARS and PREFIX_TICKS, subjects PREFIX.bars.1m.FEED.SYMBOL ...
    stream_prefix: str = "SPTRADER"
    # How long each stream keeps messages, and how many servers hold each (1 or 3...).
    bars_max_age_days: float = 30.0
    ticks_max_age_hours: float = 6.0
    replicas: int = 1
    # JetStream drops a message whose id it saw within this window (a resend).
    duplicate_window_s: float = 600.0
    # Hosts announce themselves this often; one silent for 3x is shown as gone.
    heartbeat_s: float = 2.0
    # Messages a writer takes per fetch (it acks them once they are stored).
    fetch_batch: int = 2000


class LakeConfig(_Section):
    # Delta Lake history: a local path or an S3-compatible URI ("s3://bucket/prefix");
    # "" = off. The writer appends closed 1m bars (and kept ticks) to it.
    uri: str = ""
    # Appends are batched this long; compaction runs this often (0 = never).
    flush_interval_s: float = 60.0
    compact_every_h: float = 24.0
    # S3-compatible storage: endpoint and region here, keys from these env vars.
    endpoint: str = ""
    region: str = ""
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    allow_http: bool = False


class LlmConfig(_Section):
    # An optional LLM analysis step (a scanner's `llm_prompt`): any OpenAI-compatible
    # chat completions endpoint, local or hosted, through httpx. Off by default.
    enabled: bool = False
    base_url: str = "http://127.0.0.1:11434/v1"
    model: str = ""
    # The API key is read from this env var (never from the config, never logged);
    # "" = none (a local server).
    api_key_env: str = "SPTRADER_LLM_API_KEY"
    timeout_s: float = 30.0
    max_tokens: int = 400


class RetrainConfig(_Section):
    """One ``[[ml.retrain]]`` entry: retrain a scanner's model on a cron schedule and keep
    the new one only if it beats the current one out of sample (recorded either way)."""

    scanner: str
    # Standard 5-field crontab, UTC: Sundays at 03:00.
    schedule: str = "0 3 * * 0"
    model: Literal["gbm", "logistic"] = "gbm"
    # The labelled signals of the last `days` days; the newest `holdout_pct` % of them
    # judge the new model against the current one.
    days: int = 180
    holdout_pct: float = 25.0
    folds: int = 4
    enabled: bool = True


class MlConfig(_Section):
    retrain: list[RetrainConfig] = msgspec.field(default_factory=list)


class DaemonConfig(_Section):
    start_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"


class DataConfig(_Section):
    # FX, metals and CFDs close for the weekend between these UTC week times.
    fx_week_close: str = "Fri 22:00"
    fx_week_open: str = "Sun 22:00"
    # Market hours by instrument or kind: "24x7", "fx", "nyse", "nasdaq", "lse",
    # "xetra" or "tse", e.g. {"OANDA:SPX500_USD" = "nyse", "crypto" = "24x7"}.
    sessions: dict[str, str] = msgspec.field(default_factory=dict)


class SymbolsConfig(_Section):
    # Feeds' instrument lists are cached in the store and refreshed after this long.
    ttl_hours: float = 24.0


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str = "sptrader.log"
    max_bytes: int = 5_000_000
    backups: int = 3


class ShadowConfig(_Section):
    """One ``[[scanners.shadow]]`` entry: a parameter variation evaluated beside the live
    parameters at each run, its hypothetical signals and outcomes recorded
    (sptrader.scanners.shadow)."""

    # Unique within its scanner ("live" stands for the scanner's own parameters).
    name: str
    # Merged over the scanner's params.
    params: dict[str, object] = msgspec.field(default_factory=dict)


class ScannerConfig(_Section):
    """One ``[[scanners]]`` entry: a strategy run on a cron schedule over instruments."""

    name: str
    strategy: str
    params: dict[str, object] = msgspec.field(default_factory=dict)
    instruments: list[str] = msgspec.field(default_factory=list)
    timeframe: str = "1m"
    # Standard 5-field crontab (minute hour day month weekday), UTC.
    schedule: str = "* * * * *"
    # Where the signals become orders: "paper", a live venue ("binance", "oanda", "ibkr",
    # "alpaca"; its [brokers.NAME] trading = "live"), or "" for signals only.
    broker: str = ""
    # The older spelling of broker = "paper" (kept so existing configs load).
    paper: bool = False
    # The window: this many closed bars of `timeframe`, newest last.
    bars: int = 200
    enabled: bool = True
    # Shadow testing: variations of `params`, and how a shadow signal's outcome is
    # judged: its target, its stop, or a timeout after `shadow_bars` bars of `timeframe`;
    # a signal without its own stop / target gets one this far from its entry.
    shadow: list[ShadowConfig] = msgspec.field(default_factory=list)
    shadow_bars: int = 60
    shadow_target_pct: float = 1.0
    shadow_stop_pct: float = 0.5
    # Outcome labels of every signal (`sptrader ml labels`): target, stop or a timeout
    # after `label_bars` bars; the percentages stand in for a signal without its own.
    label_bars: int = 60
    label_target_pct: float = 1.0
    label_stop_pct: float = 0.5
    # A model in front of the orders (`sptrader ml train`): "SCANNER" (its newest
    # version) or "SCANNER@vN"; only signals it scores at `min_probability` or more go on.
    model: str = ""
    min_probability: float = 0.6
    # An LLM's verdict on each signal ([llm]): a prompt template (a path, relative to
    # the home), and what a failed call means for the signal: "skip" it or "take" it.
    llm_prompt: str = ""
    llm_on_error: Literal["skip", "take"] = "skip"

    @property
    def order_venue(self) -> str:
        """Where this scanner's signals are traded ("" for nowhere)."""
        return self.broker or ("paper" if self.paper else "")


class StrategiesConfig(_Section):
    # User strategy modules: "pkg.mod" (its Strategy subclasses) or "pkg.mod:Class".
    modules: list[str] = msgspec.field(default_factory=list)


class WebhookConfig(_Section):
    url: str
    format: Literal["slack", "discord", "ntfy", "json"] = "json"


RULE_KINDS = (
    "price_cross",  # the price crosses `level` (either way)
    "price_move",  # the price moves `pct` % within `window_s`
    "pnl",  # day P&L (scope "day") or a position's P&L ("position") crosses `threshold`
    "order",  # an order is filled, rejected, or its stop-loss / take-profit hit (`events`)
    "halt",  # a venue halts (the kill switch, the daily loss limit, stale data)
    "feed",  # a feed is stale or failed for longer than `after_s`
    "gap",  # a data gap is detected (trades lost in a stream, a backfill that failed)
    "daemon",  # the daemon started, restarted or is stopping
    "signal",  # a scanner's signal
)
CHANNELS = ("tui", "webhooks", "telegram", "desktop")


class AlertRuleConfig(_Section):
    """One ``[[alerts.rules]]`` entry (sptrader.alerting.rules)."""

    name: str
    kind: str
    instrument: str = ""  # price rules; pnl with scope "position"; "" = any (order, gap)
    level: float = 0.0  # price_cross
    pct: float = 0.0  # price_move
    window_s: float = 300.0  # price_move
    threshold: float = 0.0  # pnl: fires when the P&L crosses it (e.g. -500 or 1000)
    scope: Literal["day", "position"] = "day"  # pnl
    venue: str = ""  # pnl, order, halt: "" = every venue
    events: list[str] = msgspec.field(
        default_factory=lambda: ["filled", "rejected", "stop", "target"]
    )
    after_s: float = 60.0  # feed
    scanner: str = ""  # signal: "" = every scanner
    channels: list[str] = msgspec.field(default_factory=lambda: ["tui", "webhooks"])
    # At most one notice per this many seconds (a flapping price sends one, not fifty).
    cooldown_s: float = 300.0
    enabled: bool = True


class AlertsConfig(_Section):
    # Send every signal to the webhooks (false: record only).
    notify: bool = True
    webhooks: list[WebhookConfig] = msgspec.field(default_factory=list)
    retries: int = 3
    timeout_s: float = 10.0
    rules: list[AlertRuleConfig] = msgspec.field(default_factory=list)


class ReportConfig(_Section):
    """One ``[[reports]]`` entry (sptrader.alerting.reports): a report on a schedule."""

    name: str
    # briefing: all of it, the watchlist's overnight moves and the [llm]'s summary.
    kind: Literal["health", "pnl", "all", "briefing"] = "all"
    # Standard 5-field crontab (minute hour day month weekday), UTC: twice a day.
    schedule: str = "0 8,20 * * *"
    channels: list[str] = msgspec.field(default_factory=lambda: ["webhooks"])
    enabled: bool = True


class TelegramConfig(_Section):
    """The Telegram bot (sptrader.alerting.telegram): alerts out, commands in."""

    enabled: bool = False
    # Requests go to {api_url}/bot{token}/METHOD; the token comes from token_env only.
    api_url: str = "https://api.telegram.org"
    token_env: str = "TELEGRAM_BOT_TOKEN"
    # Only these chats are answered (and sent alerts); anyone else gets nothing, logged.
    chat_ids: list[int] = msgspec.field(default_factory=list)
    # getUpdates long poll.
    poll_timeout_s: float = 30.0


DEFAULT_WATCHLIST = [
    "SIM:EURUSD",
    "SIM:GBPUSD",
    "SIM:USDJPY",
    "SIM:XAUUSD",
    "SIM:BTCUSD",
    "SIM:ETHUSD",
    "SIM:SPY",
    "SIM:AAPL",
]


class BrokerConfig(_Section):
    """The paper broker (sptrader.broker)."""

    enabled: bool = True
    starting_cash: float = 100_000.0
    currency: str = "USD"
    # Market and stop fills move this much against the trader (limits fill at their price).
    slippage_bps: float = 1.0
    fee_bps: float = 0.0
    fee_per_unit: float = 0.0
    # Size of a scanner's order when its signal has no stop to size from (in money).
    signal_notional: float = 10_000.0
    # A fill takes at most this share of the bar's volume (backtest) or of the size at
    # the quote's touch (paper); the rest stays working (sptrader.broker.realism). 0: off.
    max_volume_share: float = 0.0
    # Backtest: a signal's order reaches the market this many bars late (0: the next
    # bar's open; N: the open of bar t+1+N).
    latency_bars: int = 0
    # Paper: an order placed by a trader or a scanner fills only on quotes at least this
    # much newer than its placing (0: the quote at hand).
    latency_ms: float = 0.0


class RiskConfig(_Section):
    """Limits every entry passes (0 = no limit); see sptrader.broker.risk."""

    max_open_positions: int = 0
    max_position_notional: float = 0.0
    max_total_notional: float = 0.0
    # Open positions' notional at most this many times equity (a paper account has no
    # margin call; this stops a typo'd quantity from betting the account 1000x over).
    max_leverage: float = 10.0
    # Sizing by risk: equity % lost if the stop is hit; also the cap for orders with a stop.
    risk_per_trade_pct: float = 1.0
    # Day P&L (money) at which new entries stop until 00:00 UTC.
    daily_loss_limit: float = 0.0
    # Largest position (units) per instrument, e.g. {"SIM:EURUSD" = 100000}.
    max_qty: dict[str, float] = msgspec.field(default_factory=dict)


class _VenueSection(_Section):
    """A ``[brokers.NAME]`` section: live order routing to one venue (sptrader.venues).
    Off until ``trading = "live"``; every URL is configuration and the defaults are the
    venue's testnet or paper environment; secrets are read only from the environment
    variables named here, never from this file."""

    trading: Literal["off", "live"] = "off"
    # One request's time-out; past it the order's fate is asked of the venue, never resent.
    timeout_s: float = 10.0

    @property
    def live(self) -> bool:
        return self.trading == "live"


class BinanceBrokerConfig(_VenueSection):
    rest_url: str = "https://testnet.binance.vision"
    # The WebSocket API (the user data stream: userDataStream.subscribe.signature).
    ws_url: str = "wss://ws-api.testnet.binance.vision/ws-api/v3"
    key_env: str = "BINANCE_API_KEY"
    secret_env: str = "BINANCE_API_SECRET"
    recv_window_ms: int = 5000


class OandaBrokerConfig(_VenueSection):
    rest_url: str = "https://api-fxpractice.oanda.com"
    stream_url: str = "https://stream-fxpractice.oanda.com"
    token_env: str = "OANDA_TOKEN"
    account_id: str = ""


class IbkrBrokerConfig(_VenueSection):
    # The Client Portal Web API gateway; its self-signed certificate is accepted only
    # when this URL's host is the local machine.
    gateway_url: str = "https://localhost:5000/v1/api"
    account_id: str = ""
    # The gateway logs out an idle session: /tickle this often.
    tickle_s: float = 55.0


class AlpacaBrokerConfig(_VenueSection):
    rest_url: str = "https://paper-api.alpaca.markets"
    # trade_updates (order events) of the trading API.
    stream_url: str = "wss://paper-api.alpaca.markets/stream"
    key_env: str = "APCA_API_KEY_ID"
    secret_env: str = "APCA_API_SECRET_KEY"


class BrokersConfig(_Section):
    """Every venue that can route live orders, the one table of them (VENUES follows)."""

    binance: BinanceBrokerConfig = msgspec.field(default_factory=BinanceBrokerConfig)
    oanda: OandaBrokerConfig = msgspec.field(default_factory=OandaBrokerConfig)
    ibkr: IbkrBrokerConfig = msgspec.field(default_factory=IbkrBrokerConfig)
    alpaca: AlpacaBrokerConfig = msgspec.field(default_factory=AlpacaBrokerConfig)


class Config(_Section):
    watchlist: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_WATCHLIST))
    feeds: FeedsConfig = msgspec.field(default_factory=FeedsConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    chart: ChartConfig = msgspec.field(default_factory=ChartConfig)
    ui: UiConfig = msgspec.field(default_factory=UiConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    lake: LakeConfig = msgspec.field(default_factory=LakeConfig)
    llm: LlmConfig = msgspec.field(default_factory=LlmConfig)
    ml: MlConfig = msgspec.field(default_factory=MlConfig)
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    symbols: SymbolsConfig = msgspec.field(default_factory=SymbolsConfig)
    data: DataConfig = msgspec.field(default_factory=DataConfig)
    keymap: dict[str, str] = msgspec.field(default_factory=dict)
    scanners: list[ScannerConfig] = msgspec.field(default_factory=list)
    strategies: StrategiesConfig = msgspec.field(default_factory=StrategiesConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    brokers: BrokersConfig = msgspec.field(default_factory=BrokersConfig)
    telegram: TelegramConfig = msgspec.field(default_factory=TelegramConfig)
    reports: list[ReportConfig] = msgspec.field(default_factory=list)


# Feed prefixes, in the order of their sections (messages list them so).
KNOWN_FEEDS = tuple(field.name.upper() for field in msgspec.structs.fields(FeedsConfig))
# Feeds with a live stream: their instruments can be watched. Dukascopy is history only.
LIVE_FEEDS = tuple(
    field.name.upper() for field in msgspec.structs.fields(FeedsConfig) if field.type.live
)

# Ids of the TUI's key bindings that [keymap] may remap (kept here, free of textual, so
# the config can reject a misspelt id; a test checks the app defines exactly these).
BINDING_IDS = (
    "quit",
    "help",
    "focus-watchlist",
    "focus-chart",
    "focus-services",
    "focus-events",
    *(f"timeframe-{timeframe}" for timeframe in TIMEFRAMES),
    "service-start",
    "service-stop",
    "service-restart",
    "search-symbols",
    "watchlist-remove",
    "chart-back",
    "chart-forward",
    "chart-oldest",
    "chart-live",
    "chart-ma",
    "chart-bands",
    "chart-rsi",
    "chart-macd",
    "chart-clear-signal",
    "data-screen",
    "data-close",
    "data-fill",
    "data-shorter",
    "data-longer",
    "strategies-screen",
    "strategies-close",
    "strategies-run",
    "strategies-pause",
    "order-buy",
    "order-sell",
    "halt",
    "focus-positions",
    "focus-orders",
    "position-close",
    "order-cancel",
    "ticket-close",
    "journal-screen",
    "journal-close",
    "journal-note",
    "journal-equity",
    "alerts-screen",
    "backtest-screen",
    "backtest-run",
    "backtest-cancel",
    "backtest-chart",
    "backtest-close",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs to know about where it runs."""

    home: Path
    config_path: Path | None
    config: Config

    @property
    def store_path(self) -> Path:
        path = Path(self.config.store.path).expanduser()
        return path if path.is_absolute() else self.home / path

    @property
    def log_path(self) -> Path:
        path = Path(self.config.log.file).expanduser()
        return path if path.is_absolute() else self.home / path


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``--home``, else ``SPTRADER_HOME``, else the platform's user data dir."""
    if home:
        return Path(home).expanduser().resolve()
    if os.environ.get("SPTRADER_HOME"):
        return Path(os.environ["SPTRADER_HOME"]).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("sptrader", appauthor=False))


def prepare_home(settings: Settings) -> None:
    """Create the home as a private directory (0700), or check that it is a directory;
    an existing home, and the files SPtrader keeps (the store and its WAL, the logs,
    state files, wherever the config puts them), lose any group or other permission.

    New files are private through the process umask (``cli.main``); this tightens what
    an older version, or another umask, left readable."""
    home = settings.home
    where = "(--home or SPTRADER_HOME)"
    if home.exists() and not home.is_dir():
        raise UsageError(f"the home {home} is not a directory {where}")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the home {home}: {error.strerror} {where}") from None
    _make_private(home)
    with os.scandir(home) as entries:
        files = [Path(entry.path) for entry in entries if entry.is_file(follow_symlinks=False)]
    for path in (settings.store_path, settings.log_path):
        files += [path, *path.parent.glob(f"{glob_escape(path.name)}.*")]
    for path in files:
        _make_private(path)


def home_is_writable(home: Path) -> bool:
    """Whether a file can be created in the home (tried, then removed: permission bits
    say nothing to root, nor on a read-only file system)."""
    import tempfile

    try:
        descriptor, probe = tempfile.mkstemp(prefix=".sptrader-probe-", dir=home)
    except OSError:
        return False
    os.close(descriptor)
    os.unlink(probe)
    return True


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _make_private(path: Path) -> None:
    """Drop group and other permissions of ``path`` (not followed if a symlink), if this
    user owns it; anything else is left as it is."""
    try:
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and not stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid():
            os.chmod(path, mode & 0o700)
    except OSError:
        pass


def resolve_config_path(home: Path, config: str | os.PathLike[str] | None = None) -> Path | None:
    """``--config``, else ``SPTRADER_CONFIG``, else ``./config.toml``, else the home's."""
    for explicit in (config, os.environ.get("SPTRADER_CONFIG")):
        if explicit:
            path = Path(explicit).expanduser()
            if not path.is_file():
                raise ConfigError(f"{path}: config file not found")
            return path
    for candidate in (Path.cwd() / "config.toml", home / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


_PATH_RE = re.compile(r" - at `\$\.?(.*)`$")


def _describe_decode_error(error: msgspec.ValidationError) -> str:
    """Turn msgspec's message into ``key.path: problem`` with TOML-style key paths."""
    text = str(error)
    match = _PATH_RE.search(text)
    key_path = ""
    if match:
        key_path = re.sub(r"\[(\d+)\]", r"[\1]", match.group(1))
        text = text[: match.start()]
    unknown = re.match(r"Object contains unknown field `(.+)`", text)
    if unknown:
        full = f"{key_path}.{unknown.group(1)}" if key_path else unknown.group(1)
        return f"{full}: unknown key"
    text = text.replace("Expected", "expected").replace("`", "")
    return f"{key_path}: {text}" if key_path else text


def parse_config(data: dict, source: str) -> Config:
    """Decode and validate a TOML table; raise ConfigError naming ``source`` and the key."""
    try:
        config = msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{source}: {_describe_decode_error(error)}") from None
    problem = _validate(config)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return config


# The CLI knows the venues' names without importing this module (venue_names.py): they
# must be BrokersConfig's fields, in order, after "paper".
if ("paper", *BrokersConfig.__struct_fields__) != VENUES:
    raise RuntimeError("sptrader.venue_names.VENUES and config.BrokersConfig disagree")


def _validate(config: Config) -> str | None:
    """Checks msgspec's types cannot express; returns ``key.path: problem`` or None."""
    enabled = {feed: feed_config(config, feed).enabled for feed in KNOWN_FEEDS}
    if not config.watchlist:
        return "watchlist: must name at least one instrument"
    for index, name in enumerate(config.watchlist):
        match = INSTRUMENT_RE.match(name)
        if not match:
            return f"watchlist[{index}]: bad instrument {name!r} (expected FEED:SYMBOL in capitals, e.g. SIM:EURUSD)"
        feed = match.group(1)
        if feed not in KNOWN_FEEDS:
            return f"watchlist[{index}]: unknown feed {feed!r} in {name!r} (known: {', '.join(KNOWN_FEEDS)})"
        if feed not in LIVE_FEEDS:
            return f"watchlist[{index}]: {feed} has history only, no live stream (use `sptrader backfill {name}`)"
        if not enabled[feed]:
            return f"watchlist[{index}]: {name!r} needs feeds.{feed.lower()}.enabled = true"
        if feed == "REPLAY" and not INSTRUMENT_RE.match(match.group(2)):
            return f"watchlist[{index}]: replay instruments are REPLAY:FEED:SYMBOL, got {name!r}"
    if len(set(config.watchlist)) != len(config.watchlist):
        return "watchlist: an instrument is listed twice"
    for index, timeframe in enumerate(config.chart.timeframes):
        problem = timeframe_problem(timeframe)
        if problem:
            return f"chart.timeframes[{index}]: {problem}"
        if timeframe in config.chart.timeframes[:index]:
            return f"chart.timeframes[{index}]: {timeframe!r} is listed twice"
    if config.chart.default_timeframe not in config.chart.timeframes:
        return f"chart.default_timeframe: {config.chart.default_timeframe!r} is not in chart.timeframes"
    for index, name in enumerate(config.store.keep_ticks):
        if name != "*" and not INSTRUMENT_RE.match(name):
            return f'store.keep_ticks[{index}]: bad instrument {name!r} (or "*" for all)'
    positive = {
        "feeds.sim.tick_rate": config.feeds.sim.tick_rate,
        "feeds.sim.publish_interval_ms": config.feeds.sim.publish_interval_ms,
        "feeds.replay.speed": config.feeds.replay.speed,
        "feeds.binance.max_connection_s": config.feeds.binance.max_connection_s,
        "feeds.dukascopy.max_concurrency": config.feeds.dukascopy.max_concurrency,
        **{
            f"feeds.{name}.{key}": getattr(getattr(config.feeds, name), key)
            for name in FeedsConfig.__struct_fields__
            if isinstance(getattr(config.feeds, name), LiveFeedConfig)
            for key in ("stale_after_s", "watchdog_s", "max_concurrency")
        },
        "store.flush_interval_ms": config.store.flush_interval_ms,
        "store.flush_rows": config.store.flush_rows,
        "store.seed_days": config.store.seed_days,
        "symbols.ttl_hours": config.symbols.ttl_hours,
        "store.writer_queue": config.store.writer_queue,
        "chart.bars": config.chart.bars,
        "ui.refresh_hz": config.ui.refresh_hz,
        "ui.chart_refresh_hz": config.ui.chart_refresh_hz,
        "ui.sparkline_points": config.ui.sparkline_points,
        "ui.event_queue": config.ui.event_queue,
        "supervisor.backoff_initial_s": config.supervisor.backoff_initial_s,
        "supervisor.backoff_max_s": config.supervisor.backoff_max_s,
        "log.max_bytes": config.log.max_bytes,
        "api.client_queue": config.api.client_queue,
        "daemon.start_timeout_s": config.daemon.start_timeout_s,
        "daemon.stop_timeout_s": config.daemon.stop_timeout_s,
        "nats.bars_max_age_days": config.nats.bars_max_age_days,
        "nats.ticks_max_age_hours": config.nats.ticks_max_age_hours,
        "nats.replicas": config.nats.replicas,
        "nats.duplicate_window_s": config.nats.duplicate_window_s,
        "nats.heartbeat_s": config.nats.heartbeat_s,
        "nats.fetch_batch": config.nats.fetch_batch,
        "lake.flush_interval_s": config.lake.flush_interval_s,
        "llm.timeout_s": config.llm.timeout_s,
        "llm.max_tokens": config.llm.max_tokens,
    }
    for key, value in positive.items():
        if value <= 0:
            return f"{key}: must be greater than 0, got {value}"
    for key, port in (
        ("api.tcp_port", config.api.tcp_port),
        ("daemon.metrics_port", config.daemon.metrics_port),
    ):
        if not 0 <= port <= 65535:
            return f"{key}: must be a port number (0 = off), got {port}"
    problem = _validate_cluster(config)
    if problem:
        return problem
    for binding_id in config.keymap:
        if binding_id not in BINDING_IDS:
            return f"keymap.{binding_id}: unknown binding id (known: {', '.join(BINDING_IDS)})"
    from sptrader.sessions import SESSIONS, parse_week_time

    for key in ("fx_week_close", "fx_week_open"):
        try:
            parse_week_time(getattr(config.data, key), f"data.{key}")
        except ConfigError as error:
            return str(error)
    for name, session in config.data.sessions.items():
        if session not in SESSIONS:
            return (
                f"data.sessions.{name}: unknown session {session!r} (known: {', '.join(SESSIONS)})"
            )
    if not config.store.ticks_retention_days >= 0:  # NaN too
        return f"store.ticks_retention_days: must be 0 (keep forever) or more, got {config.store.ticks_retention_days}"
    if config.supervisor.backoff_factor < 1:
        return "supervisor.backoff_factor: must be at least 1"
    if not 0 <= config.supervisor.backoff_jitter < 1:
        return "supervisor.backoff_jitter: must be in [0, 1)"
    if config.feeds.replay.start:
        from sptrader.clock import parse_time
        from sptrader.errors import UsageError

        try:
            parse_time(config.feeds.replay.start)
        except UsageError as error:
            return f"feeds.replay.start: {error}"
    return (
        _validate_broker(config)
        or _validate_brokers(config)
        or _validate_scanners(config)
        or _validate_retrain(config)
    )


def _validate_cluster(config: Config) -> str | None:
    """[nats], [lake] and [api] url: the parts that cross hosts."""
    urls = [config.nats.url] if isinstance(config.nats.url, str) else config.nats.url
    if not urls:
        return "nats.url: must name at least one server"
    for url in urls:
        if not url.startswith(("nats://", "tls://")):
            return f"nats.url: {url!r} is not a nats:// or tls:// URL"
    if not config.nats.stream_prefix.replace("_", "").replace("-", "").isalnum():
        return f"nats.stream_prefix: {config.nats.stream_prefix!r} must be letters, digits, - or _"
    if config.api.url and not config.api.url.startswith(("ws://", "wss://")):
        return f"api.url: {config.api.url!r} is not a ws:// or wss:// URL (the writer's tcp_port)"
    if config.lake.compact_every_h < 0:
        return f"lake.compact_every_h: must be 0 (never) or more, got {config.lake.compact_every_h}"
    return None


def _validate_broker(config: Config) -> str | None:
    """[broker] and [risk]: money and limits are numbers of the right sign."""
    if not config.broker.starting_cash > 0:
        return f"broker.starting_cash: must be greater than 0, got {config.broker.starting_cash}"
    if not config.broker.signal_notional > 0:
        return (
            f"broker.signal_notional: must be greater than 0, got {config.broker.signal_notional}"
        )
    for key in ("slippage_bps", "fee_bps", "fee_per_unit", "latency_bars", "latency_ms"):
        value = getattr(config.broker, key)
        if not value >= 0:
            return f"broker.{key}: must be 0 or more, got {value}"
    share = config.broker.max_volume_share
    if not 0 <= share <= 1:
        return f"broker.max_volume_share: a share from 0 (off) to 1, got {share}"
    for key in (
        "max_open_positions",
        "max_position_notional",
        "max_total_notional",
        "max_leverage",
        "risk_per_trade_pct",
        "daily_loss_limit",
    ):
        value = getattr(config.risk, key)
        if not value >= 0:
            return f"risk.{key}: must be 0 (no limit) or more, got {value}"
    if config.risk.risk_per_trade_pct > 100:
        return f"risk.risk_per_trade_pct: a percentage of at most 100, got {config.risk.risk_per_trade_pct}"
    for name, qty in config.risk.max_qty.items():
        if not INSTRUMENT_RE.match(name):
            return f"risk.max_qty.{name}: bad instrument (expected FEED:SYMBOL)"
        if not qty > 0:
            return f"risk.max_qty.{name}: must be greater than 0, got {qty}"
    return None


def _validate_brokers(config: Config) -> str | None:
    """[brokers.NAME]: URLs are URLs, time-outs positive, OANDA names its account (IBKR's is
    the gateway's first when not named)."""
    for name in BrokersConfig.__struct_fields__:
        section = getattr(config.brokers, name)
        for key in ("rest_url", "ws_url", "stream_url", "gateway_url"):
            url = getattr(section, key, None)
            if url is not None and not url.startswith(("http://", "https://", "ws://", "wss://")):
                return f"brokers.{name}.{key}: must be an http(s) or ws(s) URL, got {url!r}"
        if not section.timeout_s > 0:
            return f"brokers.{name}.timeout_s: must be greater than 0, got {section.timeout_s}"
        if section.live and name == "oanda" and not section.account_id:
            return f"brokers.{name}.account_id: trading live needs the account id"
    return None


def _validate_alert_rules(config: Config) -> str | None:
    """[[alerts.rules]] and [[reports]]: known kinds and channels, what each kind needs."""
    seen: set[str] = set()
    for index, rule in enumerate(config.alerts.rules):
        key = f"alerts.rules[{index}]"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", rule.name):
            return f"{key}.name: use letters, digits, '_', '-' or '.', got {rule.name!r}"
        if rule.name in seen:
            return f"{key}.name: {rule.name!r} is used by another rule"
        seen.add(rule.name)
        if rule.kind not in RULE_KINDS:
            return f"{key}.kind: unknown kind {rule.kind!r} (use {', '.join(RULE_KINDS)})"
        for channel in rule.channels:
            if channel not in CHANNELS:
                return f"{key}.channels: unknown channel {channel!r} (use {', '.join(CHANNELS)})"
        if rule.instrument and not INSTRUMENT_RE.match(rule.instrument):
            return f"{key}.instrument: bad instrument {rule.instrument!r} (expected FEED:SYMBOL)"
        if rule.kind in ("price_cross", "price_move") and not rule.instrument:
            return f"{key}.instrument: a {rule.kind} rule watches one instrument"
        if rule.kind == "price_cross" and not rule.level > 0:
            return f"{key}.level: the price level must be greater than 0, got {rule.level}"
        if rule.kind == "price_move" and not (rule.pct > 0 and rule.window_s > 0):
            return f"{key}: a price_move rule needs pct > 0 and window_s > 0"
        if rule.kind == "pnl" and rule.threshold == 0:
            return f"{key}.threshold: a pnl rule needs a threshold (e.g. -500 or 1000)"
        unknown = sorted(set(rule.events) - {"filled", "rejected", "stop", "target"})
        if rule.kind == "order" and unknown:
            return (
                f"{key}.events: unknown {', '.join(unknown)} (use filled, rejected, stop, target)"
            )
        if rule.venue and rule.venue not in VENUES:
            return f"{key}.venue: unknown venue {rule.venue!r} (use {', '.join(VENUES)})"
        if rule.cooldown_s < 0:
            return f"{key}.cooldown_s: must be 0 or more, got {rule.cooldown_s}"
    from apscheduler.triggers.cron import CronTrigger

    for index, report in enumerate(config.reports):
        key = f"reports[{index}]"
        try:
            CronTrigger.from_crontab(report.schedule, timezone="UTC")
        except ValueError as error:
            return f"{key}.schedule: bad cron expression {report.schedule!r} ({error})"
        for channel in report.channels:
            if channel not in CHANNELS:
                return f"{key}.channels: unknown channel {channel!r} (use {', '.join(CHANNELS)})"
    return None


def _cron_problem(schedule: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(schedule, timezone="UTC")
    except ValueError as error:
        return f"bad cron expression {schedule!r} ({error}; expected 5 fields: minute hour day month weekday)"
    return None


def _validate_retrain(config: Config) -> str | None:
    names = [scanner.name for scanner in config.scanners]
    for index, entry in enumerate(config.ml.retrain):
        key = f"ml.retrain[{index}]"
        if entry.scanner not in names:
            known = ", ".join(names) or "none configured"
            return f"{key}.scanner: unknown scanner {entry.scanner!r} (scanners: {known})"
        problem = _cron_problem(entry.schedule)
        if problem:
            return f"{key}.schedule: {problem}"
        if entry.days <= 0:
            return f"{key}.days: must be greater than 0, got {entry.days}"
        if entry.folds < 2:
            return f"{key}.folds: must be at least 2, got {entry.folds}"
        if not 0 < entry.holdout_pct < 100:
            return f"{key}.holdout_pct: must be above 0 and below 100, got {entry.holdout_pct}"
    return None


def alert_rule_problem(rule: AlertRuleConfig) -> str | None:
    """What is wrong with one rule added at run time (the config's own checks), or None."""
    problem = _validate_alert_rules(Config(alerts=AlertsConfig(rules=[rule])))
    return None if problem is None else problem.replace("alerts.rules[0]", f"rule {rule.name}")


def _validate_scanners(config: Config) -> str | None:
    """[[scanners]], [strategies] and [alerts]. A strategy that is not built in may come
    from a user module, which is only imported when the scanner starts."""
    for index, spec in enumerate(config.strategies.modules):
        module, _, cls = spec.partition(":")
        if not re.fullmatch(r"[A-Za-z_][\w.]*", module) or (":" in spec and not cls.isidentifier()):
            return f'strategies.modules[{index}]: bad module {spec!r} (expected "pkg.mod" or "pkg.mod:Class")'
    for index, hook in enumerate(config.alerts.webhooks):
        if not hook.url.startswith(("http://", "https://")):
            return f"alerts.webhooks[{index}].url: must be an http(s) URL, got {hook.url!r}"
    if config.alerts.retries < 0:
        return f"alerts.retries: must be 0 or more, got {config.alerts.retries}"
    if not config.alerts.timeout_s > 0:
        return f"alerts.timeout_s: must be greater than 0, got {config.alerts.timeout_s}"
    problem = _validate_alert_rules(config)
    if problem:
        return problem
    if not config.scanners:
        return None

    from sptrader.strategies import registry

    seen: set[str] = set()
    for index, scanner in enumerate(config.scanners):
        key = f"scanners[{index}]"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", scanner.name):
            return f"{key}.name: use letters, digits, '_', '-' or '.', got {scanner.name!r}"
        if scanner.name in seen:
            return f"{key}.name: {scanner.name!r} is used by another scanner"
        seen.add(scanner.name)
        if not scanner.instruments:
            return f"{key}.instruments: must name at least one instrument"
        for position, name in enumerate(scanner.instruments):
            if not INSTRUMENT_RE.match(name):
                return f"{key}.instruments[{position}]: bad instrument {name!r} (expected FEED:SYMBOL, e.g. SIM:EURUSD)"
        problem = timeframe_problem(scanner.timeframe)
        if problem:
            return f"{key}.timeframe: {problem}"
        problem = _cron_problem(scanner.schedule)
        if problem:
            return f"{key}.schedule: {problem}"
        if scanner.bars <= 0:
            return f"{key}.bars: must be greater than 0, got {scanner.bars}"
        venue = scanner.order_venue
        if venue and venue not in VENUES:
            return f'{key}.broker: unknown broker {venue!r} (use {", ".join(VENUES)} or "" for signals only)'
        if scanner.broker and scanner.paper and scanner.broker != "paper":
            return (
                f"{key}: paper = true and broker = {scanner.broker!r} disagree (keep broker only)"
            )
        if venue not in ("", "paper") and not getattr(config.brokers, venue).live:
            return f'{key}.broker: {venue} does not trade live ([brokers.{venue}] trading = "live" to route its orders there)'
        problem = _shadow_problem(scanner, key)
        if problem:
            return problem
        if scanner.llm_prompt and not config.llm.enabled:
            return f"{key}.llm_prompt: needs [llm] enabled = true (and its base_url and model)"
        if scanner.strategy in registry.builtin_names() or scanner.strategy in registry.names():
            try:
                registry.build(scanner.strategy, scanner.params)
            except registry.StrategyLoadError as error:
                return f"{key}.params: {error}"
            for position, variation in enumerate(scanner.shadow):
                try:
                    registry.build(scanner.strategy, {**scanner.params, **variation.params})
                except registry.StrategyLoadError as error:
                    return (
                        f"{key}.shadow[{position}].params: scanner {scanner.name!r}, variation"
                        f" {variation.name!r}: {error}"
                    )
        elif not config.strategies.modules:
            known = ", ".join(registry.builtin_names()) or "none yet"
            return (
                f"{key}.strategy: unknown strategy {scanner.strategy!r} (built in: {known};"
                " a strategy of your own needs its module in [strategies] modules)"
            )
    return None


def _shadow_problem(scanner: ScannerConfig, key: str) -> str | None:
    """What is wrong with a scanner's shadow settings (not its variations' params)."""
    for name in ("shadow_bars", "label_bars"):
        if getattr(scanner, name) <= 0:
            return f"{key}.{name}: must be greater than 0, got {getattr(scanner, name)}"
    if not 0 < scanner.min_probability < 1:
        return f"{key}.min_probability: must be above 0 and below 1, got {scanner.min_probability}"
    if scanner.model and not re.fullmatch(r"[A-Za-z0-9_.-]+(@v\d+)?", scanner.model):
        return f"{key}.model: a scanner's model name (NAME or NAME@vN), got {scanner.model!r}"
    for name in ("shadow_target_pct", "shadow_stop_pct", "label_target_pct", "label_stop_pct"):
        value = getattr(scanner, name)
        if not 0 < value < 100:
            return f"{key}.{name}: must be above 0 and below 100, got {value}"
    seen: set[str] = set()
    for position, variation in enumerate(scanner.shadow):
        where = f"{key}.shadow[{position}].name"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", variation.name):
            return f"{where}: use letters, digits, '_', '-' or '.', got {variation.name!r}"
        if variation.name == "live":
            return f"{where}: 'live' stands for the scanner's own params (choose another name)"
        if variation.name in seen:
            return f"{where}: {variation.name!r} is used by another variation of {scanner.name!r}"
        seen.add(variation.name)
    return None


def feed_config(config: Config, feed: str) -> msgspec.Struct:
    """The ``[feeds.NAME]`` section of feed prefix ``feed`` (e.g. ``BINANCE``)."""
    return getattr(config.feeds, feed.lower())


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return parse_config(data, str(path))


def load_settings(
    home: str | os.PathLike[str] | None = None, config: str | os.PathLike[str] | None = None
) -> Settings:
    resolved_home = resolve_home(home)
    config_path = resolve_config_path(resolved_home, config)
    return Settings(home=resolved_home, config_path=config_path, config=load_config(config_path))
