# The session-tally application (worker, topics, simulate, replay, ...). Used by docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home session-tally

USER session-tally
ENTRYPOINT ["session-tally"]
CMD ["--help"]
