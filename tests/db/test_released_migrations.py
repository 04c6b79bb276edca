"""Released migrations are frozen: their checksums are pinned here.

Databases record the checksum of every migration applied to them and refuse a different
one, so a released file edited in place would lock every upgraded database out. A release
adds the checksum of each migration it ships to `RELEASED`, and never changes a line there.
"""

from __future__ import annotations

from gendurable.sql import migrations

RELEASED = {
    # 0.1.0
    "0001_initial.sql": "1d3d7327e97d8a5e281edf0fb6b0b030e131dd1072dd748b7f8a638da5bcaa1f",
}


def test_released_migrations_are_never_edited() -> None:
    packaged = {m.name: m.checksum for m in migrations("gendurable")}
    for name, checksum in RELEASED.items():
        assert name in packaged, f"{name} was released and must stay packaged"
        assert packaged[name] == checksum, (
            f"{name} was released and is frozen, but its text changed (checksum "
            f"{packaged[name][:12]}, released {checksum[:12]}): databases that applied it "
            "would refuse this build. Revert the edit and add a new migration instead "
            "(the next number; see src/gendurable/sql/migrations/README.md)"
        )


def test_released_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in migrations("gendurable")]
    assert versions == list(range(1, len(versions) + 1))
