"""admin-api: the health of every part, stats, metrics and the dashboard."""
