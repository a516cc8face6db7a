"""Technical indicators over a bars frame, vectorised in polars.

Input: a bars ``DataFrame`` of one instrument, oldest first, with the columns ``ts, open,
high, low, close, volume, trades``. :func:`add_indicators` returns it with one or more
columns added per spec (see :func:`parse_spec` for the forms and :data:`KNOWN_FORMS`).
With ``over="instrument"`` the frame may hold several instruments stacked (each one's
rows oldest first, e.g. sorted by instrument, ts): every window is then computed within
each instrument's rows, in one polars query, and the values are exactly those of
calling it on each instrument's rows alone.

Definitions follow TA-Lib's (default "compatibility" mode, unstable period 0), so after
the warm-up the values agree with TA-Lib to about 1e-12 (the tests compare against the
``ta-lib`` wheel when it is installed); warm-up rows are null:

- ``smaN``: simple mean of the last N closes; first value at row N-1.
- ``emaN``: alpha 2/(N+1), seeded with the SMA of the first N closes at row N-1.
- ``wmaN``: weights 1..N (newest heaviest); first value at row N-1.
- ``rsiN``: Wilder: gains/losses of close-to-close changes, averages seeded with the
  simple mean of the first N changes (row N), then ``avg = (avg*(N-1) + x)/N``;
  ``100*gain/(gain+loss)``, 0 when both are 0 (as TA-Lib). First value at row N.
- ``atrN``: true range from row 1 (row 0 has no previous close), Wilder-smoothed, seeded
  with the mean of the first N true ranges; first value at row N. (The true range is
  computed as max(high, prev close) - min(low, prev close): TA-Lib's to the bit on any
  bar with high >= low; on a malformed bar with low > prev close > high it is 0.)
- ``adxN``: TA-Lib ADX: +DM/-DM and TR from row 1, Wilder sums seeded with the sum of
  the first N-1 values (row N-1), DX from row N, ADX seeded with the mean of the first N
  DX values (row 2N-1) and Wilder-smoothed after; a row whose DX is undefined (no range
  at all) keeps the previous ADX, as TA-Lib does.
- ``macd`` (``macd_F_S_G``, default 12/26/9): TA-Lib MACD alignment: *both* EMAs start at
  row S-1 (slow-1), each seeded with the SMA of its own last F (resp. S) closes there
  (so the fast EMA is *not* the plain ``ema12``, which starts at row 11 and differs
  slightly for the first few hundred rows). ``macd = fast - slow`` from row S-1; the
  signal is an EMA(G) of it seeded with the SMA of its first G values. TA-Lib reports
  all three outputs only from row S+G-2 (33 for 12/26/9); so do we (earlier rows null).
- ``bbN`` (``bbN_K``, default K=2): middle SMA(N), upper/lower middle +/- K population
  standard deviations (ddof=0). First value at row N-1.
- ``stoch`` (``stoch_K_S_D``, default 14/3/3): TA-Lib STOCH with SMA slowing: fast %K
  ``100*(close-LL)/(HH-LL)`` over K bars (0 when HH==LL), ``stoch_k`` = SMA(S) of it,
  ``stoch_d`` = SMA(D) of ``stoch_k``; both from row K+S+D-3 (17) as in TA-Lib.
- ``donchianN``: highest high and lowest low of the last N bars, current bar included
  (TA-Lib MAX/MIN); first value at row N-1.
- ``vwap``: session VWAP, session = UTC day: cumulative typical price ((H+L+C)/3) times
  volume over cumulative volume since the day's first bar; null while the day's
  volume is still 0. No warm-up. (Not in TA-Lib.)

Missing input: NaN is treated as null. A row where an input the indicator needs is null
is *skipped*: the indicator is computed over the remaining rows as if that bar did not
exist (a window reaches one bar further back, a smoother carries its state over the
gap), and the skipped row gets null in that indicator's columns. One bad bar therefore
never poisons the rest of the series, and rows whose inputs are fine always have values
once the warm-up (counted in valid rows) is over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from sptrader.errors import UsageError

__all__ = [
    "KNOWN_FORMS",
    "Spec",
    "add_indicators",
    "lookback",
    "max_lookback",
    "parse_spec",
    "parse_specs",
    "warmup",
]

KNOWN_FORMS = (
    "smaN, emaN, wmaN, rsiN, atrN, adxN, donchianN (e.g. sma20, rsi14), "
    "macd or macd_FAST_SLOW_SIGNAL (default 12,26,9), bbN or bbN_K (e.g. bb20, bb20_2.5), "
    "stoch or stoch_K_SLOWK_SLOWD (default 14,3,3), vwap"
)

MAX_PERIOD = 100_000

# Which inputs each indicator reads (rows missing one of them are skipped).
_INPUTS = {
    "sma": ("close",),
    "ema": ("close",),
    "wma": ("close",),
    "rsi": ("close",),
    "macd": ("close",),
    "bb": ("close",),
    "atr": ("high", "low", "close"),
    "adx": ("high", "low", "close"),
    "stoch": ("high", "low", "close"),
    "donchian": ("high", "low"),
    "vwap": ("ts", "high", "low", "close", "volume"),
}

_PERIOD = re.compile(r"(sma|ema|wma|rsi|atr|adx|donchian)(\d+)")
_MACD = re.compile(r"macd(?:_(\d+)_(\d+)_(\d+))?")
_BB = re.compile(r"bb(\d+)(?:_(\d+(?:\.\d+)?))?")
_STOCH = re.compile(r"stoch(?:_(\d+)_(\d+)_(\d+))?")


@dataclass(frozen=True)
class Spec:
    """One parsed indicator spec: ``kind`` (sma, macd, ...), integer ``periods``, an
    optional float ``k`` (Bollinger width) and the output ``columns``."""

    text: str
    kind: str
    periods: tuple[int, ...]
    k: float | None
    columns: tuple[str, ...]


def _bad(spec: str, why: str = "unknown indicator") -> UsageError:
    return UsageError(f"{why}: {spec!r}; known forms: {KNOWN_FORMS}")


def _period(spec: str, value: str, least: int = 2) -> int:
    number = int(value)
    if not least <= number <= MAX_PERIOD:
        raise _bad(spec, f"period {number} out of range {least}..{MAX_PERIOD}")
    return number


def parse_spec(spec: str) -> Spec:
    """Parse one indicator spec (case-insensitive) or raise a UsageError naming the forms."""
    text = spec.strip().lower()
    if match := _PERIOD.fullmatch(text):
        kind = match.group(1)
        n = _period(spec, match.group(2))
        name = f"{kind}{n}"
        columns = (f"{name}_upper", f"{name}_lower") if kind == "donchian" else (name,)
        return Spec(name, kind, (n,), None, columns)
    if match := _MACD.fullmatch(text):
        if match.group(1) is None:
            fast, slow, signal, prefix = 12, 26, 9, "macd"
        else:
            fast, slow, signal = (_period(spec, g) for g in match.groups())
            if fast >= slow:
                raise _bad(spec, "MACD fast period must be shorter than the slow one")
            prefix = f"macd_{fast}_{slow}_{signal}"
        columns = (prefix, f"{prefix}_signal", f"{prefix}_hist")
        return Spec(prefix, "macd", (fast, slow, signal), None, columns)
    if match := _BB.fullmatch(text):
        n = _period(spec, match.group(1))
        k = 2.0 if match.group(2) is None else float(match.group(2))
        if not 0 < k <= 100:
            raise _bad(spec, f"Bollinger width {k:g} out of range (0, 100]")
        name = f"bb{n}" if match.group(2) is None else f"bb{n}_{match.group(2)}"
        columns = (f"{name}_upper", f"{name}_middle", f"{name}_lower")
        return Spec(name, "bb", (n,), k, columns)
    if match := _STOCH.fullmatch(text):
        if match.group(1) is None:
            periods, prefix = (14, 3, 3), "stoch"
        else:
            periods = (
                _period(spec, match.group(1)),
                _period(spec, match.group(2), least=1),
                _period(spec, match.group(3), least=1),
            )
            prefix = "stoch_{}_{}_{}".format(*periods)
        return Spec(prefix, "stoch", periods, None, (f"{prefix}_k", f"{prefix}_d"))
    if text == "vwap":
        return Spec("vwap", "vwap", (), None, ("vwap",))
    raise _bad(spec)


def parse_specs(text: str | list[str]) -> list[Spec]:
    """Comma-separated specs (or a list of them), duplicates dropped, order kept."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    specs: dict[str, Spec] = {}
    for part in parts:
        if not part.strip():
            continue
        spec = parse_spec(part)
        specs.setdefault(spec.text, spec)
    if not specs:
        raise _bad(str(text), "no indicator given")
    return list(specs.values())


