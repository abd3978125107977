"""cluster_configs/: every file parses and is checked against the schema of what consumes it.

* Ray cluster launcher YAML: Ray's own ``prepare_config`` + ``validate_config`` (ray-schema.json
  shipped with the installed Ray); AWS ``node_config`` keys against EC2 RunInstances in
  botocore's service model (offline); GCP ``node_config`` against the fields of the Compute API's
  Instance resource that we use (an explicit list: no schema of it ships in any installed package).
* KubeRay ``RayCluster`` / ``RayJob``: every key against the fields of the ray.io/v1 CRDs
  (written out below from KubeRay's ``raycluster_types.go`` / ``rayjob_types.go``: the CRD
  YAML cannot be downloaded here), and every pod template against the Kubernetes API's own
  models (the ``kubernetes`` client's ``openapi_types``).  ``runtimeEnvYAML`` against Ray's
  ``RuntimeEnv``.
* Spark: the S3A settings' hadoop-aws version equals the Hadoop that pyspark bundles
  (``pyspark/jars/hadoop-client-api-*.jar``), spark-hadoop-cloud equals pyspark's version and
  Scala; no credentials in any file.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "cluster_configs"


def _ray_version() -> str:
    import ray

    return ray.__version__


# ----------------------------------------------------------------------------- Ray cluster launcher
@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_config_passes_rays_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CONFIGS / "ray" / name).read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))  # the same calls `ray up` makes

    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head runs the driver and Spark, no Ray tasks
    workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
    assert set(workers) == {"gpu_workers", "cpu_workers"}
    for group in workers.values():
        assert group["min_workers"] == 0 and 0 < group["max_workers"] <= raw["max_workers"]
    assert raw["idle_timeout_minutes"] > 0
    images = [raw["docker"]["head_image"], raw["docker"]["worker_image"],
              workers["cpu_workers"]["docker"]["worker_image"]]
    assert all(img.startswith(f"rayproject/ray:{_ray_version()}-") for img in images), images
    assert raw["docker"]["worker_image"].endswith("-gpu") and images[2].endswith("-cpu")
    assert raw["file_mounts"] == {"/home/ray/selectllm": "."}
    assert any("openjdk-17" in c for c in raw["setup_commands"])  # Spark on the head
    text = (CONFIGS / "ray" / name).read_text()
    assert not re.search(r"(?i)(secret|access_key|password)\s*:", text)


def _check_botocore_shape(value, shape, path: str) -> None:
    if shape.type_name == "structure":
        assert isinstance(value, dict), path
        for key, sub in value.items():
            assert key in shape.members, f"{path}.{key}: not a RunInstances field"
            _check_botocore_shape(sub, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _check_botocore_shape(item, shape.member, f"{path}[{i}]")
    elif getattr(shape, "enum", None):
        assert value in shape.enum, f"{path}: {value!r} not in {shape.enum}"
    elif shape.type_name == "integer":
        assert isinstance(value, int), path
    elif shape.type_name == "boolean":
        assert isinstance(value, bool), path
    elif shape.type_name == "string":
        assert isinstance(value, str), path


def test_aws_node_configs_are_ec2_run_instances_arguments():
    import botocore.session

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    raw = yaml.safe_load((CONFIGS / "ray" / "aws.yaml").read_text())
    for name, node in raw["available_node_types"].items():
        _check_botocore_shape(node["node_config"], shape, name)
    gpu, cpu = raw["available_node_types"]["gpu_workers"], raw["available_node_types"]["cpu_workers"]
    assert gpu["node_config"]["InstanceType"].split(".")[0][0] in "gp"  # g5/g6/p4/p5: GPU families
    for group in (gpu, cpu):
        assert group["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert raw["provider"]["cache_stopped_nodes"] is False


# fields of compute.v1 Instance (instances.insert body) used by Ray's GCP provider and by us
GCP_INSTANCE_FIELDS = {
    "machineType", "disks", "networkInterfaces", "serviceAccounts", "scheduling", "guestAccelerators",
    "metadata", "labels", "tags", "minCpuPlatform", "shieldedInstanceConfig", "reservationAffinity",
    "sourceInstanceTemplate", "canIpForward", "description", "resourcePolicies", "advancedMachineFeatures",
}
GCP_SCHEDULING = {"preemptible": bool, "provisioningModel": {"STANDARD", "SPOT"},
                  "onHostMaintenance": {"MIGRATE", "TERMINATE"}, "automaticRestart": bool,
                  "instanceTerminationAction": {"STOP", "DELETE"}}


def test_gcp_node_configs():
    raw = yaml.safe_load((CONFIGS / "ray" / "gcp.yaml").read_text())
    for name, node in raw["available_node_types"].items():
        nc = node["node_config"]
        assert set(nc) <= GCP_INSTANCE_FIELDS, (name, set(nc) - GCP_INSTANCE_FIELDS)
        assert nc["disks"][0]["boot"] is True and nc["disks"][0]["initializeParams"]["sourceImage"]
        for key, value in nc.get("scheduling", {}).items():
            allowed = GCP_SCHEDULING[key]
            assert value in allowed if isinstance(allowed, set) else isinstance(value, allowed), (name, key)
    gpu = raw["available_node_types"]["gpu_workers"]
    assert gpu["resources"]["GPU"] == gpu["node_config"]["guestAccelerators"][0]["acceleratorCount"] == 1
    assert gpu["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"  # required with GPUs
    for group in ("gpu_workers", "cpu_workers"):
        assert raw["available_node_types"][group]["node_config"]["scheduling"]["provisioningModel"] == "SPOT"


# ----------------------------------------------------------------------------- KubeRay
# The ray.io/v1 fields (KubeRay ray-operator/apis/ray/v1/{raycluster,rayjob}_types.go, json tags).
# A value: a nested dict (object), [x] (list of x), {"*": x} (map), a type, a set (enum), or
# "k8s:Model" (a Kubernetes API type, checked against the kubernetes client's models).
STR_MAP = {"*": str}
WORKER_GROUP = {
    "groupName": str, "replicas": int, "minReplicas": int, "maxReplicas": int, "numOfHosts": int,
    "rayStartParams": STR_MAP, "template": "k8s:V1PodTemplateSpec", "idleTimeoutSeconds": int,
    "scaleStrategy": {"workersToDelete": [str]}, "suspend": bool,
}
RAY_CLUSTER_SPEC = {
    "headGroupSpec": {"serviceType": {"ClusterIP", "NodePort", "LoadBalancer"}, "headService": "k8s:V1Service",
                      "enableIngress": bool, "rayStartParams": STR_MAP, "template": "k8s:V1PodTemplateSpec"},
    "workerGroupSpecs": [WORKER_GROUP],
    "rayVersion": str,
    "enableInTreeAutoscaling": bool,
    "autoscalerOptions": {"resources": "k8s:V1ResourceRequirements", "image": str, "imagePullPolicy": str,
                          "env": ["k8s:V1EnvVar"], "envFrom": ["k8s:V1EnvFromSource"],
                          "volumeMounts": ["k8s:V1VolumeMount"], "securityContext": "k8s:V1SecurityContext",
                          "idleTimeoutSeconds": int, "upscalingMode": {"Default", "Aggressive", "Conservative"}},
    "headServiceAnnotations": STR_MAP,
    "suspend": bool,
}
RAY_JOB_SPEC = {
    "entrypoint": str, "runtimeEnvYAML": str, "jobId": str, "metadata": STR_MAP,
    "shutdownAfterJobFinishes": bool, "ttlSecondsAfterFinished": int, "activeDeadlineSeconds": int,
    "backoffLimit": int, "rayClusterSpec": RAY_CLUSTER_SPEC, "clusterSelector": STR_MAP,
    "submitterPodTemplate": "k8s:V1PodTemplateSpec", "submitterConfig": {"backoffLimit": int},
    "submissionMode": {"K8sJobMode", "HTTPMode", "InteractiveMode"}, "entrypointResources": str,
    "entrypointNumCpus": (int, float), "entrypointNumGpus": (int, float), "suspend": bool,
}
OBJECT_META = "k8s:V1ObjectMeta"
RESOURCES = {"RayCluster": RAY_CLUSTER_SPEC, "RayJob": RAY_JOB_SPEC}
REQUIRED = [("headGroupSpec",), ("headGroupSpec", "template"), ("headGroupSpec", "rayStartParams")]
REQUIRED_WORKER = ("groupName", "template", "rayStartParams", "minReplicas", "maxReplicas")


def _check_k8s(value, type_name: str, path: str) -> None:
    import kubernetes.client as k8s

    t = type_name.strip()
    m = re.fullmatch(r"(?:List|list)\[(.+)\]", t)
    if m:
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _check_k8s(item, m.group(1), f"{path}[{i}]")
        return
    m = re.fullmatch(r"(?:Dict|dict)\[str, ?(.+)\]", t) or re.fullmatch(r"dict\(str, ?(.+)\)", t)
    if m:
        assert isinstance(value, dict), path
        for key, item in value.items():
            _check_k8s(item, m.group(1), f"{path}.{key}")
        return
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
                 "datetime": str, "date": str}
    if t in primitive:
        assert isinstance(value, primitive[t]), f"{path}: expected {t}, got {value!r}"
        return
    model = getattr(k8s, t)
    assert isinstance(value, dict), f"{path}: expected an object ({t})"
    json_to_attr = {v: k for k, v in model.attribute_map.items()}
    for key, item in value.items():
        assert key in json_to_attr, f"{path}.{key}: not a field of Kubernetes {t}"
        _check_k8s(item, model.openapi_types[json_to_attr[key]], f"{path}.{key}")


def _check(value, spec, path: str) -> None:
    if isinstance(spec, str) and spec.startswith("k8s:"):
        _check_k8s(value, spec[4:], path)
    elif isinstance(spec, dict) and set(spec) == {"*"}:
        assert isinstance(value, dict), path
        for key, item in value.items():
            _check(item, spec["*"], f"{path}.{key}")
    elif isinstance(spec, dict):
        assert isinstance(value, dict), path
        for key, item in value.items():
            assert key in spec, f"{path}.{key}: not a field of the CRD"
            _check(item, spec[key], f"{path}.{key}")
    elif isinstance(spec, list):
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _check(item, spec[0], f"{path}[{i}]")
    elif isinstance(spec, set):
        assert value in spec, f"{path}: {value!r} not one of {sorted(spec)}"
    else:
        assert isinstance(value, spec) and not (spec is int and isinstance(value, bool)), f"{path}: {value!r}"


def _cluster_spec_checks(spec: dict, where: str) -> None:
    for req in REQUIRED:
        node = spec
        for key in req:
            assert key in node, f"{where}: missing {'.'.join(req)}"
            node = node[key]
    for g in spec["workerGroupSpecs"]:
        assert all(k in g for k in REQUIRED_WORKER), (where, g["groupName"])
        assert g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]
    assert spec["rayVersion"] == _ray_version()
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]
    (container,) = gpu["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    assert "nvidia.com/gpu" not in json.dumps(groups["cpu"])
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_match_the_crds(name):
    doc = yaml.safe_load((CONFIGS / "kuberay" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in RESOURCES
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    _check_k8s(doc["metadata"], "V1ObjectMeta", "metadata")
    _check(doc["spec"], RESOURCES[doc["kind"]], "spec")
    spec = doc["spec"]
    if doc["kind"] == "RayCluster":
        _cluster_spec_checks(spec, name)
        return
    _cluster_spec_checks(spec["rayClusterSpec"], name)
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(runtime_env) <= RuntimeEnv.known_fields
    RuntimeEnv(**runtime_env)  # Ray's own type checks
    secret_like = re.compile(r"(?i)secret|password|(^|_)(key|token)$")
    assert not [k for k in runtime_env.get("env_vars", {}) if secret_like.search(k)]
    script = spec["entrypoint"].split()[1]
    assert script.startswith("/home/ray/selectllm/")
    assert (ROOT / script.removeprefix("/home/ray/selectllm/")).is_file()


def test_kuberay_validator_rejects_unknown_fields():
    bad = yaml.safe_load((CONFIGS / "kuberay" / "raycluster.yaml").read_text())
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(AssertionError, match="maxReplica: not a field of the CRD"):
        _check(bad["spec"], RAY_CLUSTER_SPEC, "spec")
    bad = yaml.safe_load((CONFIGS / "kuberay" / "raycluster.yaml").read_text())
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(AssertionError, match="resource: not a field of Kubernetes V1Container"):
        _check(bad["spec"], RAY_CLUSTER_SPEC, "spec")


# ----------------------------------------------------------------------------- Spark
def _spark_conf(path: Path, sep: str | None = None) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, value = line.split(sep, 1) if sep else line.split(None, 1)
        assert key not in out, f"{path.name}: {key} twice"
        out[key.strip()] = value.strip()
    return out


def _bundled() -> dict[str, str]:
    import pyspark

    jars = [p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")]
    (hadoop,) = [re.fullmatch(r"hadoop-client-api-(.+)\.jar", j).group(1) for j in jars
                 if j.startswith("hadoop-client-api-")]
    (scala,) = [re.fullmatch(r"scala-library-(\d+\.\d+)\..*\.jar", j).group(1) for j in jars
                if j.startswith("scala-library-")]
    return {"hadoop": hadoop, "scala": scala, "spark": pyspark.__version__}


SECRET_KEYS = re.compile(r"(?i)(access\.key|secret\.key|session\.token|secret_access|password)")


def test_s3a_conf_matches_the_bundled_hadoop():
    v = _bundled()
    conf = _spark_conf(CONFIGS / "spark" / "s3a.conf")
    assert all(k.startswith("spark.") for k in conf)
    packages = conf["spark.jars.packages"].split(",")
    assert f"org.apache.hadoop:hadoop-aws:{v['hadoop']}" in packages, (packages, v)
    assert f"org.apache.spark:spark-hadoop-cloud_{v['scala']}:{v['spark']}" in packages, (packages, v)
    s3a = "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert conf["spark.hadoop.fs.s3a.impl"] == conf["spark.hadoop.fs.s3.impl"] == s3a
    # AWS SDK v2 (Hadoop >= 3.4): the default chain, i.e. env, web identity, profiles, instance roles
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == \
        "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
    assert conf["spark.hadoop.fs.s3a.committer.name"] == "magic"

    k8s = _spark_conf(CONFIGS / "spark" / "kubernetes.conf")
    for key, value in conf.items():  # the same S3A settings (the image has the jars instead)
        if key.startswith("spark.hadoop.fs.s3a.") and key in k8s or key.startswith("spark.sql.sources"):
            assert k8s[key] == value, key
    assert k8s["spark.submit.deployMode"] == "cluster" and "spark.jars.packages" not in k8s
    assert k8s["spark.kubernetes.container.image"]

    dataproc = _spark_conf(CONFIGS / "spark" / "dataproc.properties", sep="=")
    for name, c in (("s3a", conf), ("k8s", k8s), ("dataproc", dataproc)):
        assert not [k for k in c if SECRET_KEYS.search(k)], name


def test_dockerfiles_match_the_installed_versions():
    v = _bundled()
    spark_df = (CONFIGS / "docker" / "spark.Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", spark_df, flags=re.M))
    assert args["SPARK_VERSION"] == v["spark"] and args["HADOOP_VERSION"] == v["hadoop"]
    assert args["SCALA_BINARY"] == v["scala"]
    ray_df = (CONFIGS / "docker" / "ray.Dockerfile").read_text()
    assert f"FROM rayproject/ray:{_ray_version()}-py311-" in ray_df
    assert "openjdk-17" in ray_df
    for df in (spark_df, ray_df):
        assert not SECRET_KEYS.search(df)


@pytest.mark.subprocess
def test_emr_files():
    configs = json.loads((CONFIGS / "spark" / "emr-configurations.json").read_text())
    assert {c["Classification"] for c in configs} == {"spark-defaults", "spark-env"}
    (step,) = json.loads((CONFIGS / "spark" / "emr-step.json").read_text())
    assert step["Args"][0] == "spark-submit" and any(a.endswith("jobs/dedup.py") for a in step["Args"])
    i = step["Args"].index("--config")
    assert step["Args"][i + 1].startswith("s3://")
    r = subprocess.run(["bash", "-n", str(CONFIGS / "spark" / "emr-bootstrap.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
