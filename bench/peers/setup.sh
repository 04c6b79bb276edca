#!/bin/sh
# Make bench/.peers-venv with the peers the benchmarks compare against (DBOS, PgQueuer).
# They are never dependencies of gendurable; `python bench/run.py all --with-peers` runs
# their adapters (bench/peers/*_peer.py) with this virtualenv's Python.
set -eu
cd "$(dirname "$0")/.."
python3 -m venv .peers-venv
.peers-venv/bin/pip install -q 'dbos==3.4.*' 'pgqueuer==1.6.*' 'asyncpg>=0.29'
.peers-venv/bin/python -c 'from importlib.metadata import version as v; print("peers ready: dbos", v("dbos"), "pgqueuer", v("pgqueuer"))'