def warmup(spec: str | Spec) -> int:
    """Rows before the first value (with no missing inputs)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    kind, p = parsed.kind, parsed.periods
    if kind in ("rsi", "atr"):
        return p[0]
    if kind == "adx":
        return 2 * p[0] - 1
    if kind == "macd":
        return p[1] + p[2] - 2
    if kind == "stoch":
        return p[0] + p[1] + p[2] - 3
    if kind == "vwap":
        return 0
    return p[0] - 1  # sma ema wma bb donchian


# --- expressions ------------------------------------------------------------------------
#
# Each indicator is built as stages of named intermediate columns (``_Stages.add``): a
# sub-expression used several times (a smoothed sum, the DI, the MACD line, ...) is then
# computed once and read back by name, instead of being rebuilt inside one big
# expression tree. The values are the same: the same operations in the same order.

_ROW = "__row"  # the row number (0-based) of the frame being computed


class _Stages:
    """Intermediate columns of one or more indicators, grouped in levels: a column goes
    one level after the deepest column it reads, so each level is one ``with_columns``.

    With ``over`` (a column naming each row's group, e.g. "instrument"), every column is
    computed within its group (``expr.over(over)``), as if each group were a frame of
    its own; an expression that groups itself (``grouped=True``) is taken as it is."""

    def __init__(self, tag: str, over: str | None = None) -> None:
        self.tag = tag
        self.over = over
        self.levels: list[list[pl.Expr]] = []
        self.level_of: dict[str, int] = {}

    def add(self, expr: pl.Expr, name: str | None = None, *, grouped: bool = False) -> pl.Expr:
        name = name or f"__{self.tag}_{len(self.level_of)}"
        level = 1 + max(
            (self.level_of.get(root, -1) for root in expr.meta.root_names()), default=-1
        )
        while len(self.levels) <= level:
            self.levels.append([])
        if self.over is not None and not grouped:
            expr = expr.over(self.over)
        self.levels[level].append(expr.alias(name))
        self.level_of[name] = level
        return pl.col(name)


def _index() -> pl.Expr:
    return pl.col(_ROW)


def _seeded_ewm(x: pl.Expr, seed: pl.Expr, at: int, alpha: float) -> pl.Expr:
    """The recursion ``m[t] = m[t-1] + alpha*(x[t] - m[t-1])`` started at row ``at`` with
    ``m[at] = seed`` (a scalar; null before). Null ``x`` after ``at`` keeps the state
    (the row itself is null).

    ewm_mean(adjust=False) of a series whose rows up to ``at`` are the seed: polars
    keeps the average as it is when the new value equals it, so the state is exactly
    the seed at row ``at``; the rows before are then masked. Filling them instead of
    leaving them null makes polars' ewm about 10% faster."""
    i = _index()
    series = pl.when(i <= at).then(seed).otherwise(x)
    return _after(series.ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True), at)


