#!/usr/bin/env python3
"""The example site's command line: ``python manage.py runserver`` (see README.md)."""

import os
import sys
from pathlib import Path


def main() -> None:
    """Run a Django management command for the example site."""
    # Runnable from a source checkout without installing chorde.
    sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
