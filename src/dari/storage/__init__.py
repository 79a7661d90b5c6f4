"""Storage: a Database interface (SQLite, PostgreSQL) running portable, domain-level queries."""

from dari.storage.base import Database, StoredEvent, Tx


def open_database(url: str, *, data_dir: str = "dari-data") -> Database:
    """`sqlite:PATH` (default), or `postgresql://...` (needs the postgres extra)."""
    if url.startswith(("postgresql://", "postgres://")):
        from dari.storage.postgres import PostgresDatabase

        return PostgresDatabase(url)
    from dari.storage.sqlite import SqliteDatabase

    path = url[len("sqlite:"):] if url.startswith("sqlite:") else url
    return SqliteDatabase(path or f"{data_dir}/dari.db")


__all__ = ["Database", "StoredEvent", "Tx", "open_database"]
