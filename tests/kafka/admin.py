"""Kafka admin requests through confluent-kafka's AdminClient (librdkafka), one command per
run; each prints its outcome as JSON lines. An error the node answers with is a result
(printed by its Kafka name, e.g. "TOPIC_ALREADY_EXISTS"); no answer is a failure.

usage: admin.py --bootstrap HOST:PORT COMMAND ...
  create NAME PARTITIONS [KEY=VALUE...]  {"topic", "error"}
  add-partitions NAME TOTAL              {"topic", "error"}
  delete NAME...                         {"topic", "error"} per topic
  topics                                 {"topic", "partitions"} per topic (metadata)
  configs NAME                           {"name", "value", "is_default"} per config
  broker-configs ID                      the same for broker ID (its static settings)
  alter-config NAME OP KEY [VALUE]       IncrementalAlterConfigs (OP: set, delete, append,
                                         subtract) {"topic", "error"}
  delete-records NAME PARTITION OFFSET   {"topic", "partition", "low_watermark", "error"}
  groups GROUP TOPIC                     a confluent-kafka consumer joins GROUP on TOPIC;
                                         then {"step": "listed", "groups"} (ListGroups),
                                         {"step": "joined", ...} (DescribeGroups), the
                                         consumer leaves, {"step": "left", ...}
  list-groups                            {"group", "type", "state"} per group (ListGroups)
  describe-group GROUP                   {"group", "state", "type", "members", ...}
  elect-leaders preferred|unclean [TOPIC:PARTITION...]
                                         ElectLeaders (none named: every partition)
                                         {"topic", "partition", "error"} per partition
  set-user NAME MECHANISM PASSWORD [ITERATIONS]
                                         AlterUserScramCredentials upsertion (the client
                                         salts the password) {"user", "error"}
  delete-user NAME MECHANISM             AlterUserScramCredentials deletion {"user", "error"}
  users [NAME...]                        DescribeUserScramCredentials (none named: every
                                         user) {"user", "credentials": [[MECHANISM,
                                         ITERATIONS]...], "error"} per user
  acl-add TYPE NAME PATTERN PRINCIPAL OPERATION PERMISSION
                                         CreateAcls, e.g. TOPIC orders PREFIXED User:alice READ
                                         ALLOW (host *) {"error"}
  acls                                   DescribeAcls (everything) {"type", "name", "pattern",
                                         "principal", "host", "operation", "permission"} each
  acl-delete TYPE NAME PATTERN PRINCIPAL OPERATION PERMISSION
                                         DeleteAcls with that filter (ANY where wanted; NAME
                                         and PRINCIPAL "-" for any) {"deleted", "error"}
  topic-error NAME                       Metadata for NAME alone: {"topic", "error"}
The --tls-* and --sasl-* arguments of common.add_security_arguments secure the connection.
"""

import argparse
import time

from common import add_security_arguments, confluent_security, deadline, emit, fail, run

REQUEST_TIMEOUT_S = 15


def error_name(future):
    """None when the admin request's future succeeded, else the Kafka error's name."""
    from confluent_kafka import KafkaException

    try:
        future.result(timeout=REQUEST_TIMEOUT_S)
        return None
    except KafkaException as e:
        return e.args[0].name()


def create(admin, args):
    from confluent_kafka.admin import NewTopic

    configs = dict(item.split("=", 1) for item in args.rest[2:])
    topic = NewTopic(args.rest[0], num_partitions=int(args.rest[1]), replication_factor=1, config=configs)
    for name, future in admin.create_topics([topic], request_timeout=REQUEST_TIMEOUT_S).items():
        emit(topic=name, error=error_name(future))


def add_partitions(admin, args):
    from confluent_kafka.admin import NewPartitions

    increase = NewPartitions(args.rest[0], int(args.rest[1]))
    for name, future in admin.create_partitions([increase], request_timeout=REQUEST_TIMEOUT_S).items():
        emit(topic=name, error=error_name(future))


def delete(admin, args):
    for name, future in admin.delete_topics(args.rest, request_timeout=REQUEST_TIMEOUT_S).items():
        emit(topic=name, error=error_name(future))


def topics(admin, _args):
    for name, topic in sorted(admin.list_topics(timeout=REQUEST_TIMEOUT_S).topics.items()):
        if topic.error is not None:
            fail(f"metadata of {name}: {topic.error}")
        emit(topic=name, partitions=sorted(topic.partitions))


