"""template.yaml is what a team deploys: these tests hold it to what the code needs and no more.

They read the template as the local stack does (short-form tags as their long forms), so they run
without the SAM CLI. The checks that need the tools (cfn-lint with the serverless rules, checkov,
``sam validate --lint``, ``sam build``) run in ``make validate`` (scripts/check-template.sh), before
pytest in ``make test``; the last test here inspects what ``sam build`` made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from mailqueue import settings as settings_module
from mailqueue.ses_events import OUTCOMES
from mailqueue.settings import Settings
from mailqueue.shardgroups import ShardGroup, shard_group_of
from mailqueue.statemachine import Status
from mailqueue.store import ARRIVAL_INDEX, DEADLINE_INDEX, STATUS_INDEX, SUPPRESSION_PARTITION
from mailqueue.templates import HEADS
from mailqueue_dev.template import TEMPLATE, Stack, build, load_template
from moto import mock_aws

ROOT = TEMPLATE.parent
DOC = load_template()
RESOURCES: dict[str, dict[str, Any]] = DOC["Resources"]
FUNCTIONS = {logical_id: r for logical_id, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}
NO_VALUE = {"Ref": "AWS::NoValue"}
# The SES configuration set every email is sent with: the one named by the parameter, or the stack's own.
CONFIGURATION_SET_IN_USE = {
    "Fn::If": ["HasConfigurationSet", {"Ref": "ConfigurationSetName"}, {"Ref": "ConfigurationSet"}]
}
SAMPLE_EVENTS = ROOT / "events" / "events"


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {logical_id: r for logical_id, r in RESOURCES.items() if r["Type"] == kind}


def ref(value: Any) -> str | None:
    """The logical id a Ref or GetAtt points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
    return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A policy's statements, both branches of each conditional one."""
    for statement in as_list(document["Statement"]):
        if "Fn::If" in statement:
            _, *branches = statement["Fn::If"]
            yield from (branch for branch in branches if branch != NO_VALUE)
        else:
            yield statement


def role_of(function_id: str) -> str:
    role = ref(FUNCTIONS[function_id]["Properties"]["Role"])
    assert role is not None
    return role


def role_statements(function_id: str) -> list[dict[str, Any]]:
    """Every statement that applies to a function's role: its inline policies and RolePolicies naming it."""
    role_id = role_of(function_id)
    found = [
        statement
        for policy in RESOURCES[role_id]["Properties"].get("Policies", [])
        for statement in statements(policy["PolicyDocument"])
    ]
    for policy in of_type("AWS::IAM::RolePolicy").values():
        if ref(policy["Properties"]["RoleName"]) == role_id:
            found.extend(statements(policy["Properties"]["PolicyDocument"]))
    return found


def evaluate(value: Any, parameters: dict[str, Any], keep: bool = False) -> Any:
    """Ref to a parameter, Fn::Join and Fn::Split, as CloudFormation computes them; with ``keep``, other
    intrinsics are left as they are, each one an item of a split (no separator inside it)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return parameters[value["Ref"]]
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            resolved = as_list(evaluate(parts, parameters, keep))
            if keep and any(isinstance(part, dict) for part in resolved):
                assert separator == ",", "only a list can hold an unresolved item"
                return [item for part in resolved for item in (part if isinstance(part, list) else [part])]
            return separator.join(str(part) for part in resolved)
        if "Fn::Split" in value:
            separator, source = value["Fn::Split"]
            resolved = evaluate(source, parameters, keep)
            if isinstance(resolved, list):
                pieces = (part.split(separator) if isinstance(part, str) else [part] for part in resolved)
                return [item for piece in pieces for item in piece]
            return str(resolved).split(separator)
        if keep:
            return value
        raise AssertionError(f"unexpected intrinsic {value}")
    if isinstance(value, list):
        flat: list[Any] = []
        for item in value:
            flat.extend(as_list(evaluate(item, parameters, keep)))
        return flat
    return value


# --- what the code names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logical_id", "kind"),
    [
        ("EmailsTable", "AWS::DynamoDB::Table"),
        ("IdempotencyTable", "AWS::DynamoDB::Table"),
        ("SendQueue", "AWS::SQS::Queue"),
        ("HighPrioritySendQueue", "AWS::SQS::Queue"),
        ("SendDeadLetterQueue", "AWS::SQS::Queue"),
        ("HighPriorityDeadLetterQueue", "AWS::SQS::Queue"),
        ("AttachmentsBucket", "AWS::S3::Bucket"),
        ("SharedLayer", "AWS::Serverless::LayerVersion"),
        ("HttpApi", "AWS::Serverless::HttpApi"),
        ("ApiFunction", "AWS::Serverless::Function"),
        ("SenderFunction", "AWS::Serverless::Function"),
        ("RequeueFunction", "AWS::Serverless::Function"),
        ("EventsFunction", "AWS::Serverless::Function"),
        ("EventsDeadLetterQueue", "AWS::SQS::Queue"),
        ("ConfigurationSet", "AWS::SES::ConfigurationSet"),
        ("SesEventsDestination", "AWS::SES::ConfigurationSetEventDestination"),
        ("NotifyFunction", "AWS::Serverless::Function"),
        ("StatusEventBus", "AWS::Events::EventBus"),
    ],
)
def test_the_resources_the_code_names_are_defined(logical_id: str, kind: str) -> None:
    assert RESOURCES[logical_id]["Type"] == kind


@pytest.mark.parametrize(
    ("function_id", "handler"),
    [
        ("ApiFunction", "api.handler"),
        ("SenderFunction", "sender.handler"),
        ("RequeueFunction", "requeue.handler"),
        ("EventsFunction", "ses_events.handler"),
        ("NotifyFunction", "notify.handler"),
    ],
)
def test_each_handler_is_a_module_of_its_code_folder(function_id: str, handler: str) -> None:
    properties = FUNCTIONS[function_id]["Properties"]
    assert properties["Handler"] == handler
    module, attribute = handler.split(".")
    source = (ROOT / properties["CodeUri"] / f"{module}.py").read_text()
    assert f"def {attribute}(" in source


def test_the_functions_run_python_3_13_on_arm64_with_the_shared_layer() -> None:
    defaults = DOC["Globals"]["Function"]
    assert defaults["Runtime"] == "python3.13"
    assert defaults["Architectures"] == ["arm64"]
    assert defaults["Layers"] == [{"Ref": "SharedLayer"}]
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"} <= set(
        defaults["Environment"]["Variables"]
    )
    layer = RESOURCES["SharedLayer"]
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def tracing_of(function_id: str) -> tuple[str, str]:
    """The function's X-Ray mode and its POWERTOOLS_TRACE_DISABLED, each from the function or the Globals."""
    defaults = DOC["Globals"]["Function"]
    properties = FUNCTIONS[function_id]["Properties"]
    variables = {
        **defaults["Environment"]["Variables"],
        **properties.get("Environment", {}).get("Variables", {}),
    }
    return properties.get("Tracing", defaults.get("Tracing", "PassThrough")), variables.get("POWERTOOLS_TRACE_DISABLED")


