"""Transform: Home Assistant events to points, with the spool and dead letters."""
