FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY tasks ./tasks
COPY config ./config
RUN pip install --no-cache-dir ".[flower]"
ENV PYTHONUNBUFFERED=1
CMD ["orchestrator", "--help"]
