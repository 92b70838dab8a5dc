"""The catalogue: an embedded DuckDB database with a versioned schema."""
from .migrations import MIGRATIONS, SCHEMA_VERSION
from .store import TABLES, Catalog, CatalogError, CatalogInUse, Decision

__all__ = ["Catalog", "CatalogError", "CatalogInUse", "Decision", "MIGRATIONS", "SCHEMA_VERSION", "TABLES"]
