"""Compare the dbt tables of two DuckDB warehouses built from the same raw data (e.g. before and after a SQL change).

For every table of the ``intermediate`` and ``marts`` schemas of the first file: the row counts and ``except all``
both ways (duplicates count), with doubles rounded to 9 decimals (the last bits of ``avg()`` move between two
builds of the same SQL). Columns only the second file has are ignored (and reported). Exit 1 on any difference.

    .venv/bin/python benchmarks/compare_marts.py before.duckdb after.duckdb --memory-limit 4GB
"""

from __future__ import annotations

import argparse
import sys

import duckdb

SCHEMAS = ("intermediate", "marts")


def _columns(con: duckdb.DuckDBPyConnection, db: str, schema: str, table: str) -> list[tuple[str, str]]:
    """(name, type) of a table's columns, in order."""
    return con.execute(
        "select column_name, data_type from duckdb_columns() "
        "where database_name = ? and schema_name = ? and table_name = ? order by column_index",
        [db, schema, table],
    ).fetchall()


def compare(first: str, second: str, memory_limit: str = "") -> bool:
    """Print one line per table; True when every table of ``first`` has the same rows in ``second``."""
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"set memory_limit = '{memory_limit}'")
    con.execute(f"attach '{first}' as a (read_only)")
    con.execute(f"attach '{second}' as b (read_only)")
    tables = con.execute(
        "select schema_name, table_name from duckdb_tables() where database_name = 'a' "
        f"and schema_name in {SCHEMAS} order by 1, 2"
    ).fetchall()
    same_everywhere = True
    for schema, table in tables:
        cols, cols_b = _columns(con, "a", schema, table), _columns(con, "b", schema, table)
        if not cols_b:
            print(f"MISSING {schema}.{table} in {second}")
            same_everywhere = False
            continue
        select = ", ".join(f'round("{c}", 9) as "{c}"' if t == "DOUBLE" else f'"{c}"' for c, t in cols)
        rows_a = con.execute(f"select count(*) from a.{schema}.{table}").fetchone()[0]
        rows_b = con.execute(f"select count(*) from b.{schema}.{table}").fetchone()[0]
        only_a, only_b = (
            con.execute(
                f"select count(*) from (select {select} from {x}.{schema}.{table} "
                f"except all select {select} from {y}.{schema}.{table})"
            ).fetchone()[0]
            for x, y in (("a", "b"), ("b", "a"))
        )
        same = rows_a == rows_b and only_a == 0 and only_b == 0
        same_everywhere &= same
        extra = [c for c, _ in cols_b if c not in {c for c, _ in cols}]
        note = f" (columns only in the second: {', '.join(extra)})" if extra else ""
        print(
            f"{'same' if same else 'DIFF'} {schema}.{table}: rows {rows_a} / {rows_b}, "
            f"only first {only_a}, only second {only_b}{note}"
        )
    print("ALL SAME" if same_everywhere else "DIFFERENCES")
    return same_everywhere


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--memory-limit", default="", help="DuckDB memory_limit for the comparison, e.g. 4GB")
    args = parser.parse_args()
    sys.exit(0 if compare(args.first, args.second, args.memory_limit) else 1)


if __name__ == "__main__":
    main()
