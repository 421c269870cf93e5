"""``manage.py chorde_stats``."""
