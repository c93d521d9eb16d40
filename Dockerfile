# medsynth for GPU workstations: CUDA-enabled PyTorch runtime, medsynth on top, non-root user.
# Build:  docker build -t medsynth .
# Run:    docker run --gpus all --ipc=host --rm -v "$PWD":/data medsynth demo --out /data/demo
# Its torch (2.9.0, CUDA 12.8: NVIDIA driver 570 or newer) satisfies every requirement (monai 1.6.1 needs
# torch >= 2.8); docker/constraints.txt pins it so pip can never swap in another build (.ci/docker-torch-check).
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/medsynth
COPY pyproject.toml README.md ./
COPY docker/constraints.txt ./docker/constraints.txt
COPY medsynth ./medsynth
RUN pip install --no-cache-dir --constraint docker/constraints.txt . \
    && useradd --create-home --uid 1000 medsynth \
    && mkdir -p /data \
    && chown 1000:1000 /data

USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["medsynth"]
CMD ["--help"]
