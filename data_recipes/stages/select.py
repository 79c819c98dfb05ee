"""Select stage: a DuckDB SQL filter over the clip catalog picks a training stage's subset.

A preset is named conditions, each on the catalog column it is named after; a clip is dropped
under the first condition it fails (so drops add up), and a NULL counts as a fail. Conditions on
columns the catalog lacks (their scorer did not run) are skipped and reported, which is how the
default preset applies its black-border and text-area limits "where scored". ``where`` replaces
the conditions with one free filter; a column it names that is not in the catalog is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from data_recipes.config import CurateConfigError, SelectConfig


@dataclass
class Selection:
    kept: list[dict[str, Any]]  # catalog rows, ordered by key
    dropped: dict[str, int]  # "select:<condition>" (or "select:where") -> clips
    applied: dict[str, str]  # the conditions (or {"where": ...}) that ran
    skipped: list[str] = field(default_factory=list)  # conditions whose column is not in the catalog


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def select(clip_catalog: Path, cfg: SelectConfig) -> Selection:
    """Evaluate ``cfg`` over ``clip_catalog`` (clips.parquet); reads nothing but that file."""
    if not clip_catalog.is_file():
        raise FileNotFoundError(f"{clip_catalog}: no clip catalog; run the probe..caption stages first")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW clips AS SELECT * FROM read_parquet({_sql_string(str(clip_catalog))})")
    columns = [row[0] for row in con.execute("DESCRIBE clips").fetchall()]

    def check(key: str, condition: str) -> None:
        try:
            con.execute(f"SELECT ({condition}) FROM clips LIMIT 0")
        except duckdb.Error as err:
            raise CurateConfigError(f"{key}={condition!r} is not a valid filter over the catalog "
                                    f"(columns: {', '.join(columns)}): {err}") from err

    if cfg.where is not None:
        check("select.where", cfg.where)
        applied, skipped = {"where": cfg.where}, []
    else:
        applied = {c: sql for c, sql in cfg.conditions.items() if c in columns}
        skipped = [c for c in cfg.conditions if c not in columns]
        for column, condition in applied.items():
            check(f"select.conditions.{column}", condition)
    cases = " ".join(f"WHEN NOT coalesce(({sql}), false) THEN {_sql_string('select:' + name)}"
                     for name, sql in applied.items())
    reason = f"CASE {cases} END" if cases else "NULL"
    result = con.execute(f"SELECT *, {reason} AS _drop FROM clips ORDER BY key")
    names = [d[0] for d in result.description]
    rows = [dict(zip(names, values)) for values in result.fetchall()]
    dropped: dict[str, int] = {}
    for row in rows:
        if row["_drop"] is not None:
            dropped[row["_drop"]] = dropped.get(row["_drop"], 0) + 1
    kept = [{k: v for k, v in row.items() if k != "_drop"} for row in rows if row["_drop"] is None]
    return Selection(kept=kept, dropped=dropped, applied=applied, skipped=skipped)
