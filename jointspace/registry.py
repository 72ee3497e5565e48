"""Registries by name for towers, objectives and stores.

A new tower or objective is one new module plus one ``@REGISTRY.register``
line; factories look names up here instead of string-matching.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → class (or factory) mapping with clear errors for unknown names.

    >>> TOWERS = Registry("tower")
    >>> @TOWERS.register("vit")
    ... class ViT: ...
    >>> TOWERS.get("vit") is ViT
    True
    >>> TOWERS.unregister("vit") is ViT, "vit" in TOWERS
    (True, False)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a plug-in defined for a test, say) and return what it was."""
        try:
            return self._items.pop(name)
        except KeyError:
            raise ConfigError(f"no {self.kind} {name!r} is registered") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
