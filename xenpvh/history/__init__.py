"""The results history: every run, stage, attempt and artifact in a database (SQLite by
default, PostgreSQL for a shared lab), one schema with versioned migrations."""

from xenpvh.history.db import Database, default_db_path, open_db
from xenpvh.history.store import HistoryStore, RunRecord, open_store

__all__ = ["Database", "HistoryStore", "RunRecord", "default_db_path", "open_db", "open_store"]
