"""The benchmark harness behind `bench/run.py` (not part of the package, never imported by it).

`meters` and `report` use the standard library only: the peers' adapters, which run in
their own virtualenv without gendurable, import them too.
"""
