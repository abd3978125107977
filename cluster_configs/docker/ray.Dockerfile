# Image for the Ray cluster (cluster launcher or KubeRay): Ray 2.60.0 on Python 3.11, Java 17 for
# the dedup stage's local Spark on the head, and this project at /home/ray/selectllm.
# From the repository root:
#   docker build -f cluster_configs/docker/ray.Dockerfile --build-arg FLAVOR=gpu -t REGISTRY/selectllm:0.1.0-gpu .
#   docker build -f cluster_configs/docker/ray.Dockerfile --build-arg FLAVOR=cpu -t REGISTRY/selectllm:0.1.0-cpu .
ARG FLAVOR=cpu
FROM rayproject/ray:2.60.0-py311-${FLAVOR}

USER root
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
USER ray

ARG TORCH_SPEC="torch==2.13.0"
COPY --chown=ray:users pyproject.toml README.md /home/ray/selectllm/
COPY --chown=ray:users selectllm /home/ray/selectllm/selectllm
COPY --chown=ray:users jobs /home/ray/selectllm/jobs
RUN pip install --no-cache-dir ${TORCH_SPEC} \
 && pip install --no-cache-dir -e '/home/ray/selectllm[gcs]'

ENV HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
WORKDIR /home/ray/selectllm
