"""The ClickHouse spellings, as text (the cluster and chdb tests run them for real)."""

from __future__ import annotations

import pytest

from msgcube.storage import clickhouse_dialect as ch
from support.clickhouse_tables import COLUMNS, create_messages


def test_cluster_form_is_a_replicated_local_table_and_a_distributed_one() -> None:
    target = ch.Target("mc", "prod")
    local, distributed = create_messages(target)
    assert local == (
        "CREATE TABLE IF NOT EXISTS `mc`.`messages_local` ON CLUSTER `prod`"
        " (`account_id` UInt32, `msg_id` UInt64, `user_id` UInt64, `create_time` DateTime,"
        " `msg_type_name` String, `version` UInt64)"
        " ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/mc/messages_local',"
        " '{replica}', `version`) PARTITION BY toYYYYMM(create_time)"
        " ORDER BY (`account_id`, `msg_id`)"
    )
    assert distributed == (
        "CREATE TABLE IF NOT EXISTS `mc`.`messages` ON CLUSTER `prod` AS `mc`.`messages_local`"
        " ENGINE = Distributed(`prod`, `mc`, `messages_local`, sipHash64(`account_id`))"
    )
    assert ch.insert_settings(target, timeout_ms=5000) == {
        "insert_distributed_sync": 1,
        "insert_quorum": 2,
        "insert_quorum_timeout": 5000,
    }
    assert ch.drop_table(target, "messages") == [
        "DROP TABLE IF EXISTS `mc`.`messages` ON CLUSTER `prod`",
        "DROP TABLE IF EXISTS `mc`.`messages_local` ON CLUSTER `prod`",
    ]


def test_local_form_is_one_plain_table_for_chdb() -> None:
    target = ch.Target("mc")
    [create] = ch.create_table(target, "days", COLUMNS[:2], ["account_id"])
    assert create == (
        "CREATE TABLE IF NOT EXISTS `mc`.`days` (`account_id` UInt32, `msg_id` UInt64)"
        " ENGINE = MergeTree() ORDER BY (`account_id`)"
    )
    assert ch.create_database(target) == "CREATE DATABASE IF NOT EXISTS `mc`"
    assert ch.local_table(target, "days") == ch.qualified(target, "days") == "`mc`.`days`"
    assert ch.insert_settings(target) == {}


def test_quoting_and_refusals() -> None:
    assert ch.quote_ident("a`b\\c") == "`a\\`b\\\\c`"
    assert ch.quote_string("it's \\") == "'it\\'s \\\\'"
    with pytest.raises(ValueError, match="version column"):
        ch.create_table(ch.Target("mc"), "t", COLUMNS, ["msg_id"], version="version")
    with pytest.raises(ValueError, match="columns and an ORDER BY"):
        ch.create_table(ch.Target("mc"), "t", COLUMNS, [])


def test_adding_a_column_alters_the_local_tables_and_remakes_the_distributed_one() -> None:
    """18.16 refuses ``ALTER … ON CLUSTER`` on a Distributed table (code 371) and knows no
    ``ADD COLUMN IF NOT EXISTS``; the real cluster runs these in test_analytics_upgrade."""
    key = f"{ch.USER_KEY_TYPE} DEFAULT {ch.user_key('openid')}"
    assert ch.add_column(ch.Target("mc"), "messages", "k", key) == [
        "ALTER TABLE `mc`.`messages` ADD COLUMN `k` FixedString(16) DEFAULT sipHash128(openid)"
    ]
    alter, drop, create = ch.add_column(ch.Target("mc", "prod"), "messages", "k", key)
    assert alter == (
        "ALTER TABLE `mc`.`messages_local` ON CLUSTER `prod`"
        " ADD COLUMN `k` FixedString(16) DEFAULT sipHash128(openid)"
    )
    assert drop == "DROP TABLE IF EXISTS `mc`.`messages` ON CLUSTER `prod`"
    assert create == ch.create_table(ch.Target("mc", "prod"), "messages", COLUMNS, ["msg_id"])[1]
    with pytest.raises(ValueError, match="needs a cluster"):
        ch.create_distributed(ch.Target("mc"), "messages")
