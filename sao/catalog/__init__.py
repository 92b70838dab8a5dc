"""The catalogue: an embedded DuckDB database with a versioned schema."""
from .migrations import MIGRATIONS, SCHEMA_VERSION
from .store import TABLES, Catalog, CatalogError, Decision

__all__ = ["Catalog", "CatalogError", "Decision", "MIGRATIONS", "SCHEMA_VERSION", "TABLES"]
