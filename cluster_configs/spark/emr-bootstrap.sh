#!/bin/bash
# EMR bootstrap action: a Python environment with selectllm's dependencies on every node.
# EMR's Spark reads s3:// natively (EMRFS/S3A, credentials from the instance profile), so no
# hadoop-aws is needed.  Upload the project (git archive) next to this script first, e.g.
#   git archive -o selectllm.tar.gz HEAD && aws s3 cp selectllm.tar.gz s3://my-bucket/selectllm/
#   aws s3 cp cluster_configs/spark/emr-bootstrap.sh s3://my-bucket/selectllm/
# and pass the tarball's URL as the bootstrap action's argument.
set -euo pipefail
SRC_URL="${1:?usage: emr-bootstrap.sh s3://bucket/selectllm.tar.gz}"
sudo python3 -m venv /usr/local/selectllm
mkdir -p /tmp/selectllm-src
aws s3 cp "$SRC_URL" /tmp/selectllm.tar.gz
tar -xzf /tmp/selectllm.tar.gz -C /tmp/selectllm-src
# the cluster's own Spark is used: do not install pyspark over it
sudo /usr/local/selectllm/bin/pip install -q --no-deps /tmp/selectllm-src
sudo /usr/local/selectllm/bin/pip install -q pyarrow pandas fsspec s3fs zstandard pydantic pyyaml typer rich "presidio-analyzer>=2.2.360,<3"