def configs(admin, args, kind="TOPIC"):
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource(getattr(ConfigResource.Type, kind), args.rest[0])
    for future in admin.describe_configs([resource], request_timeout=REQUEST_TIMEOUT_S).values():
        for name, entry in sorted(future.result(timeout=REQUEST_TIMEOUT_S).items()):
            emit(name=name, value=entry.value, is_default=entry.is_default)


def alter_config(admin, args):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    name, op, key = args.rest[:3]
    value = args.rest[3] if len(args.rest) > 3 else None
    op_type = {"set": AlterConfigOpType.SET, "delete": AlterConfigOpType.DELETE,
               "append": AlterConfigOpType.APPEND, "subtract": AlterConfigOpType.SUBTRACT}[op]
    entry = ConfigEntry(key, value, incremental_operation=op_type)
    resource = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource], request_timeout=REQUEST_TIMEOUT_S).values():
        emit(topic=name, error=error_name(future))


def delete_records(admin, args):
    from confluent_kafka import TopicPartition

    name, partition, offset = args.rest[0], int(args.rest[1]), int(args.rest[2])
    for tp, future in admin.delete_records([TopicPartition(name, partition, offset)],
                                           request_timeout=REQUEST_TIMEOUT_S).items():
        error, low = error_name(future), None
        if error is None:
            low = future.result().low_watermark
        emit(topic=tp.topic, partition=tp.partition, low_watermark=low, error=error)


def describe_group(admin, group):
    description = admin.describe_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)[group].result(
        timeout=REQUEST_TIMEOUT_S
    )
    target = lambda m: sorted([tp.topic, tp.partition] for tp in m.target_assignment.topic_partitions) if m.target_assignment else None
    return {
        "group": description.group_id,
        "state": description.state.name,
        "type": description.type.name,
        "simple": description.is_simple_consumer_group,
        "assignor": description.partition_assignor,
        "members": [
            {
                "client_id": m.client_id,
                "assignment": sorted([tp.topic, tp.partition] for tp in m.assignment.topic_partitions),
                "target": target(m),
            }
            for m in description.members
        ],
    }


def groups(admin, args):
    from confluent_kafka import Consumer

    group, topic = args.rest
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": group,
            "client.id": "admin-py-member",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])
    while not consumer.assignment():  # joins the group; bounded by the deadline
        consumer.poll(0.2)
    listed = admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S).result(timeout=REQUEST_TIMEOUT_S)
    if listed.errors:
        fail(f"ListGroups: {listed.errors}")
    emit(step="listed", groups=sorted(g.group_id for g in listed.valid))
    emit(step="joined", **describe_group(admin, group))
    consumer.close()
    # LeaveGroup is answered before close returns; the group may still be settling.
    described = describe_group(admin, group)
    for _ in range(50):
        if described["state"] == "EMPTY":
            break
        time.sleep(0.1)
        described = describe_group(admin, group)
    emit(step="left", **described)


def describe(admin, args):
    emit(**describe_group(admin, args.rest[0]))


def list_groups(admin, _args):
    listed = admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S).result(timeout=REQUEST_TIMEOUT_S)
    if listed.errors:
        fail(f"ListGroups: {listed.errors}")
    for g in sorted(listed.valid, key=lambda g: g.group_id):
        emit(group=g.group_id, type=g.type.name, state=g.state.name)


def elect_leaders(admin, args):
    from confluent_kafka import ElectionType, KafkaException, TopicPartition

    kind = {"preferred": ElectionType.PREFERRED, "unclean": ElectionType.UNCLEAN}[args.rest[0]]
    partitions = None
    if args.rest[1:]:
        partitions = [TopicPartition(t, int(p)) for t, p in (a.rsplit(":", 1) for a in args.rest[1:])]
    try:
        results = admin.elect_leaders(kind, partitions).result(
            timeout=REQUEST_TIMEOUT_S
        )
    except KafkaException as e:
        fail(f"ElectLeaders: {e}")
    for tp, error in sorted(results.items(), key=lambda item: (item[0].topic, item[0].partition)):
        emit(topic=tp.topic, partition=tp.partition, error=error.name() if error else None)


def alter_users(admin, alterations):
    futures = admin.alter_user_scram_credentials(alterations, request_timeout=REQUEST_TIMEOUT_S)
    for user, future in sorted(futures.items()):
        emit(user=user, error=error_name(future))


def set_user(admin, args):
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    name, mechanism, password = args.rest[:3]
    iterations = int(args.rest[3]) if len(args.rest) > 3 else 4096
    info = ScramCredentialInfo(ScramMechanism[mechanism.replace("-", "_")], iterations)
    alter_users(admin, [UserScramCredentialUpsertion(name, info, password.encode())])


