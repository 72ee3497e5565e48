"""Filters (``where``) on a collection's items: SQL for the catalog, and the error that
names what can be filtered on when a field is unknown.

A filter is ``{field: value or [values]}``: an item matches when, for every field, its
value is one of those given. A list may be of any length (it is one SQL parameter,
expanded by SQLite's ``json_each``, so SQLite's limit on parameters never applies); a
filter names at most :data:`MAX_FILTER_FIELDS` fields. A server keeps some fields to
itself (those naming its files); :func:`refuse_hidden` is its check."""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

from ..errors import JointspaceError

#: names this module's code uses that a modality has too: the catalog's ``text`` column, a
#: stored field a filter names (``where={"text": …}``), whatever modality the items are
USER_FACING_DEFAULTS = ("text",)
FILTER_COLUMNS = ("key", "source", "modality", "path", "label", "text")
MAX_LISTED = 30  # metadata keys named in an unknown-filter error
MAX_FILTER_FIELDS = 32  # fields one filter may name (each is a clause of one SQL statement)


class UnknownFilterError(JointspaceError):
    """A filter names a field no item has (or no field at all): ``names`` are the bad
    ones; the message lists the item fields and the metadata keys there are."""

    def __init__(self, names: Sequence[str], problem: str, meta_keys: Sequence[str]) -> None:
        self.names, self.problem, self.meta_keys = list(names), problem, list(meta_keys)
        super().__init__(self.describe())

    def describe(self, hidden: Sequence[str] = ()) -> str:
        """The message, leaving out the fields in ``hidden`` (those a server keeps to itself)."""
        fields = [f for f in FILTER_COLUMNS if f not in hidden]
        keys = [k for k in self.meta_keys if k not in hidden]
        listed = ", ".join(keys[:MAX_LISTED]) + (f" … ({len(keys) - MAX_LISTED} more)"
                                                 if len(keys) > MAX_LISTED else "")
        return (f"cannot filter on {', '.join(map(repr, self.names))}: {self.problem}; filter on "
                f"{', '.join(fields)} or a metadata key ({listed or 'the items have none'})")


def where_sql(where: Mapping[str, Any],
              meta_keys: Callable[[], list[str]]) -> tuple[str, list[str], list[str]]:
    """``(SELECT of the matching ids, its arguments, the metadata keys it names)``.
    Values compare as text: a CLI or CSV "7" and a JSON 7 are the same value. Each
    field's values are one argument (a JSON list) whatever their number."""
    if len(where) > MAX_FILTER_FIELDS:
        raise JointspaceError(f"a filter names at most {MAX_FILTER_FIELDS} fields, got {len(where)}")
    clauses: list[str] = []
    args: list[str] = []
    keys: list[str] = []
    for name, value in where.items():
        if name in FILTER_COLUMNS:
            column = name
        elif isinstance(name, str) and name.replace("_", "").isalnum():
            column = "CAST(json_extract(meta, ?) AS TEXT)"
            args.append(f"$.{name}")
            keys.append(name)
        else:
            raise UnknownFilterError([name], "a field name is letters, digits and underscores",
                                     meta_keys())
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise JointspaceError(f"filter {name!r} needs a string or number, or a list of them")
        clauses.append(f"{column} IN (SELECT value FROM json_each(?))")
        args.append(json.dumps([str(int(v)) if isinstance(v, bool) else str(v) for v in values]))
    sql = "SELECT id FROM items" + (" WHERE " + " AND ".join(clauses) if clauses else "")
    return sql, args, keys


def refuse_hidden(where: Mapping[str, Any] | None, hidden: Sequence[str],
                  meta_keys: Callable[[], list[str]]) -> None:
    """Raise :class:`UnknownFilterError` if ``where`` names a field in ``hidden`` (a server's
    check: a filter on ``path`` would tell a client which server paths are indexed)."""
    names = [name for name in (where or {}) if name in hidden]
    if names:
        raise UnknownFilterError(names, "this server does not filter on "
                                 f"{'it' if len(names) == 1 else 'them'}", meta_keys())


__all__ = ["FILTER_COLUMNS", "MAX_FILTER_FIELDS", "UnknownFilterError", "refuse_hidden", "where_sql"]