def test_only_the_api_samples_traces_and_only_it_loads_the_x_ray_sdk() -> None:
    # Active where requests enter; the functions behind it record a trace only when it reaches them sampled
    assert tracing_of("ApiFunction") == ("Active", "false")
    for function_id in ("SenderFunction", "RequeueFunction", "EventsFunction", "NotifyFunction"):
        assert tracing_of(function_id) == ("PassThrough", "true"), function_id


def test_lambda_logs_json_without_its_start_end_and_report_lines_and_keeps_the_metric_lines() -> None:
    logging_config = DOC["Globals"]["Function"]["LoggingConfig"]
    assert logging_config["LogFormat"] == "JSON"
    # START, END and REPORT are INFO: dropped; Lambda's warnings and errors (timeouts, crashes) kept
    assert logging_config["SystemLogLevel"] == "WARN"
    # Lambda files EMF lines (no "level" key) as INFO: the application level must never rise above INFO
    assert logging_config["ApplicationLogLevel"] == {"Fn::If": ["DebugLogs", "DEBUG", "INFO"]}
    assert DOC["Conditions"]["DebugLogs"] == {"Fn::Equals": [{"Ref": "LogLevel"}, "DEBUG"]}
    assert not any("LoggingConfig" in function["Properties"] for function in FUNCTIONS.values())


REQUIRED_ENVIRONMENT = {
    "ApiFunction": {
        "IDEMPOTENCY_TABLE_NAME",
        "SEND_RATE",
        "SEND_DEAD_LETTER_QUEUE_URL",
        "HIGH_PRIORITY_DEAD_LETTER_QUEUE_URL",
        "EVENTS_DEAD_LETTER_QUEUE_URL",
    },
    "SenderFunction": {"SES_CONFIGURATION_SET", "SEND_RATE", "SENDER_CONCURRENCY"},
    "RequeueFunction": set(),
    "EventsFunction": set(),
    "NotifyFunction": {"STATUS_EVENT_BUS", "PUBLISH_STATUSES"},
}
EVERY_FUNCTION_ENVIRONMENT = {
    "TABLE_NAME",
    "SEND_QUEUE_URL",
    "HIGH_PRIORITY_QUEUE_URL",
    "ATTACHMENTS_BUCKET",
    "SENDING_IDENTITIES",
    "MAX_ATTEMPTS",
    "RETENTION_DAYS",
}


@pytest.mark.parametrize("function_id", sorted(REQUIRED_ENVIRONMENT))
def test_each_function_environment_resolves_to_valid_settings(stack: Stack, function_id: str) -> None:
    # Given the stack built from the template, as the local stack and the tests build it
    environment = stack.function_environment(function_id)

    # Then the function gets what its code reads, and nothing the settings do not know
    renamed: dict[str, str] = getattr(settings_module, "_ENV_NAMES", {})
    settings_names = {renamed.get(name, name.upper()) for name in Settings.model_fields}
    names = set(environment)
    assert EVERY_FUNCTION_ENVIRONMENT | REQUIRED_ENVIRONMENT[function_id] <= names
    assert {name for name in names if not name.startswith("POWERTOOLS_")} <= settings_names
    # every value resolved (no intrinsic left over), and the settings accept them
    assert not [value for value in environment.values() if "Fn::" in value or "{'Ref'" in value]
    settings = Settings.from_env(environment)
    assert settings.table_name == stack.names["EmailsTable"]
    assert settings.sending_identities == ("example.com",)
    assert settings.queue_url("high") == stack.names["HighPrioritySendQueue"]
    if function_id == "SenderFunction":
        # with no ConfigurationSetName, the stack's own set
        assert settings.configuration_set == stack.names["ConfigurationSet"]
    if function_id == "ApiFunction":
        # GET /stats counts each dead-letter queue
        assert settings.dead_letter_queue_urls() == {
            "send": stack.names["SendDeadLetterQueue"],
            "high_priority": stack.names["HighPriorityDeadLetterQueue"],
            "events": stack.names["EventsDeadLetterQueue"],
        }


def test_each_reader_gets_a_template_of_its_own_read_again_once_the_file_changes(tmp_path: Path) -> None:
    # Given a template read once (every stack the tests build reads it: it is parsed once per process)
    path = tmp_path / "template.yaml"
    path.write_text("Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n    Properties:\n      Arn: !GetAtt Dlq.Arn\n")
    first = load_template(path)

    # When a reader changes what it got
    first["Resources"]["Queue"]["Type"] = "changed"

    # Then the next reader still gets the file's content
    assert load_template(path)["Resources"]["Queue"] == {
        "Type": "AWS::SQS::Queue",
        "Properties": {"Arn": {"Fn::GetAtt": ["Dlq", "Arn"]}},
    }
    # And a change to the file is read, not an earlier parse
    path.write_text("Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n")
    assert load_template(path) == {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}}}


def test_a_named_configuration_set_is_used_instead_of_one_of_the_stack() -> None:
    # Given a deployment that names a configuration set of its own
    with mock_aws():
        stack = build(boto3.session.Session(region_name="us-east-1"), overrides={"ConfigurationSetName": "team-set"})

        # Then the stack builds no set, and the sender and the events rule use the named one
        assert "ConfigurationSet" not in stack.names
        assert stack.function_environment("SenderFunction")["SES_CONFIGURATION_SET"] == "team-set"
        [rule] = stack.event_sources("EventsFunction", "EventBridgeRule")
        assert rule["Pattern"]["detail"]["mail"]["tags"]["ses:configuration-set"] == ["team-set"]


def test_the_table_keys_indexes_and_ttl_are_those_the_store_uses() -> None:
    table = RESOURCES["EmailsTable"]["Properties"]
    attribute_types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    keys = {index["IndexName"]: index["KeySchema"] for index in table["GlobalSecondaryIndexes"]}

    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert keys[DEADLINE_INDEX] == [
        {"AttributeName": "shard", "KeyType": "HASH"},
        {"AttributeName": "deadline", "KeyType": "RANGE"},
    ]
    assert keys[STATUS_INDEX] == [
        {"AttributeName": "status_shard", "KeyType": "HASH"},
        {"AttributeName": "pk", "KeyType": "RANGE"},
    ]
    # Keys only, and keys that never change: an email's writes after its enqueue touch it no more.
    assert keys[ARRIVAL_INDEX] == [
        {"AttributeName": "arrival_shard", "KeyType": "HASH"},
        {"AttributeName": "pk", "KeyType": "RANGE"},
    ]
    projections = {index["IndexName"]: index["Projection"] for index in table["GlobalSecondaryIndexes"]}
    assert projections[ARRIVAL_INDEX] == {"ProjectionType": "KEYS_ONLY"}
    assert attribute_types == {
        "pk": "S",
        "sk": "S",
        "shard": "N",
        "deadline": "S",
        "status_shard": "S",
        "arrival_shard": "N",
    }
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["Fn::If"][2] == {"SSEEnabled": True}


