FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY state ./state
COPY producer ./producer
COPY worker ./worker
COPY ranker ./ranker
COPY ops ./ops
RUN pip install --no-cache-dir .
RUN useradd --create-home ripmap
USER ripmap
ENV RIPMAP_DATA_DIR=/home/ripmap/data
