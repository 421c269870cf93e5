"""``python manage.py chorde_stats [--alias NAME ...]``: each ChordeCache's counters.

Prints, for every alias of ``settings.CACHES`` whose backend is
``chorde_django.ChordeCache`` (or the ones named), its client's counters and usage, and the
counters of each function cached into it with ``chorde_django.cached``. The counters are
this process's: run it where the site runs (a shell, a ``call_command`` from a view or a
scheduled job), or export them (:mod:`chorde.exporters`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chorde_django.stats import chorde_aliases, report


class Command(BaseCommand):
    """Print each ChordeCache's counters and its cached functions' counters."""

    help = "Print the counters of each ChordeCache and of the functions cached into it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--alias",
            action="append",
            dest="aliases",
            help="a cache alias (repeatable; default: every ChordeCache alias)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        aliases: list[str] | None = options.get("aliases")
        if aliases:
            known = chorde_aliases()
            unknown = [a for a in aliases if a not in known]
            if unknown:
                raise CommandError(
                    f"not a ChordeCache alias of settings.CACHES: {unknown} (known: {known})"
                )
        self.stdout.write(report(aliases))
