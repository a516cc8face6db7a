"""Strategies by name.

Built-in strategies live in modules of this package and register themselves with the
``register`` decorator; they are imported on first use (``load_builtins``). A user's
own strategies come from ``[strategies] modules`` in the config:

- ``"pkg.mod"``: every concrete Strategy subclass defined in the module that has a
  ``name`` is registered (the ``register`` decorator works there too);
- ``"pkg.mod:Class"``: that one class (its ``name``, else the class name).

A user module that fails to import is reported with its traceback (``StrategyLoadError``)
only to the scanners that need a strategy it might define: one broken module never
stops scanners of other strategies.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import TypeVar

import msgspec

from sptrader.errors import SptraderError
from sptrader.strategies.base import Strategy

S = TypeVar("S", bound=type[Strategy])

_registry: dict[str, type[Strategy]] = {}
_lock = threading.RLock()
_builtins_loaded = False
_NOT_STRATEGIES = {"base", "registry"}


class StrategyLoadError(SptraderError):
    """A strategy cannot be found or loaded; ``details`` holds the traceback text."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def register(cls: S | None = None, *, name: str | None = None) -> S | Callable[[S], S]:
    """Class decorator: ``@register`` or ``@register(name="sma_cross")``."""

    def apply(strategy: S) -> S:
        if name:
            strategy.name = name
        _add(strategy)
        return strategy

    return apply(cls) if cls is not None else apply


def _add(strategy: type[Strategy]) -> None:
    if not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
        raise TypeError(f"{strategy!r} is not a Strategy subclass")
    if not strategy.name:
        strategy.name = strategy.__name__
    with _lock:
        known = _registry.get(strategy.name)
        if known is not None and known is not strategy and _qualname(known) != _qualname(strategy):
            raise StrategyLoadError(
                f"strategy name {strategy.name!r} is used by both {_qualname(known)} and {_qualname(strategy)}"
            )
        _registry[strategy.name] = strategy


def unregister(name: str) -> None:
    with _lock:
        _registry.pop(name, None)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_builtins() -> None:
    """Import every strategy module of this package once (they register themselves)."""
    global _builtins_loaded
    with _lock:
        if _builtins_loaded:
            return
        _builtins_loaded = True
        import sptrader.strategies as package

        for info in pkgutil.iter_modules(package.__path__):
            if info.name not in _NOT_STRATEGIES and not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")


def builtin_names() -> list[str]:
    load_builtins()
    with _lock:
        return sorted(
            name
            for name, cls in _registry.items()
            if cls.__module__.startswith("sptrader.strategies.")
        )


def names() -> list[str]:
    with _lock:
        return sorted(_registry)


def load_module(spec: str) -> list[type[Strategy]]:
    """Import one ``[strategies] modules`` entry and register what it defines; raise
    StrategyLoadError (with the traceback as ``details``) when it cannot."""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name.strip())
    except Exception as error:
        raise StrategyLoadError(
            f"strategy module {module_name!r} failed to import: {type(error).__name__}: {error}",
            traceback.format_exc(),
        ) from None
    if class_name:
        cls = getattr(module, class_name.strip(), None)
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise StrategyLoadError(f"{spec!r}: {module_name} has no Strategy class {class_name!r}")
        found = [cls]
    else:
        found = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Strategy)
            and cls.__module__ == module.__name__
            and not inspect.isabstract(cls)
            and cls.name
        ]
    for cls in found:
        _add(cls)
    return found


def resolve(name: str, modules: Iterable[str] = ()) -> type[Strategy]:
    """The class registered as ``name``: built-ins first, then the user's modules (in
    order, until one defines it). Raises StrategyLoadError naming what went wrong."""
    load_builtins()
    with _lock:
        if name in _registry:
            return _registry[name]
    failures: list[StrategyLoadError] = []
    for spec in modules:
        try:
            load_module(spec)
        except StrategyLoadError as error:
            failures.append(error)
            continue
        with _lock:
            if name in _registry:
                return _registry[name]
    if failures:
        raise StrategyLoadError(
            f"strategy {name!r} not found; " + "; ".join(str(failure) for failure in failures),
            "\n".join(failure.details for failure in failures if failure.details),
        )
    known = ", ".join(names()) or "none"
    raise StrategyLoadError(
        f"unknown strategy {name!r} (known: {known}; add your module to [strategies] modules)"
    )


def build(name: str, params: dict, modules: Iterable[str] = ()) -> Strategy:
    """An instance with its typed params; bad params raise StrategyLoadError."""
    cls = resolve(name, modules)
    try:
        return cls.from_config(params)
    except msgspec.ValidationError as error:
        raise StrategyLoadError(f"bad params for strategy {name!r}: {error}") from None
    except Exception as error:
        raise StrategyLoadError(
            f"strategy {name!r} could not be created: {type(error).__name__}: {error}",
            traceback.format_exc(),
        ) from None
