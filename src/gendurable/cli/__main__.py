"""`python -m gendurable.cli ...` is the `gendurable` command."""

from . import main

raise SystemExit(main())
