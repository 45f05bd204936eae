"""``python -m stlib``: the command-line interface (see `stlib.cli`)."""

from .cli import main

raise SystemExit(main())
