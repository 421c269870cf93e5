"""Django management commands of chorde_django."""
