# medsynth for GPU workstations: CUDA-enabled PyTorch runtime, medsynth on top, non-root user.
# Build:  docker build -t medsynth .
# Run:    docker run --gpus all --rm -v "$PWD":/data medsynth demo --out /data/demo
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/medsynth
COPY pyproject.toml README.md ./
COPY medsynth ./medsynth
# The base image's torch satisfies medsynth's torch requirement, so pip keeps that CUDA build.
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 medsynth \
    && mkdir -p /data \
    && chown 1000:1000 /data

USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["medsynth"]
CMD ["--help"]
