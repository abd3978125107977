"""Spark sized for the machine and the input when the user has not said; ``spark.conf`` keys as given."""

from __future__ import annotations

import pytest

from selectllm import engines
from selectllm.config import load_config
from selectllm.errors import UserError


def test_set_spark_conf_takes_the_dotted_key_whole():
    cfg = load_config(None, ["spark.conf.spark.driver.memory=8g",
                             "spark.conf.spark.sql.adaptive.enabled=false",
                             "spark.conf.spark.sql.shuffle.partitions=64"])
    assert cfg.spark.conf == {"spark.driver.memory": "8g", "spark.sql.adaptive.enabled": "false",
                              "spark.sql.shuffle.partitions": "64"}
    # other sections keep splitting on every dot
    assert load_config(None, ["dedup.near.enabled=false"]).dedup.near.enabled is False


@pytest.mark.parametrize("override", ["spark.conf={spark: {driver: {memory: 8g}}}",
                                      "spark.conf.spark.jars=[a.jar, b.jar]"])
def test_a_nested_spark_conf_value_is_a_one_line_error(override):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config: spark.conf:") and "nested value" in msg


def test_driver_memory_from_the_machine_in_local_mode(monkeypatch):
    monkeypatch.setattr(engines, "machine_memory_bytes", lambda: 24 << 30)
    monkeypatch.setattr(engines.os, "cpu_count", lambda: 16)
    assert engines.driver_memory("local[*]") == f"{(24 << 30) // 4 >> 20}m"  # a quarter of the RAM
    assert engines.driver_memory("local[2]") == "4096m"  # 2 GiB + 1 GiB per task slot
    assert engines.driver_memory("local[3, 2]") == engines.driver_memory("local[3]") == "5120m"
    assert engines.driver_memory("local") == "3072m"
    monkeypatch.setattr(engines, "machine_memory_bytes", lambda: 4 << 30)
    assert engines.driver_memory("local[2]") == "2048m"  # never below 2 GiB
    monkeypatch.setattr(engines, "machine_memory_bytes", lambda: 1 << 40)
    assert engines.driver_memory("local[*]") == "18432m"  # 16 slots
    assert engines.driver_memory("local[100]") == f"{64 << 10}m"  # at most 64 GiB
    assert engines.driver_memory("spark://head:7077") == "2g"
    assert engines.driver_memory("local-cluster[2,1,1024]") == "2g"


def test_real_machine_memory_is_positive():
    assert engines.machine_memory_bytes() > 0


def test_shuffle_partitions_follow_the_input_size():
    assert engines.shuffle_partitions(0, 2) == 2
    assert engines.shuffle_partitions(539 << 20, 2) == 17
    assert engines.shuffle_partitions(100 << 30, 8) == 3200
    assert engines.shuffle_partitions(1 << 50, 8) == engines.MAX_SHUFFLE_PARTITIONS


class _Conf(dict):
    def contains(self, key):
        return key in self


class _FakeSpark:
    def __init__(self, preset: dict):
        outer = self
        self.values: dict = {}

        class SC:
            defaultParallelism = 4

            def getConf(self):
                return _Conf(preset)

        class RuntimeConf:
            def set(self, k, v):
                outer.values[k] = v

        self.sparkContext, self.conf = SC(), RuntimeConf()


def test_size_shuffle_only_when_nobody_set_it():
    spark = _FakeSpark({})
    assert engines.size_shuffle(spark, load_config(None), 1 << 30) == 32
    assert spark.values == {"spark.sql.shuffle.partitions": "32"}
    user = load_config(None, ["spark.conf.spark.sql.shuffle.partitions=5"])
    assert engines.size_shuffle(_FakeSpark({}), user, 1 << 30) is None
    assert engines.size_shuffle(_FakeSpark({"spark.sql.shuffle.partitions": "7"}), load_config(None), 1 << 30) is None
    assert "spark.sql.shuffle.partitions" not in engines.SPARK_DEFAULTS
