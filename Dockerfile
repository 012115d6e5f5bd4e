FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY producer ./producer
COPY worker ./worker
RUN pip install --no-cache-dir .
RUN useradd --create-home ripmap
USER ripmap
ENV RIPMAP_DATA_DIR=/home/ripmap/data
