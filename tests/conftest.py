"""Shared test configuration.

The gendurable fixtures (`gendurable_dsn`, `gendurable_schema`, `manual_clock`,
`no_task_leaks`) come from the `gendurable.testing` plugin, which pytest loads through its
`pytest11` entry point; naming it in `pytest_plugins` as well would register it twice.
"""

# pytester runs small inner test sessions, to test the plugin's own fixtures.
pytest_plugins = ["pytester"]
