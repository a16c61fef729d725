"""The hop from ingestion to enrichment: HTTP between processes, a direct call inside one."""