def delete_user(admin, args):
    from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

    name, mechanism = args.rest[:2]
    alter_users(admin, [UserScramCredentialDeletion(name, ScramMechanism[mechanism.replace("-", "_")])])


def users(admin, args):
    from confluent_kafka import KafkaException

    try:
        if args.rest:
            futures = admin.describe_user_scram_credentials(args.rest, request_timeout=REQUEST_TIMEOUT_S)
            described = {}
            for user, future in futures.items():
                try:
                    described[user] = future.result(timeout=REQUEST_TIMEOUT_S)
                except KafkaException as e:
                    emit(user=user, credentials=[], error=e.args[0].name())
        else:
            described = admin.describe_user_scram_credentials(request_timeout=REQUEST_TIMEOUT_S).result(
                timeout=REQUEST_TIMEOUT_S
            )
    except KafkaException as e:
        fail(f"DescribeUserScramCredentials: {e}")
    for user, description in sorted(described.items()):
        credentials = sorted(
            [info.mechanism.name.replace("_", "-"), info.iterations] for info in description.scram_credential_infos
        )
        emit(user=user, credentials=credentials, error=None)


def acl_enums(args):
    from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    kind, name, pattern, principal, operation, permission = args.rest[:6]
    return (
        ResourceType[kind],
        None if name == "-" else name,
        ResourcePatternType[pattern],
        None if principal == "-" else principal,
        AclOperation[operation],
        AclPermissionType[permission],
    )


def acl_add(admin, args):
    from confluent_kafka.admin import AclBinding

    kind, name, pattern, principal, operation, permission = acl_enums(args)
    binding = AclBinding(kind, name, pattern, principal, "*", operation, permission)
    for _, future in admin.create_acls([binding], request_timeout=REQUEST_TIMEOUT_S).items():
        emit(error=error_name(future))


def acls(admin, _args):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    try:
        bindings = admin.describe_acls(everything, request_timeout=REQUEST_TIMEOUT_S).result(timeout=REQUEST_TIMEOUT_S)
    except KafkaException as e:
        emit(error=e.args[0].name())
        return
    rows = sorted(
        (b.restype.name, b.name, b.resource_pattern_type.name, b.principal, b.host, b.operation.name, b.permission_type.name)
        for b in bindings
    )
    for kind, name, pattern, principal, host, operation, permission in rows:
        emit(type=kind, name=name, pattern=pattern, principal=principal, host=host, operation=operation, permission=permission)


def acl_delete(admin, args):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AclBindingFilter

    kind, name, pattern, principal, operation, permission = acl_enums(args)
    binding_filter = AclBindingFilter(kind, name, pattern, principal, None, operation, permission)
    for _, future in admin.delete_acls([binding_filter], request_timeout=REQUEST_TIMEOUT_S).items():
        try:
            emit(deleted=len(future.result(timeout=REQUEST_TIMEOUT_S)), error=None)
        except KafkaException as e:
            emit(deleted=0, error=e.args[0].name())


def topic_error(admin, args):
    metadata = admin.list_topics(topic=args.rest[0], timeout=REQUEST_TIMEOUT_S)
    topic = metadata.topics[args.rest[0]]
    emit(topic=args.rest[0], error=topic.error.name() if topic.error else None)


def main():
    from confluent_kafka.admin import AdminClient

    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--timeout", type=int, default=60)
    parser.add_argument(
        "command",
        choices=[
            "create",
            "add-partitions",
            "delete",
            "topics",
            "configs",
            "broker-configs",
            "alter-config",
            "delete-records",
            "groups",
            "list-groups",
            "describe-group",
            "elect-leaders",
            "set-user",
            "delete-user",
            "users",
            "acl-add",
            "acls",
            "acl-delete",
            "topic-error",
        ],
    )
    add_security_arguments(parser)
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args()
    deadline(args.timeout)
    admin = AdminClient({"bootstrap.servers": args.bootstrap, **confluent_security(args)})
    commands = {
        "create": create,
        "add-partitions": add_partitions,
        "delete": delete,
        "topics": topics,
        "configs": configs,
        "broker-configs": lambda admin, args: configs(admin, args, kind="BROKER"),
        "alter-config": alter_config,
        "delete-records": delete_records,
        "groups": groups,
        "list-groups": list_groups,
        "describe-group": describe,
        "elect-leaders": elect_leaders,
        "set-user": set_user,
        "delete-user": delete_user,
        "users": users,
        "acl-add": acl_add,
        "acls": acls,
        "acl-delete": acl_delete,
        "topic-error": topic_error,
    }
    commands[args.command](admin, args)


if __name__ == "__main__":
    run(main)
