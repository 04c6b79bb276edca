"""The database seam: the only package that imports asyncpg."""
