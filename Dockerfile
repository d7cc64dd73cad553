FROM python:3.11-slim
# The code is installed as root and stays root's: the processes run as an unprivileged user that
# cannot change it, in a working directory of its own (where an SQLite default or artifacts go).
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY config ./config
RUN pip install --no-cache-dir ".[flower]" \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/orchestrator orchestrator
ENV PYTHONUNBUFFERED=1
USER orchestrator:orchestrator
WORKDIR /home/orchestrator
CMD ["orchestrator", "--help"]
