"""Running the real parts on this machine: a private influxd, the services as processes.

Used by the test suite, `ha-ingestor bench` and `ha-ingestor migrate-demo`; never by the services.
"""
