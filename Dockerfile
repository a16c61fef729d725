# One image for all three services (and `up`): the command picks the stage.
#   docker build -t ha-ingestor .
#   docker run --env-file .env ha-ingestor ingestion|enrichment|admin|up|verify
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ha_ingestor ./ha_ingestor
# With the 'nats' extra: the same image runs the fleet (HOP=nats, deploy/docker-compose.fleet.yml).
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[nats]"

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 ingestor \
 && useradd --system --uid 10001 --gid ingestor --home-dir /data --no-create-home ingestor \
 && mkdir -p /data && chown ingestor:ingestor /data
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER ingestor
WORKDIR /data
# Inside a container the services must listen beyond loopback; logs are JSON for the collector.
ENV DATA_DIR=/data BIND_HOST=0.0.0.0 LOG_FORMAT=json PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8001 8002 8003
# Which port answers depends on the stage; `ha-ingestor health` checks the one this container serves.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["ha-ingestor", "health"]
ENTRYPOINT ["ha-ingestor"]
CMD ["up"]