# --- queues and the sender's event sources --------------------------------------------------------------


def test_each_send_queue_redrives_to_a_dead_letter_queue_of_its_own() -> None:
    sources = [event["Properties"] for event in FUNCTIONS["SenderFunction"]["Properties"]["Events"].values()]
    queues = [ref(source["Queue"]) for source in sources]
    assert sorted(q for q in queues if q) == ["HighPrioritySendQueue", "SendQueue"]

    dead_letter_queues = set()
    for queue_id in ("SendQueue", "HighPrioritySendQueue"):
        redrive = RESOURCES[queue_id]["Properties"]["RedrivePolicy"]
        dead_letter_queues.add(ref(redrive["deadLetterTargetArn"]))
        assert 1 < redrive["maxReceiveCount"] <= 10
    assert dead_letter_queues == {"SendDeadLetterQueue", "HighPriorityDeadLetterQueue"}
    # no function-level DeadLetterQueue: it applies to asynchronous invocations, not to an SQS trigger
    assert not [f for f in FUNCTIONS.values() if "DeadLetterQueue" in f["Properties"]]


def test_a_message_stays_invisible_for_six_times_the_sender_timeout() -> None:
    timeout = FUNCTIONS["SenderFunction"]["Properties"].get("Timeout", DOC["Globals"]["Function"]["Timeout"])
    for queue_id in ("SendQueue", "HighPrioritySendQueue"):
        assert RESOURCES[queue_id]["Properties"]["VisibilityTimeout"] >= 6 * timeout
    # a claim outlives the invocation that took it, so only a dead sender's claim expires
    assert Settings().claim_seconds > timeout


