"""Filters (``where``) on a collection's items: SQL for the catalog, and the error that
names what can be filtered on when a field is unknown."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..errors import JointspaceError

FILTER_COLUMNS = ("key", "source", "modality", "path", "label", "text")
MAX_LISTED = 30  # metadata keys named in an unknown-filter error


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
    Values compare as text: a CLI or CSV "7" and a JSON 7 are the same value."""
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
        clauses.append(f"{column} IN ({','.join('?' * len(values))})")
        args += [str(int(v)) if isinstance(v, bool) else str(v) for v in values]
    sql = "SELECT id FROM items" + (" WHERE " + " AND ".join(clauses) if clauses else "")
    return sql, args, keys


__all__ = ["FILTER_COLUMNS", "UnknownFilterError", "where_sql"]