def _seed(x: pl.Expr, start: int, count: int, divisor: int) -> pl.Expr:
    """The sum of rows ``start .. start+count-1`` of ``x`` over ``divisor`` (a scalar):
    a seed needs these values, not a rolling mean over the whole series. Summed one by
    one (``cum_sum``, as TA-Lib does) and multiplied by the reciprocal before taking the
    scalar: within ``.over`` polars aggregates ``sum``/``mean`` with other kernels and
    divides a scalar differently (1 ulp off), and a stacked frame must give exactly the
    values of each instrument alone."""
    return (x.slice(start, count).cum_sum() * (1.0 / divisor)).last()


def _after(expr: pl.Expr, first: int) -> pl.Expr:
    """Null before row ``first``."""
    return pl.when(_index() >= first).then(expr)


def _sma(x: pl.Expr, n: int) -> pl.Expr:
    return x.rolling_mean(n)


def _ema(x: pl.Expr, n: int, at: int | None = None) -> pl.Expr:
    at = n - 1 if at is None else at
    return _seeded_ewm(x, _seed(x, at - n + 1, n, n), at, 2.0 / (n + 1))


def _wma(x: pl.Expr, n: int) -> pl.Expr:
    weights = [float(w) for w in range(1, n + 1)]
    return x.rolling_sum(n, weights=weights) / (n * (n + 1) / 2)


