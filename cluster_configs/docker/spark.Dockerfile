# Image for Spark on Kubernetes (cluster_configs/spark/kubernetes.conf): Spark 4.3.0 (the
# version pyspark pins here), hadoop-aws matching its bundled Hadoop 3.5.0 plus the AWS SDK
# bundle and spark-hadoop-cloud (S3A magic committer), Python with selectllm's dedup
# dependencies, and the project at /opt/selectllm.  From the repository root:
#   docker build -f cluster_configs/docker/spark.Dockerfile -t REGISTRY/selectllm-spark:0.1.0 .
ARG SPARK_VERSION=4.3.0
FROM apache/spark:${SPARK_VERSION}-python3
ARG SPARK_VERSION=4.3.0
ARG HADOOP_VERSION=3.5.0
ARG SCALA_BINARY=2.13

USER root
# resolve hadoop-aws (and the exact AWS SDK bundle it was built with) the way --packages does,
# then keep the jars in Spark's classpath so no job downloads anything
RUN echo "pass" > /tmp/noop.py \
 && /opt/spark/bin/spark-submit --master "local[1]" --conf spark.jars.ivy=/tmp/ivy \
      --packages org.apache.hadoop:hadoop-aws:${HADOOP_VERSION},org.apache.spark:spark-hadoop-cloud_${SCALA_BINARY}:${SPARK_VERSION} \
      /tmp/noop.py \
 && for j in /tmp/ivy/jars/*.jar; do [ -e "/opt/spark/jars/$(basename "$j")" ] || cp "$j" /opt/spark/jars/; done \
 && rm -rf /tmp/ivy /tmp/noop.py

COPY pyproject.toml README.md /opt/selectllm/
COPY selectllm /opt/selectllm/selectllm
COPY jobs /opt/selectllm/jobs
# the image's Spark is used: selectllm's dedup needs only these on the executors (presidio-analyzer: privacy)
RUN pip install --no-cache-dir pyarrow "pandas<3" fsspec s3fs gcsfs zstandard pydantic pyyaml typer rich "presidio-analyzer>=2.2.360,<3" \
 && pip install --no-cache-dir --no-deps /opt/selectllm

USER spark
WORKDIR /opt/selectllm
