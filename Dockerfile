# medsynth for GPU workstations: CUDA-enabled PyTorch runtime, medsynth with the extras its docs use (ONNX export and
# onnxruntime-gpu, dose evaluation), the whole Python stack pinned, non-root user. docs/docker.md has the details.
# Build:  docker build -t medsynth .
# Run:    docker run --gpus all --ipc=host --rm -v "$PWD":/data medsynth demo --out /data/demo
# Its torch (2.9.0, CUDA 12.8: NVIDIA driver 570 or newer) satisfies every requirement (monai 1.6.1 needs
# torch >= 2.8); docker/constraints.txt pins it and every other package (.ci/docker-torch-check).
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/medsynth
COPY pyproject.toml README.md ./
COPY docker/constraints.txt ./docker/constraints.txt
COPY medsynth ./medsynth
# pyRadPlan comes without its declared dependencies: they are the dose extra's, less the LLM and cloud clients
# it never imports (docs/evaluation.md).
RUN pip install --no-cache-dir --constraint docker/constraints.txt ".[dose,onnx-gpu]" \
    && pip install --no-cache-dir --no-deps --constraint docker/constraints.txt pyradplan==0.5.0 \
    && useradd --create-home --uid 1000 medsynth \
    && mkdir -p /data \
    && chown 1000:1000 /data

USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
# TensorBoard, when started in the container (docs/docker.md)
EXPOSE 6006
ENTRYPOINT ["medsynth"]
CMD ["--help"]
