# OpenChargeback: one image for the web server, the Celery worker and the scheduler.
#   docker compose up -d   (see docker-compose.yml and docs/deploy.md)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    OPENCHARGEBACK_DATA_DIR=/data \
    STATIC_ROOT=/app/staticfiles

# pg_dump/pg_restore/psql for `openchargeback backup/restore` (major version 15, as the
# postgres service), and fonts for the PDF statements.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv "$VIRTUAL_ENV" \
    && groupadd --system --gid 10001 openchargeback \
    && useradd --system --uid 10001 --gid openchargeback --home-dir /app --shell /usr/sbin/nologin openchargeback

WORKDIR /app

# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml README.md ./
# The Azure Blob and Google Cloud Storage extras too, for collection points there.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['azure'] + extras['gcs']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY . .
RUN pip install --no-deps -e . \
    && openchargeback collectstatic --noinput --verbosity 0 \
    && mkdir -p /data \
    && chown -R openchargeback:openchargeback /data

USER openchargeback
VOLUME ["/data"]
EXPOSE 8000

# The compose file sets the command of each service; alone, the image serves the web application.
CMD ["openchargeback", "serve", "--bind", "0.0.0.0:8000", "--migrate"]
