"""`python -m gendurable ...` is the `gendurable` command."""

from .cli import main

raise SystemExit(main())
