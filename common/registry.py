"""A name -> object registry that refuses duplicates (the timm / lm-evaluation-harness convention)."""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Registered objects by name. ``entry_point_group`` lets other installed packages add entries
    (``from_entry_point`` turns what an entry point loads into an entry); ``check(name, obj)`` raises
    for an entry that cannot be registered, whichever way it comes."""

    def __init__(self, kind: str, entry_point_group: str | None = None, from_entry_point: Callable[[object], T] | None = None,
                 check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.from_entry_point = from_entry_point
        self.check = check
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a second registration of a name is an error."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r}); names must be unique")
        if self.check is not None:
            self.check(name, obj)
        self._items[name] = obj

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        for point in entry_points(group=self.entry_point_group):
            if point.name not in self._items:
                loaded = point.load()
                if point.name not in self._items:  # importing it may have registered it already
                    self.add(point.name, self.from_entry_point(loaded) if self.from_entry_point else loaded)

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
