"""Fixtures for the schedule tests (`rows`: SQL views of the test's schema)."""

from __future__ import annotations

import asyncpg
import pytest

from schedule_support import Rows


@pytest.fixture
def rows(db: asyncpg.Connection, gendurable_schema: str) -> Rows:
    """SQL views of the test's schema."""
    return Rows(db, gendurable_schema)
