"""An example Django site whose caches are chorde's (see example_projects/django_site/README.md)."""
