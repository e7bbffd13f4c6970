"""The list of sources, and what is derived from it: names, aliases, places, settings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..errors import UnsupportedProvider
from ._source import Location, Place, Source


class Registry:
    """Sources by name and alias; places and settings in declaration order."""

    def __init__(self, sources: Iterable[Source]) -> None:
        self._sources = tuple(sources)
        self._by_name: dict[str, Source] = {}
        for source in self._sources:
            for name in (source.name, *source.aliases):
                if name in self._by_name:
                    raise ValueError(f"two sources are called {name!r}")
                self._by_name[name] = source

    def __iter__(self) -> Iterator[Source]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def names(self) -> list[str]:
        """Every source's name (aliases left out), sorted."""
        return sorted(source.name for source in self._sources)

    def by_rank(self) -> list[Source]:
        """Sources in the order people see them: the common ones first."""
        return sorted(self._sources, key=lambda s: (s.rank, s.name))

    def find(self, name: object) -> Source | None:
        if not isinstance(name, str):
            return None
        return self._by_name.get(name.strip().lower())

    def get(self, name: object) -> Source:
        """The source called ``name`` (or an alias of it); else :class:`UnsupportedProvider`."""
        source = self.find(name)
        if source is None:
            shown = name if isinstance(name, str) else type(name).__name__
            aliases = ", ".join(f"{a}={s.name}" for s in self._sources for a in s.aliases)
            raise UnsupportedProvider(
                f"provider {str(shown)[:60]!r} is not supported; use one of: "
                f"{', '.join(self.names())}" + (f" (alias: {aliases})" if aliases else "")
            )
        return source

    def places(self) -> list[Place]:
        """Every place a source writes to, each once, in declaration order."""
        found: dict[str, Place] = {}
        for source in self._sources:
            if source.place is not None:
                found.setdefault(source.place.name, source.place)
        return list(found.values())

    def primary(self, place: Place) -> Source:
        """The source a place's models are listed under when every source is listed."""
        return next(s for s in self._sources if s.place is not None and s.place.name == place.name)

    def locations(self) -> list[Location]:
        """Every machine-wide setting a source or place reads, each once."""
        found: dict[str, Location] = {}
        for source in self._sources:
            candidates = [source.base_url_setting, source.folder_setting]
            if source.place is not None:
                candidates.extend(source.place.locations)
            for location in candidates:
                if location is not None:
                    found.setdefault(location.name, location)
        return list(found.values())

    def path_options(self) -> frozenset[str]:
        """Options that name a folder on this machine."""
        return frozenset(o.name for s in self._sources for o in s.options if o.is_path)