def test_the_sender_reports_partial_batch_failures_within_its_concurrency() -> None:
    minimum = DOC["Parameters"]["SenderMaxConcurrency"]["MinValue"]
    assert minimum >= 2  # AWS's minimum MaximumConcurrency for an SQS event source
    for event in FUNCTIONS["SenderFunction"]["Properties"]["Events"].values():
        assert event["Type"] == "SQS"
        source = event["Properties"]
        assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert source["BatchSize"] <= 10
        assert source["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "SenderMaxConcurrency"}}


def with_parameters(**parameters: str) -> Stack:
    """The template's values under these parameters (the others at their defaults), without building it."""
    values = {name: str(spec.get("Default", "")) for name, spec in DOC["Parameters"].items()}
    values.update({"AWS::Region": "us-east-1", "AWS::URLSuffix": "amazonaws.com", **parameters})
    return Stack(template=DOC, prefix="mailqueue", parameters=values)


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def at_rest(stack: Stack) -> dict[str, Any]:
    """How each table, queue, bucket and log group is encrypted, under ``stack``'s parameters."""
    found: dict[str, Any] = {}
    for logical_id, resource in RESOURCES.items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::DynamoDB::Table":
            found[logical_id] = stack.resolve(properties["SSESpecification"])
        elif resource["Type"] == "AWS::SQS::Queue":
            found[logical_id] = stack.resolve(
                {key: properties.get(key, NO_VALUE) for key in ("SqsManagedSseEnabled", "KmsMasterKeyId")}
            )
        elif resource["Type"] == "AWS::S3::Bucket":
            rules = stack.resolve(properties["BucketEncryption"]["ServerSideEncryptionConfiguration"])
            found[logical_id] = [rule["ServerSideEncryptionByDefault"] for rule in rules]
        elif resource["Type"] in {"AWS::Logs::LogGroup", "AWS::SecretsManager::Secret"}:
            found[logical_id] = stack.resolve({"KmsKeyId": properties.get("KmsKeyId", NO_VALUE)})
    return found


def test_without_a_key_aws_owned_and_managed_keys_encrypt_everything() -> None:
    encryption = at_rest(with_parameters())
    # tables, queues, bucket, log groups; and the webhooks' two queues, log group and secret
    assert len(encryption) == 2 + 6 + 1 + 6 + 4
    for logical_id, how in encryption.items():
        kind = RESOURCES[logical_id]["Type"]
        expected = {
            "AWS::DynamoDB::Table": {"SSEEnabled": True},
            "AWS::SQS::Queue": {"SqsManagedSseEnabled": True},
            "AWS::S3::Bucket": [{"SSEAlgorithm": "AES256"}],
            "AWS::Logs::LogGroup": {},
            "AWS::SecretsManager::Secret": {},
        }[kind]
        assert how == expected, logical_id


def test_with_a_key_every_table_queue_bucket_and_log_group_uses_it() -> None:
    encryption = at_rest(with_parameters(KmsKeyArn=KEY_ARN))
    for logical_id, how in encryption.items():
        kind = RESOURCES[logical_id]["Type"]
        expected = {
            "AWS::DynamoDB::Table": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_ARN},
            "AWS::SQS::Queue": {"SqsManagedSseEnabled": False, "KmsMasterKeyId": KEY_ARN},
            "AWS::S3::Bucket": [{"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN}],
            "AWS::Logs::LogGroup": {"KmsKeyId": KEY_ARN},
            "AWS::SecretsManager::Secret": {"KmsKeyId": KEY_ARN},
        }[kind]
        assert how == expected, logical_id


# The services each role reaches the key through: the ones that encrypt what it reads or writes.
KMS_SERVICES = {
    "ApiFunction": {"dynamodb", "sqs", "s3"},
    "SenderFunction": {"dynamodb", "sqs", "s3"},
    "RequeueFunction": {"dynamodb", "sqs"},
    "EventsFunction": {"dynamodb", "sqs"},
    "NotifyFunction": {"dynamodb", "sqs"},
    "WebhookFunction": {"sqs", "secretsmanager"},
}


@pytest.mark.parametrize("function_id", sorted(KMS_SERVICES))
def test_each_role_may_use_the_key_only_when_given_and_only_through_its_services(function_id: str) -> None:
    def key_statements(stack: Stack) -> list[dict[str, Any]]:
        role = RESOURCES[role_of(function_id)]["Properties"]
        found = []
        for policy in role["Policies"]:
            for written in as_list(policy["PolicyDocument"]["Statement"]):
                statement = written
                if "Fn::If" in written:  # the branch the stack's conditions choose
                    condition, when_true, when_false = written["Fn::If"]
                    statement = when_true if stack.condition(condition) else when_false
                if statement != NO_VALUE and any(a.startswith("kms:") for a in as_list(statement["Action"])):
                    found.append(stack.resolve(statement))
        return found

    assert key_statements(with_parameters()) == []
    [statement] = key_statements(with_parameters(KmsKeyArn=KEY_ARN))
    assert statement["Effect"] == "Allow"
    assert sorted(as_list(statement["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Resource"] == KEY_ARN
    services = statement["Condition"]["StringEquals"]["kms:ViaService"]
    assert services == [
        f"{service}.us-east-1.amazonaws.com"
        for service in ("dynamodb", "sqs", "s3", "secretsmanager")
        if service in KMS_SERVICES[function_id]
    ]


def test_the_key_parameter_is_optional_and_takes_only_a_key_arn() -> None:
    parameter = DOC["Parameters"]["KmsKeyArn"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch(KEY_ARN)
    assert not pattern.fullmatch("alias/mailqueue")  # an alias would not name the key in the roles' policies
    assert DOC["Conditions"]["UseKmsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]}


def test_queues_and_tables_are_encrypted_and_the_bucket_is_private_tls_only_and_expiring() -> None:

    bucket = RESOURCES["AttachmentsBucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    expiring = {rule.get("Prefix") for rule in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in rule}
    assert expiring == {"uploads/", "content/"}
    policy = RESOURCES["AttachmentsBucketPolicy"]["Properties"]["PolicyDocument"]
    assert {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }.items() <= next(statements(policy)).items()


# --- least privilege ------------------------------------------------------------------------------------

XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
ALLOWED_ACTIONS = {
    "ApiFunction": {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:Query",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListBucket",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    },
    "SenderFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "s3:GetObject",
        "s3:PutObject",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        # SES v2's SendEmail, raw content included; the code calls nothing else of SES
        "ses:SendEmail",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    },
    # BatchGetItem: the status records the sweep examines, a hundred at a time; GetQueueAttributes: the
    # backlog a queued email past its grace may still be waiting behind
    "RequeueFunction": {
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    },
    # PutItem: the suppression list; SendMessage: Lambda's on-failure destination, with the function's role
    "EventsFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    },
    # The stream (what its event source reads with), the content records' tags, the bus; SendMessage: the
    # stream's on-failure destination, with the function's role
    "NotifyFunction": {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
        "dynamodb:BatchGetItem",
        "events:PutEvents",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    },
    # ChangeMessageVisibility: a failed delivery's backoff; SendMessage: fan-out and dead letters
    "WebhookFunction": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    },
}


# --- the requeue function: one schedule per group of shards -----------------------------------------------------


def requeue_schedules() -> dict[str, dict[str, Any]]:
    events = FUNCTIONS["RequeueFunction"]["Properties"]["Events"]
    return {name: event["Properties"] for name, event in events.items() if event["Type"] == "ScheduleV2"}


def test_the_requeue_schedules_run_every_deadline_shard_once_a_run_each_minute() -> None:
    schedules = requeue_schedules()
    groups = [shard_group_of(json.loads(properties["Input"])) for properties in schedules.values()]
    [count] = {group.count for group in groups}
    # one schedule per group, each group once
    assert sorted(group.index for group in groups) == list(range(count))
    assert len(groups) == count > 1
    # the shards the functions are deployed with: the default, or what the template sets
    variables = {
        **DOC["Globals"]["Function"].get("Environment", {}).get("Variables", {}),
        **FUNCTIONS["RequeueFunction"]["Properties"].get("Environment", {}).get("Variables", {}),
    }
    shards = int(variables.get("DEADLINE_SHARDS", Settings().deadline_shards))
    covered = [shard for group in groups for shard in group.shards(shards)]
    assert sorted(covered) == list(range(shards))
    # and when DEADLINE_SHARDS is raised, every shard is still read by one run
    for raised in (shards + 1, 2 * shards, 64):
        assert sorted(shard for group in groups for shard in group.shards(raised)) == list(range(raised))


def test_every_requeue_schedule_runs_alike_but_for_its_group() -> None:
    schedules = requeue_schedules()
    alike = [{key: value for key, value in properties.items() if key != "Input"} for properties in schedules.values()]
    assert all(each == alike[0] for each in alike)
    assert alike[0]["ScheduleExpression"] == {"Ref": "RequeueSchedule"}
    assert alike[0]["GroupName"] == {"Ref": "RequeueScheduleGroup"}
    assert alike[0]["RetryPolicy"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    # one role for them all, which may invoke the requeue function and nothing else
    role = RESOURCES[ref(alike[0]["RoleArn"]) or ""]["Properties"]
    assert next(statements(role["AssumeRolePolicyDocument"]))["Principal"] == {"Service": "scheduler.amazonaws.com"}
    [policy] = role["Policies"]
    assert list(statements(policy["PolicyDocument"])) == [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": {"Fn::GetAtt": ["RequeueFunction", "Arn"]}}
    ]


def test_a_requeue_schedule_input_is_the_event_a_group_is_read_from() -> None:
    for properties in requeue_schedules().values():
        event = json.loads(properties["Input"])
        group = shard_group_of(event)
        assert group != ShardGroup()
        assert event == group.as_dict()


def test_every_function_has_a_role_of_its_own_without_managed_policies() -> None:
    assert set(FUNCTIONS) == set(ALLOWED_ACTIONS), "a new function needs its entry in ALLOWED_ACTIONS"
    roles = [role_of(function_id) for function_id in FUNCTIONS]
    assert len(set(roles)) == len(roles)
    for function_id, function in FUNCTIONS.items():
        # SAM adds managed policies with "*" resources (SQS polling, basic execution) to the roles it makes
        assert "Policies" not in function["Properties"], function_id
        role = RESOURCES[role_of(function_id)]["Properties"]
        assert "ManagedPolicyArns" not in role
        trust = next(statements(role["AssumeRolePolicyDocument"]))
        assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}


@pytest.mark.parametrize("function_id", sorted(ALLOWED_ACTIONS))
def test_each_role_allows_exactly_the_actions_its_code_uses(function_id: str) -> None:
    actions = {action for statement in role_statements(function_id) for action in as_list(statement["Action"])}
    assert actions == ALLOWED_ACTIONS[function_id] | XRAY | LOGS


@pytest.mark.parametrize("function_id", sorted(ALLOWED_ACTIONS))
def test_no_statement_uses_a_wildcard_action_or_an_open_resource(function_id: str) -> None:
    for statement in role_statements(function_id):
        if statement["Effect"] == "Deny":
            # a deny only narrows what the allows give
            assert "NotResource" in statement or "Resource" in statement
            continue
        assert statement["Effect"] == "Allow"
        actions = set(as_list(statement["Action"]))
        assert not [action for action in actions if "*" in action]
        if statement["Resource"] == "*":
            assert actions <= XRAY  # X-Ray's write actions take no resource
        else:
            assert all(isinstance(resource, dict) for resource in as_list(statement["Resource"])), statement


def test_data_access_is_scoped_to_the_stack_resources() -> None:
    def resources(function_id: str, action: str) -> list[Any]:
        return [
            resource
            for statement in role_statements(function_id)
            if action in as_list(statement["Action"])
            for resource in as_list(statement["Resource"])
        ]

    assert resources("RequeueFunction", "dynamodb:Query") == [
        {"Fn::Sub": "${EmailsTable.Arn}/index/by-deadline"},
        {"Fn::Sub": "${EmailsTable.Arn}/index/by-arrival"},
    ]
    # Listing: each status through its index, never a query of the table outside its conditioned partitions
    assert resources("ApiFunction", "dynamodb:Query")[:3] == [
        {"Fn::Sub": f"${{EmailsTable.Arn}}/index/{index}"} for index in ("by-status", "by-deadline", "by-arrival")
    ]
    assert {ref(r) for r in resources("SenderFunction", "dynamodb:UpdateItem")} == {"EmailsTable"}
    assert {ref(r) for r in resources("SenderFunction", "sqs:ReceiveMessage")} == {"SendQueue", "HighPrioritySendQueue"}
    assert {ref(r) for r in resources("RequeueFunction", "sqs:GetQueueAttributes")} == {
        "SendQueue",
        "HighPrioritySendQueue",
    }
    assert {ref(r) for r in resources("ApiFunction", "sqs:SendMessage")} == {"SendQueue", "HighPrioritySendQueue"}
    # GET /stats counts the dead letters, and reads no queue of the send path
    assert {ref(r) for r in resources("ApiFunction", "sqs:GetQueueAttributes")} == {
        "SendDeadLetterQueue",
        "HighPriorityDeadLetterQueue",
        "EventsDeadLetterQueue",
    }
    assert {ref(r) for r in resources("ApiFunction", "dynamodb:PutItem")} == {"EmailsTable", "IdempotencyTable"}
    assert resources("SenderFunction", "s3:GetObject") == [
        {"Fn::Sub": "${AttachmentsBucket.Arn}/content/*"},
        {"Fn::Sub": "${AttachmentsBucket.Arn}/uploads/*"},
    ]
    assert {ref(r) for r in resources("EventsFunction", "dynamodb:UpdateItem")} == {"EmailsTable"}
    assert {ref(r) for r in resources("EventsFunction", "sqs:SendMessage")} == {"EventsDeadLetterQueue"}


@pytest.mark.parametrize(
    ("function_id", "actions"),
    [
        # the events function writes whole items only to the suppression list
        ("EventsFunction", {"dynamodb:PutItem"}),
        # the API queries the table (not an index) and deletes only there (it reads status records in batches,
        # to list them, as it reads one with GetItem)
        ("ApiFunction", {"dynamodb:Query", "dynamodb:DeleteItem"}),
    ],
)
def test_suppression_list_access_is_limited_to_its_partition(function_id: str, actions: set[str]) -> None:
    on_the_table = [
        statement
        for statement in role_statements(function_id)
        if set(as_list(statement["Action"])) & actions
        and ref(statement["Resource"]) == "EmailsTable"
        and statement.get("Sid") != "Templates"
    ]
    assert {action for statement in on_the_table for action in as_list(statement["Action"])} == actions
    for statement in on_the_table:
        leading_keys = {"dynamodb:LeadingKeys": [SUPPRESSION_PARTITION]}
        assert statement["Condition"] == {"ForAllValues:StringEquals": leading_keys}


def test_the_api_queries_the_table_only_in_the_suppression_and_template_partitions() -> None:
    queries = [
        statement
        for statement in role_statements("ApiFunction")
        if "dynamodb:Query" in as_list(statement["Action"]) and ref(statement["Resource"]) == "EmailsTable"
    ]
    templates = [statement for statement in queries if statement.get("Sid") == "Templates"]

    assert len(queries) == 2
    assert [as_list(statement["Action"]) for statement in templates] == [["dynamodb:Query"]]
    assert templates[0]["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [HEADS, "template#*"]}}


def test_ses_sends_only_from_the_configured_identities_of_this_account_and_the_set_in_use() -> None:
    ses = [s for s in role_statements("SenderFunction") if "ses:SendEmail" in as_list(s["Action"])]
    assert {action for s in ses for action in as_list(s["Action"])} == {"ses:SendEmail"}
    [allow] = [s for s in ses if s["Effect"] == "Allow"]
    [deny] = [s for s in ses if s["Effect"] == "Deny"]
    arn = "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:configuration-set/${Name}"
    the_set = {"Fn::Sub": [arn, {"Name": CONFIGURATION_SET_IN_USE}]}

    # allowed: this account's identities in this region, and the set the sender names
    assert allow["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/*"},
        the_set,
    ]
    # denied: every identity but the configured ones (and any set but the one in use)
    not_denied = evaluate(deny["NotResource"], {"SendingIdentities": ["example.com", "app@example.org"]}, keep=True)
    assert not_denied[:2] == ["arn:*:ses:*:*:identity/example.com", "arn:*:ses:*:*:identity/app@example.org"]
    assert not_denied[2:] == [the_set]
    assert "Condition" not in deny
    environment = FUNCTIONS["SenderFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["SES_CONFIGURATION_SET"] == CONFIGURATION_SET_IN_USE


def test_the_api_may_list_the_bucket_only_under_uploads() -> None:
    [listing] = [s for s in role_statements("ApiFunction") if "s3:ListBucket" in as_list(s["Action"])]
    assert as_list(listing["Action"]) == ["s3:ListBucket"]
    assert ref(listing["Resource"]) == "AttachmentsBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*"]}}


# --- SES events -----------------------------------------------------------------------------------------

# The EventBridge detail-type of each SES event type (eventType in the event's detail).
DETAIL_TYPES = {
    "Send": "Email Sent",
    "Delivery": "Email Delivered",
    "Bounce": "Email Bounced",
    "Complaint": "Email Complaint Received",
    "Reject": "Email Rejected",
    "Rendering Failure": "Email Rendering Failed",
    "DeliveryDelay": "Email Delivery Delayed",
}
# The event destination's name for each.
MATCHING_EVENT_TYPES = {
    "Send": "SEND",
    "Delivery": "DELIVERY",
    "Bounce": "BOUNCE",
    "Complaint": "COMPLAINT",
    "Reject": "REJECT",
    "Rendering Failure": "RENDERING_FAILURE",
    "DeliveryDelay": "DELIVERY_DELAY",
}


def events_rule() -> tuple[str, dict[str, Any]]:
    """The events function's one EventBridge rule: its event's key and properties."""
    [(key, event)] = FUNCTIONS["EventsFunction"]["Properties"]["Events"].items()
    assert event["Type"] == "EventBridgeRule"
    return key, event["Properties"]


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's matching for patterns of exact values: every field named, with one of the values listed."""
    for field, expected in pattern.items():
        if field not in event:
            return False
        value = event[field]
        if isinstance(expected, dict):
            if not (isinstance(value, dict) and matches(expected, value)):
                return False
        elif not set(as_list(value)) & set(expected):
            return False
    return True


def test_the_stack_makes_a_configuration_set_unless_one_is_named() -> None:
    assert DOC["Parameters"]["ConfigurationSetName"]["Default"] == ""
    assert RESOURCES["ConfigurationSet"]["Condition"] == "CreateConfigurationSet"
    assert DOC["Conditions"]["CreateConfigurationSet"] == {"Fn::Equals": [{"Ref": "ConfigurationSetName"}, ""]}
    assert DOC["Conditions"]["HasConfigurationSet"] == {"Fn::Not": [DOC["Conditions"]["CreateConfigurationSet"]]}
    assert DOC["Outputs"]["ConfigurationSetName"]["Value"] == CONFIGURATION_SET_IN_USE


def test_the_configuration_set_publishes_every_event_the_code_handles_to_the_default_bus() -> None:
    destination = RESOURCES["SesEventsDestination"]
    assert "Condition" not in destination  # on the stack's own set or on the named one
    properties = destination["Properties"]
    assert properties["ConfigurationSetName"] == CONFIGURATION_SET_IN_USE
    target = properties["EventDestination"]
    assert target["Enabled"] is True
    assert set(target["MatchingEventTypes"]) == {MATCHING_EVENT_TYPES[name] for name in OUTCOMES}
    bus = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"
    assert target["EventBridgeDestination"] == {"EventBusArn": {"Fn::Sub": bus}}


def test_the_events_rule_takes_the_sample_events_of_the_set_in_use_and_no_other_set(stack: Stack) -> None:
    # Given the rule as the built stack resolves it
    _, properties = events_rule()
    [resolved] = stack.event_sources("EventsFunction", "EventBridgeRule")
    pattern = resolved["Pattern"]
    assert properties["Pattern"]["detail"]["mail"]["tags"]["ses:configuration-set"] == [CONFIGURATION_SET_IN_USE]
    assert set(pattern["detail-type"]) == {DETAIL_TYPES[name] for name in OUTCOMES}

    # Then every sample SES event of the set in use matches, and the same event of another set does not
    samples = sorted(SAMPLE_EVENTS.glob("*.json"))
    assert len(samples) >= len(OUTCOMES)
    for path in samples:
        event = json.loads(path.read_text())
        assert event["detail-type"] == DETAIL_TYPES[event["detail"]["eventType"]], path.name
        event["detail"]["mail"]["tags"]["ses:configuration-set"] = [stack.names["ConfigurationSet"]]
        assert matches(pattern, event), path.name
        event["detail"]["mail"]["tags"]["ses:configuration-set"] = ["another-set"]
        assert not matches(pattern, event), path.name


def test_an_event_that_fails_is_retried_then_kept_in_the_events_dead_letter_queue() -> None:
    key, rule = events_rule()
    function = FUNCTIONS["EventsFunction"]["Properties"]

    # Lambda retries the function's failures (NotYetRecorded) twice, then sends the event on with its error
    invoke = function["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 2
    assert invoke["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
    assert ref(invoke["DestinationConfig"]["OnFailure"]["Destination"]) == "EventsDeadLetterQueue"

    # EventBridge retries what it could not deliver to Lambda, then keeps it in the same queue
    assert rule["RetryPolicy"]["MaximumEventAgeInSeconds"] >= 3600
    assert ref(rule["DeadLetterConfig"]["Arn"]) == "EventsDeadLetterQueue"
    # which EventBridge may write to on behalf of that rule only (SAM names it function + event key)
    policy = RESOURCES["EventsDeadLetterQueuePolicy"]["Properties"]
    assert [ref(queue) for queue in policy["Queues"]] == ["EventsDeadLetterQueue"]
    [statement] = statements(policy["PolicyDocument"])
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [f"EventsFunction{key}", "Arn"]}}}


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_each_function_logs_to_a_group_with_retention_and_may_write_only_there(function_id: str) -> None:
    groups = [
        logical_id
        for logical_id, group in of_type("AWS::Logs::LogGroup").items()
        if group["Properties"].get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{function_id}}}"}
    ]
    assert len(groups) == 1, f"{function_id} needs a log group named after it"
    assert RESOURCES[groups[0]]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    logs = [s for s in role_statements(function_id) if set(as_list(s["Action"])) == LOGS]
    assert [s["Resource"] for s in logs] == [{"Fn::GetAtt": [groups[0], "Arn"]}]


