# One image for the API and the workers; docker-compose picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY loader ./loader
COPY packagerepo ./packagerepo
COPY repository ./repository
COPY workflows ./workflows
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 packagerepo \
    && mkdir -p /data && chown packagerepo /data

USER packagerepo
EXPOSE 5000
CMD ["packagerepo", "api", "--bind", "0.0.0.0:5000"]
