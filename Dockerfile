# One image for every Tollgate service; docker-compose.yml picks the app with `command`.
# BASE: the official python image, or `make images`' local stand-in built from Debian's packages.
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY shared ./shared
COPY services ./services
COPY deploy ./deploy
RUN uv sync --frozen --no-dev
RUN useradd --system --uid 10001 tollgate && mkdir -p /var/lib/tollgate && chown tollgate /var/lib/tollgate
USER tollgate
ENTRYPOINT ["uvicorn", "--factory", "--host", "0.0.0.0", "--no-access-log"]