# --- the API --------------------------------------------------------------------------------------------


def test_every_route_requires_iam_or_the_jwt_authorizer() -> None:
    api = RESOURCES["HttpApi"]["Properties"]
    body = api["DefinitionBody"]
    methods = [method for path in body["paths"].values() for method in path.values()]
    assert methods
    for method in methods:
        # IAM, or the JWT authorizer with the route's scopes (tests/unit/test_api_permissions.py: which ones)
        condition, [jwt_requirement], iam_requirement = method["security"]["Fn::If"]
        assert condition == "UseJwtAuthorizer"
        assert set(jwt_requirement) == {"JwtAuthorizer"} and jwt_requirement["JwtAuthorizer"]
        assert iam_requirement == [{"AWS_IAM": []}]
    condition, jwt, iam = body["components"]["securitySchemes"]["Fn::If"]
    assert condition == "UseJwtAuthorizer"
    assert iam["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert jwt["JwtAuthorizer"]["x-amazon-apigateway-authorizer"]["type"] == "jwt"
    # IAM unless an issuer is given
    assert DOC["Parameters"]["JwtIssuer"]["Default"] == ""
    assert DOC["Conditions"]["UseJwtAuthorizer"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtIssuer"}, ""]}]}
    # each of the function's routes is one the definition authorizes
    for event in FUNCTIONS["ApiFunction"]["Properties"]["Events"].values():
        assert event["Type"] == "HttpApi"
        method = event["Properties"]["Method"].lower()
        operations = body["paths"][event["Properties"]["Path"]]
        assert ("x-amazon-apigateway-any-method" if method == "any" else method) in operations


def test_the_api_is_throttled_and_writes_json_access_logs_with_retention() -> None:
    api = RESOURCES["HttpApi"]["Properties"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(api["DefaultRouteSettings"])
    logs = api["AccessLogSettings"]
    group = RESOURCES[ref(logs["DestinationArn"]) or ""]
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    fields = json.loads(re.sub(r"\$context\.[a-zA-Z.]+", "x", logs["Format"]))
    assert {"requestId", "status", "caller", "routeKey"} <= set(fields)


# --- alarms, dashboard, outputs -------------------------------------------------------------------------


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str]]:
    properties = alarm["Properties"]
    if "MetricName" in properties:
        return [(properties["Namespace"], properties["MetricName"])]
    return [
        (query["MetricStat"]["Metric"]["Namespace"], query["MetricStat"]["Metric"]["MetricName"])
        for query in properties["Metrics"]
        if "MetricStat" in query
    ]


def test_alarms_watch_dead_letters_sender_errors_and_failed_emails() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    watched_queues = {
        ref(dimension["Value"])
        for alarm in alarms.values()
        if alarm["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
        for dimension in alarm["Properties"]["Dimensions"]
    }
    assert {"SendDeadLetterQueue", "HighPriorityDeadLetterQueue", "EventsDeadLetterQueue"} <= watched_queues

    metrics = {metric for alarm in alarms.values() for metric in alarm_metrics(alarm)}
    assert {("mailqueue", "EmailsFailed"), ("AWS/Lambda", "Errors"), ("mailqueue", "SenderErrorLogs")} <= metrics
    failed = alarms["FailedEmailsAlarm"]["Properties"]
    # Powertools Metrics adds the service dimension to every metric it emits
    assert failed["Dimensions"] == [{"Name": "service", "Value": "mailqueue"}]


@pytest.mark.parametrize(
    ("metric", "dimensions"),
    [
        # an SES call whose outcome is unknown: the one window in which an email can go out twice
        ("UnknownOutcomes", {"service": "mailqueue"}),
        # a sender died mid-send and the requeue function released its claim
        ("EmailsRequeued", {"reason": "claim_expired", "service": "mailqueue"}),
        # held by an error of the account or an identity, attempts not spent
        ("AccountErrors", {"service": "mailqueue"}),
    ],
)
def test_what_strains_a_guarantee_alarms_at_its_first_occurrence(metric: str, dimensions: dict[str, str]) -> None:
    alarms = [
        alarm["Properties"]
        for alarm in of_type("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == metric
    ]
    assert len(alarms) == 1, f"one alarm on {metric}"
    [alarm] = alarms
    assert alarm["Namespace"] == "mailqueue"
    # exactly the dimensions the code emits it with (Powertools adds service; requeue adds reason)
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == dimensions
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
    assert alarm["Period"] <= 300
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize(
    ("alarm_id", "metric", "parameter", "review_level"),
    [
        # SES's bounce rate counts hard bounces only
        ("BounceRateAlarm", "EmailsBouncedByType", "BounceRateAlarmThreshold", 0.05),
        ("ComplaintRateAlarm", "EmailsComplained", "ComplaintRateAlarmThreshold", 0.001),
    ],
)
def test_bounce_and_complaint_rates_alarm_below_the_levels_ses_reviews_at(
    alarm_id: str, metric: str, parameter: str, review_level: float
) -> None:
    alarm = RESOURCES[alarm_id]["Properties"]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    stats = {query_id: query["MetricStat"] for query_id, query in queries.items() if "MetricStat" in query}
    [returned] = [query for query in queries.values() if query.get("ReturnData", True)]

    # the rate is this stack's events over its sends, in the same window
    names = {query_id: stat["Metric"]["MetricName"] for query_id, stat in stats.items()}
    assert sorted(names.values()) == sorted([metric, "EmailsSent"])
    events_id = next(query_id for query_id, name in names.items() if name == metric)
    sent_id = next(query_id for query_id, name in names.items() if name == "EmailsSent")
    assert f"{events_id}, 0) / FILL({sent_id}, 0)" in returned["Expression"]
    assert len({stat["Period"] for stat in stats.values()}) == 1
    for stat in stats.values():
        assert stat["Stat"] == "Sum"
        assert {"Name": "service", "Value": "mailqueue"} in stat["Metric"]["Dimensions"]
    if metric == "EmailsBouncedByType":
        dimensions = stats[events_id]["Metric"]["Dimensions"]
        assert {"Name": "bounce_type", "Value": "Permanent"} in dimensions

    # the threshold is a parameter whose default is under SES's review level
    assert alarm["Threshold"] == {"Ref": parameter}
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    default = DOC["Parameters"][parameter]["Default"]
    assert 0 < default < review_level


def test_every_alarm_notifies_the_optional_email_topic() -> None:
    topic = RESOURCES["AlarmTopic"]
    assert topic["Condition"] == "HasAlarmEmail"
    assert topic["Properties"]["Subscription"] == [{"Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}]
    notify = {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], NO_VALUE]}
    for logical_id, alarm in of_type("AWS::CloudWatch::Alarm").items():
        assert alarm["Properties"]["AlarmActions"] == notify, logical_id
        assert alarm["Properties"]["OKActions"] == notify, logical_id
        assert alarm["Properties"]["AlarmDescription"], logical_id


def dashboard_metric_names() -> set[str]:
    template, _ = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # placeholders as a number: some stand for one (an annotation's threshold), the others sit in strings
    body = json.loads(re.sub(r"\$\{[^}]+\}", "0", template))
    names: set[str] = set()
    for widget in body["widgets"]:
        for line in widget["properties"].get("metrics", []):
            if line[0] == "mailqueue":
                names.add(line[1])
            for item in line:
                if isinstance(item, dict) and "expression" in item:
                    names.update(re.findall(r'MetricName="(\w+)"', item["expression"]))
    return names


def test_the_alarms_and_dashboard_watch_metrics_the_code_emits() -> None:
    # Given the metrics in the mailqueue namespace that the template reads
    from_logs = {
        transformation["MetricName"]
        for metric_filter in of_type("AWS::Logs::MetricFilter").values()
        for transformation in metric_filter["Properties"]["MetricTransformations"]
    }
    read = dashboard_metric_names() | {
        name
        for alarm in of_type("AWS::CloudWatch::Alarm").values()
        for namespace, name in alarm_metrics(alarm)
        if namespace == "mailqueue"
    }
    assert {"EmailsSent", "EmailsFailed", "SesLatency"} <= read
    assert {"EmailsDelivered", "EmailsBounced", "EmailsComplained", "EmailsBouncedByType"} <= read

    # Then each one is emitted by name somewhere in the functions or the domain package
    sources = [*ROOT.glob("functions/*/*.py"), *ROOT.glob("layers/shared/mailqueue/*.py")]
    code = "\n".join(path.read_text() for path in sources)
    missing = sorted(name for name in read - from_logs if f'"{name}"' not in code)
    assert not missing, f"the template reads metrics no code emits: {missing}"


def test_every_checkov_skip_gives_its_reason() -> None:
    skips = [
        (logical_id, skip)
        for logical_id, resource in RESOURCES.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for logical_id, skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (logical_id, skip)  # CKV2: graph checks
        assert len(skip["comment"].split()) >= 8, (logical_id, skip)


def test_the_outputs_name_what_operators_and_the_cli_need() -> None:
    outputs = DOC["Outputs"]
    assert {
        "ApiUrl",
        "EmailsTableName",
        "SendQueueUrl",
        "HighPrioritySendQueueUrl",
        "SendDeadLetterQueueUrl",
        "HighPriorityDeadLetterQueueUrl",
        "EventsDeadLetterQueueUrl",
        "ConfigurationSetName",
        "DashboardUrl",
    } <= set(outputs)
    assert "${Dashboard}" in outputs["DashboardUrl"]["Value"]["Fn::Sub"]


# --- the built layer ------------------------------------------------------------------------------------

BUILD = ROOT / ".aws-sam" / "build"
BUILT_LAYER = BUILD / "SharedLayer" / "python"
LAYER_SOURCE = ROOT / "layers" / "shared"
AARCH64 = 183  # ELF e_machine of AArch64


def _build_is_fresh() -> bool:
    if not (BUILD / "template.yaml").is_file() or not BUILT_LAYER.is_dir():
        return False
    built_at = (BUILD / "template.yaml").stat().st_mtime
    sources = [TEMPLATE, *(p for p in LAYER_SOURCE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    return all(path.stat().st_mtime <= built_at for path in sources)


def elf_machine(path: Path) -> int:
    with path.open("rb") as handle:
        header = handle.read(20)
    assert header[:4] == b"\x7fELF", path
    assert header[4] == 2, f"{path} is not a 64-bit ELF"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.skipif(
    not _build_is_fresh(),
    reason="no sam build of the current source: `make build` (needs Python 3.13; `make test` runs it)",
)
def test_the_built_layer_holds_the_domain_package_and_arm64_dependencies() -> None:
    # The domain package, every module of it
    modules = {p.relative_to(LAYER_SOURCE) for p in (LAYER_SOURCE / "mailqueue").rglob("*.py")}
    built = {p.relative_to(BUILT_LAYER) for p in (BUILT_LAYER / "mailqueue").rglob("*.py")}
    assert modules
    assert modules <= built

    # Every pinned requirement, at its pinned version
    installed = {p.name.lower() for p in BUILT_LAYER.glob("*.dist-info")}
    for line in (LAYER_SOURCE / "requirements.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, version = re.sub(r"\[.*\]", "", line).split("==")
        assert f"{name.strip().replace('-', '_').lower()}-{version.strip()}.dist-info" in installed, line

    # Compiled extensions built for Lambda's arm64 and Python 3.13: pip fetched aarch64 wheels
    extensions = list(BUILT_LAYER.rglob("*.so"))
    assert any(p.name.startswith("_pydantic_core") for p in extensions)
    for extension in extensions:
        assert elf_machine(extension) == AARCH64, extension
        assert "x86_64" not in extension.name
        assert "cpython-313" in extension.name or "abi3" in extension.name or ".cpython-" not in extension.name
    wheel = next(BUILT_LAYER.glob("pydantic_core-*.dist-info")) / "WHEEL"
    tags = [line.split(": ", 1)[1] for line in wheel.read_text().splitlines() if line.startswith("Tag: ")]
    assert tags and all(tag.startswith("cp313-cp313-manylinux") and tag.endswith("aarch64") for tag in tags)

    # Nothing of the dev tooling ships to Lambda
    for name in ("mailqueue_dev", "moto", "pytest", "hypothesis"):
        assert not (BUILT_LAYER / name).exists(), name


def test_the_deploy_guide_covers_every_parameter_alarm_and_output() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    named = [*DOC["Parameters"], *of_type("AWS::CloudWatch::Alarm"), *DOC["Outputs"]]
    assert not [name for name in named if f"`{name}`" not in guide]


# --- status events ----------------------------------------------------------------------------------------------


def test_status_events_are_published_by_the_notify_function_from_the_table_stream_onto_a_bus_of_the_stack() -> None:
    function = FUNCTIONS["NotifyFunction"]
    assert function["Condition"] == "PublishesStatuses"
    for logical_id in ("StatusEventBus", "NotifyRole", "NotifyLogGroup", "NotifyDeadLetterQueue"):
        assert RESOURCES[logical_id]["Condition"] == "PublishesStatuses", logical_id
    assert RESOURCES["StatusEventBus"]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-status"}
    assert DOC["Parameters"]["PublishStatuses"]["Default"] == "delivered,bounced,complained,failed"
    assert DOC["Conditions"]["PublishesStatuses"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "PublishStatuses"}, "none"]}]}

    # the stream exists only when something is published, with both images
    table = RESOURCES["EmailsTable"]["Properties"]
    assert with_parameters().resolve(table["StreamSpecification"]) == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert with_parameters(PublishStatuses="none").resolve({"S": table["StreamSpecification"]}) == {}

    [(_, event)] = function["Properties"]["Events"].items()
    assert event["Type"] == "DynamoDB"
    source = event["Properties"]
    assert source["Stream"] == {"Fn::GetAtt": ["EmailsTable", "StreamArn"]}
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["ParallelizationFactor"] == 1  # one email's changes in order
    assert source["BisectBatchOnFunctionError"] is True
    assert source["MaximumRetryAttempts"] >= 1
    assert source["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["NotifyDeadLetterQueue", "Arn"]}
    alarm = RESOURCES["NotifyDeadLetterQueueAlarm"]["Properties"]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["NotifyDeadLetterQueue", "QueueName"]}}
    ]

    environment = function["Properties"]["Environment"]["Variables"]
    assert environment == {
        "STATUS_EVENT_BUS": {"Fn::GetAtt": ["StatusEventBus", "Name"]},
        "PUBLISH_STATUSES": {"Ref": "PublishStatuses"},
    }


@pytest.mark.parametrize(
    ("setting", "statuses"),
    [
        ("delivered,bounced,complained,failed", ["delivered", "bounced", "complained", "failed"]),
        ("bounced", ["bounced"]),
        ("all", None),
    ],
)
def test_the_stream_filter_passes_status_records_of_the_published_statuses_only(
    setting: str, statuses: list[str] | None
) -> None:
    [source] = [event["Properties"] for event in FUNCTIONS["NotifyFunction"]["Properties"]["Events"].values()]
    [criterion] = with_parameters(PublishStatuses=setting).resolve(source["FilterCriteria"])["Filters"]
    pattern = json.loads(criterion["Pattern"])

    # Lambda filters a DynamoDB stream on its records' `dynamodb` key only
    assert set(pattern) == {"dynamodb"}
    assert pattern["dynamodb"]["Keys"] == {"sk": {"S": ["status"]}}
    if statuses is None:
        assert "NewImage" not in pattern["dynamodb"]
    else:
        assert pattern["dynamodb"]["NewImage"] == {"status": {"S": statuses}}


def test_the_published_statuses_parameter_takes_names_all_or_none_only() -> None:
    allowed = re.compile(DOC["Parameters"]["PublishStatuses"]["AllowedPattern"])
    for good in ("all", "none", "delivered", "delivered,bounced,complained,failed", "queued,sent"):
        assert allowed.fullmatch(good), good
    for bad in ("", "delivered, bounced", "deliverd", "all,delivered", "delivered,"):
        assert not allowed.fullmatch(bad), bad
    # and every name it takes is a status the code publishes
    names = set(re.findall(r"[a-z]+", DOC["Parameters"]["PublishStatuses"]["AllowedPattern"])) - {"all", "none"}
    assert names == {status.value for status in Status}