def _rsi(st: _Stages, close: pl.Expr, n: int) -> pl.Expr:
    change = st.add(close.diff())
    # when/then, not clip (2x slower); row 0 gets 0 instead of null, before any seed.
    gain = st.add(pl.when(change > 0.0).then(change).otherwise(0.0))
    loss = st.add(pl.when(change < 0.0).then(-change).otherwise(0.0))
    avg_gain = st.add(_seeded_ewm(gain, _seed(gain, 1, n, n), n, 1.0 / n))
    avg_loss = st.add(_seeded_ewm(loss, _seed(loss, 1, n, n), n, 1.0 / n))
    both = avg_gain + avg_loss
    # Null before row n (both is null there, and so is the ``otherwise``).
    return pl.when(both.abs() < 1e-14).then(0.0).otherwise(100.0 * avg_gain / both)


def _true_range() -> pl.Expr:
    """TA-Lib's true range, the largest of high-low, |high-prev close| and |low-prev
    close|, as ``max(high, prev close) - min(low, prev close)``: on any bar with
    high >= low that is the same subtraction, so the same float (rounding is monotonic),
    and it runs 3x faster than polars' three-way ``max_horizontal``. From row 1."""
    # The shift filled (row 0 is nulled after): polars' kernels on inputs without
    # nulls are about 2x faster.
    prev_close = pl.col("close").shift(1, fill_value=0.0)
    high = pl.max_horizontal(pl.col("high"), prev_close)
    low = pl.min_horizontal(pl.col("low"), prev_close)
    return (high - low).pipe(_after, 1)


def _atr(st: _Stages, n: int) -> pl.Expr:
    tr = st.add(_true_range())
    return _seeded_ewm(tr, _seed(tr, 1, n, n), n, 1.0 / n)


def _adx(st: _Stages, n: int) -> pl.Expr:
    high, low = pl.col("high"), pl.col("low")
    up = st.add(high - high.shift(1))
    down = st.add(low.shift(1) - low)
    minus_dm = st.add(pl.when((down > 0) & (up < down)).then(down).otherwise(0.0))
    plus_dm = st.add(pl.when((up > 0) & (up > down)).then(up).otherwise(0.0))
    tr = st.add(_true_range())

    # Wilder sums S[t] = S[t-1] - S[t-1]/n + x[t], seeded with the sum of x[1..n-1] at
    # row n-1, equal n times an ewm with alpha 1/n seeded with that sum / n. The DI are
    # ratios of two such sums, so the factor n cancels.
    def wilder_sum_over_n(x: pl.Expr) -> pl.Expr:
        return st.add(_seeded_ewm(x, _seed(x, 1, n - 1, n), n - 1, 1.0 / n))

    s_minus, s_plus, s_tr = (wilder_sum_over_n(x) for x in (minus_dm, plus_dm, tr))
    minus_di = st.add(100.0 * s_minus / s_tr)
    plus_di = st.add(100.0 * s_plus / s_tr)
    di_sum = st.add(minus_di + plus_di)
    defined = ((s_tr * n).abs() >= 1e-14) & (di_sum.abs() >= 1e-14)
    dx = st.add(pl.when(defined).then(100.0 * (minus_di - plus_di).abs() / di_sum))
    # The seed counts an undefined DX as 0; later an undefined DX keeps the ADX.
    seed = _seed(dx.fill_null(0.0), n, n, n)
    return _seeded_ewm(dx, seed, 2 * n - 1, 1.0 / n).forward_fill().pipe(_after, 2 * n - 1)


