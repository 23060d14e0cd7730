"""A tiny name -> object registry; the key is the name users type (the Hydra option name)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from benchbench.errors import unknown_name

T = TypeVar("T")


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """`cfg[key]` for a DictConfig, dict or object; a null value counts as missing."""
    try:
        val = cfg.get(key, default)
    except AttributeError:
        val = getattr(cfg, key, default)
    return default if val is None else val


class Registry(Generic[T]):
    def __init__(self, kind: str, how: str = ""):
        self.kind = kind  # used in error messages: "unknown model 'vit_xx'"
        self.how = how
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            warnings.warn(f"{self.kind} '{name}' registered twice; the later one wins", stacklevel=2)
        self._items[name] = item
        return item

    def decorator(self, name: str) -> Callable[[T], T]:
        return lambda item: self.register(name, item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._items, self.how) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Names in registration order (a table's own order, e.g. plot order)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
