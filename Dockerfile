# The session-tally application (worker, web, topics, simulate, replay, ...). Used by docker-compose.yml and
# docs/kubernetes/. Installs the exact versions of constraints.txt (the ones the test suite ran against).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin session-tally

WORKDIR /app
# dependencies first (a layer that changes only with constraints.txt or pyproject.toml), then the code
COPY constraints.txt pyproject.toml README.md ./
COPY domain ./domain
COPY storage ./storage
COPY consumers ./consumers
COPY producers ./producers
COPY session_tally ./session_tally
COPY web ./web
RUN pip install -c constraints.txt . \
    && rm -rf /app/build /app/*.egg-info

USER 10001:10001
EXPOSE 8085 8000
# SIGTERM: the worker finishes its batch in flight, publishes the outbox and exits 0 (docs/operations.md);
# give it `SESSION_TALLY_GRACEFUL_TIMEOUT_S` twice over plus a margin (compose: stop_grace_period 45s).
STOPSIGNAL SIGTERM
# The worker's health (compose and Kubernetes set their own checks; one-shot commands disable this one).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('SESSION_TALLY_HTTP_PORT') or '8085'), timeout=4)"
ENTRYPOINT ["session-tally"]
CMD ["--help"]