def _macd(st: _Stages, fast: int, slow: int, signal: int) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    close = pl.col("close")
    fast_ema = st.add(_ema(close, fast, at=slow - 1))
    slow_ema = st.add(_ema(close, slow, at=slow - 1))
    line = st.add(fast_ema - slow_ema)
    sig = st.add(_ema(line, signal, at=slow + signal - 2))
    first = slow + signal - 2
    return _after(line, first), sig, _after(line - sig, first)


def _bb(st: _Stages, n: int, k: float) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    close = pl.col("close")
    middle = st.add(close.rolling_mean(n))
    width = st.add(k * close.rolling_std(n, ddof=0))
    return middle + width, middle, middle - width


def _stoch(st: _Stages, fastk: int, slowk: int, slowd: int) -> tuple[pl.Expr, pl.Expr]:
    high_max = st.add(pl.col("high").rolling_max(fastk))
    low_min = st.add(pl.col("low").rolling_min(fastk))
    span = st.add(high_max - low_min)
    raw = st.add(
        pl.when(span == 0).then(0.0).otherwise((pl.col("close") - low_min) / (span / 100.0))
    )
    k = st.add(raw.rolling_mean(slowk))
    d = st.add(k.rolling_mean(slowd))
    first = fastk + slowk + slowd - 3
    return _after(k, first), _after(d, first)


def _vwap(ts_dtype: pl.DataType, over: str | None = None) -> pl.Expr:
    ts = pl.col("ts")
    if isinstance(ts_dtype, pl.Datetime) and ts_dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC")
    day = ts.dt.truncate("1d")
    session = [day] if over is None else [pl.col(over), day]
    typical = (pl.col("high") + pl.col("low") + pl.col("close")) / 3.0
    volume = pl.col("volume")
    cum_pv = (typical * volume).cum_sum().over(session)
    cum_v = volume.cum_sum().over(session)
    return pl.when(cum_v > 0).then(cum_pv / cum_v)


def _add_spec(st: _Stages, spec: Spec, schema: pl.Schema) -> None:
    """Add ``spec``'s output columns (and the intermediate ones they read) to ``st``."""
    kind, p = spec.kind, spec.periods
    close = pl.col("close")
    if kind == "sma":
        outputs: tuple[pl.Expr, ...] = (_sma(close, p[0]),)
    elif kind == "ema":
        outputs = (_ema(close, p[0]),)
    elif kind == "wma":
        outputs = (_wma(close, p[0]),)
    elif kind == "rsi":
        outputs = (_rsi(st, close, p[0]),)
    elif kind == "atr":
        outputs = (_atr(st, p[0]),)
    elif kind == "adx":
        outputs = (_adx(st, p[0]),)
    elif kind == "macd":
        outputs = _macd(st, *p)
    elif kind == "bb":
        assert spec.k is not None
        outputs = _bb(st, p[0], spec.k)
    elif kind == "stoch":
        outputs = _stoch(st, *p)
    elif kind == "donchian":
        outputs = (pl.col("high").rolling_max(p[0]), pl.col("low").rolling_min(p[0]))
    else:
        # The session windows group by (instrument, day) themselves.
        st.add(_vwap(schema["ts"], st.over).cast(pl.Float64), spec.columns[0], grouped=True)
        return
    for expr, name in zip(outputs, spec.columns, strict=True):
        st.add(expr.cast(pl.Float64), name)


def _compute(inputs: pl.DataFrame, specs: list[Spec], over: str | None = None) -> list[pl.Series]:
    """The output columns of ``specs`` over ``inputs`` (no row skipping), in one lazy
    query: one ``with_columns`` per level of intermediate columns (each computed within
    its ``over`` group when given)."""
    st = _Stages("t", over)
    for spec in specs:
        st.tag = f"{spec.text}"
        _add_spec(st, spec, inputs.schema)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    if over is not None:
        row = row.over(over)
    frame = inputs.lazy().with_columns(row.alias(_ROW))
    for level in st.levels:
        frame = frame.with_columns(level)
    names = [name for spec in specs for name in spec.columns]
    # In memory: the streaming engine's rolling kernels round differently (1e-14) from the
    # in-memory ones that `.over` uses, and a stacked frame must give exactly the values
    # of each instrument alone.
    return frame.select(names).collect(engine="in-memory").get_columns()


# --- frames -----------------------------------------------------------------------------


def add_indicators(
    bars: pl.DataFrame, specs: list[str] | list[Spec], *, over: str | None = None
) -> pl.DataFrame:
    """``bars`` with the columns of each spec added (see the module doc for the names,
    definitions and how missing inputs are handled).

    ``over``: the column naming each row's instrument when ``bars`` holds several
    stacked (each one's rows oldest first): the values are then those of each
    instrument's rows alone, computed in one query."""
    parsed = [parse_spec(s) if isinstance(s, str) else s for s in specs]
    if not parsed:
        return bars
    unique = list({spec.text: spec for spec in parsed}.values())
    needed = sorted({c for spec in unique for c in _INPUTS[spec.kind]})
    missing = [c for c in needed if c not in bars.columns]
    if over is not None and over not in bars.columns:
        missing.append(over)
    if missing:
        raise UsageError(f"the bars have no {', '.join(missing)} column")
    numeric = [c for c in needed if c != "ts"]
    # Float inputs with NaN as null (cast also turns integer volumes into floats).
    inputs = bars.select(
        *[pl.col(c) for c in needed if c == "ts"],
        *[pl.col(c).cast(pl.Float64).fill_nan(None) for c in numeric],
    )
    complete = not any(inputs.null_count().row(0))
    if over is not None:
        inputs = inputs.with_columns(bars[over])
    results: list[pl.Series] = []
    if complete:
        # Nothing to skip: every spec in one query.
        results = _compute(inputs, unique, over)
    else:
        # Specs reading the same inputs share one compaction of the rows they can use.
        groups: dict[tuple[str, ...], list[Spec]] = {}
        for spec in unique:
            groups.setdefault(_INPUTS[spec.kind], []).append(spec)
        for columns, group in groups.items():
            bad = inputs.select(pl.any_horizontal(pl.col(c).is_null() for c in columns)).to_series()
            if not bad.any():
                results.extend(_compute(inputs, group, over))
                continue
            keep = (~bad).arg_true()
            for series in _compute(inputs.filter(~bad), group, over):
                full = pl.Series(series.name, [None] * bars.height, dtype=pl.Float64)
                results.append(full.scatter(keep, series) if len(keep) else full)
    by_name = {series.name: series for series in results}
    return bars.with_columns(by_name[name] for spec in unique for name in spec.columns)


def lookback(spec: str | Spec) -> int:
    """Rows to read before the first wanted one so that its values do not depend on
    where the read started: the warm-up, plus for the recursive smoothers (EMA, MACD,
    RSI, ATR, ADX) 20 periods more, after which the seed's weight is below e^-20
    (about 2e-9). Like TA-Lib's "unstable period": with less history the first values
    after the warm-up differ from those computed on a longer series."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind in ("ema", "rsi", "atr", "adx", "macd"):
        return warmup(parsed) + 20 * max(parsed.periods)
    return warmup(parsed)


def max_lookback(specs: list[Spec]) -> int:
    """The longest :func:`lookback` of ``specs`` (0 for none)."""
    return max((lookback(spec) for spec in specs), default=0)
