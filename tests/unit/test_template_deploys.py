"""template.yaml deploys into a CloudFormation engine: SAM's own translator, then moto's CloudFormation.

The local stack reads the template with the project's reader (mailqueue_dev.template); these tests
take the path a deployment takes instead. ``aws-sam-translator`` (what ``sam deploy`` and
CloudFormation's ``AWS::Serverless`` transform run) expands the template, and moto's CloudFormation
creates the stack from the result: the functions, their roles and event source mappings, the tables,
queues, bucket and log groups. Then each function's environment must name what was created, each
event source mapping its queue with its settings, each table its keys and indexes.

What moto's CloudFormation cannot create is listed in docs/deploy.md ("What a test deploys"), with how
each is checked instead; the last test holds that list to what moto left out.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from mailqueue.settings import Settings
from mailqueue_dev.template import TEMPLATE, load_template
from moto import mock_aws
from samtranslator.translator.transform import transform

ROOT = TEMPLATE.parent
REGION = "us-east-1"
CODE_BUCKET = "mailqueue-code"
# What moto cannot create is listed in docs/deploy.md and checked by the last test, not warned about.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto:UserWarning"),
    # One deployment for the module: under pytest-xdist its tests run on one worker.
    pytest.mark.xdist_group("template_deploys"),
]
# Parameters that differ from the defaults where moto needs them to: it joins a CommaDelimitedList's
# default as a string (one character each), and cannot create an SES configuration set. Webhooks are on, so
# that their resources are created too.
PARAMETERS = {
    "SendingIdentities": "example.com,app@example.org",
    "ConfigurationSetName": "mailqueue-team-set",
    "WebhookUrls": "https://hooks.example/mailqueue,https://other.example/Hooks",
}


class _NoManagedPolicies:
    """The translator's loader of AWS managed policies: the template names none (each role is its own)."""

    def load(self) -> dict[str, str]:
        return {}


def translated(session: boto3.session.Session) -> dict[str, Any]:
    """template.yaml as ``sam deploy`` would hand it to CloudFormation: code in S3, SAM's transform applied."""
    template = load_template()
    s3 = session.client("s3")
    s3.create_bucket(Bucket=CODE_BUCKET)
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in properties:
                # what `sam package` uploads; moto's Lambda stores it without running it
                s3.put_object(Bucket=CODE_BUCKET, Key=logical_id, Body=b"PK\x05\x06" + b"\x00" * 18)
                properties[key] = f"s3://{CODE_BUCKET}/{logical_id}"
    document: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    return document


@dataclass
class Deployed:
    session: boto3.session.Session
    template: dict[str, Any]  # as CloudFormation received it
    created: dict[str, str]  # logical id -> physical id, of what moto created
    stack: dict[str, Any]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {logical_id: r for logical_id, r in self.template["Resources"].items() if r["Type"] == kind}

    def client(self, service: str) -> Any:
        return self.session.client(service)


def deploy(session: boto3.session.Session, name: str, parameters: dict[str, str]) -> Deployed:
    template = translated(session)
    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    [stack] = cloudformation.describe_stacks(StackName=name)["Stacks"]
    summaries = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    created = {
        summary["LogicalResourceId"]: summary["PhysicalResourceId"]
        for summary in summaries
        if summary["ResourceType"] and summary["ResourceStatus"] == "CREATE_COMPLETE"
    }
    return Deployed(session, template, created, stack)


@pytest.fixture(scope="module")
def session() -> Iterator[boto3.session.Session]:
    """moto for this module's stacks, with the configuration set they name."""
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        session.client("sesv2").create_configuration_set(ConfigurationSetName=PARAMETERS["ConfigurationSetName"])
        yield session


@pytest.fixture(scope="module")
def deployed(session: boto3.session.Session) -> Deployed:
    return deploy(session, "mailqueue", PARAMETERS)


def test_the_stack_is_created(deployed: Deployed) -> None:
    assert deployed.stack["StackStatus"] == "CREATE_COMPLETE"
    functions = deployed.resources("AWS::Lambda::Function")
    assert set(functions) == {
        "ApiFunction",
        "SenderFunction",
        "RequeueFunction",
        "EventsFunction",
        "NotifyFunction",
        "WebhookFunction",
    }
    assert set(functions) <= set(deployed.created)


# --- each function's environment names what was created -------------------------------------------------


def exists(deployed: Deployed, logical_id: str) -> bool:
    """Whether the resource behind ``logical_id`` exists in its service, asked by its physical id."""
    kind = deployed.template["Resources"][logical_id]["Type"]
    physical = deployed.created[logical_id]
    if kind == "AWS::DynamoDB::Table":
        return bool(deployed.client("dynamodb").describe_table(TableName=physical)["Table"]["TableName"] == physical)
    if kind == "AWS::SQS::Queue":
        return bool(deployed.client("sqs").get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"]))
    if kind == "AWS::S3::Bucket":
        deployed.client("s3").head_bucket(Bucket=physical)
        return True
    raise AssertionError(f"an environment variable names a {kind}: teach this test how to find one")


@pytest.mark.parametrize(
    "function_id", ["ApiFunction", "SenderFunction", "RequeueFunction", "EventsFunction", "NotifyFunction"]
)
def test_each_function_environment_resolves_to_created_resources(deployed: Deployed, function_id: str) -> None:
    declared = deployed.template["Resources"][function_id]["Properties"]["Environment"]["Variables"]
    configuration = deployed.client("lambda").get_function_configuration(FunctionName=deployed.created[function_id])
    environment = {name: str(value) for name, value in configuration["Environment"]["Variables"].items()}

    # every variable arrived (a reference to something not created would leave it out), none half-resolved
    assert set(environment) == set(declared)
    assert not [value for value in environment.values() if "Fn::" in value or "None" in value or not value]
    # a reference to a resource is that resource's name or URL, and it exists
    for name, value in declared.items():
        if isinstance(value, dict) and "Ref" in value and value["Ref"] in deployed.template["Resources"]:
            assert environment[name] == deployed.created[value["Ref"]], name
            assert exists(deployed, value["Ref"]), name
        if isinstance(value, dict) and value.get("Fn::GetAtt", [None, None])[1] == "Name":
            # a bus (moto's CloudFormation records no physical id for one): it exists under that name
            assert deployed.template["Resources"][value["Fn::GetAtt"][0]]["Type"] == "AWS::Events::EventBus"
            assert environment[name] == f"{deployed.stack['StackName']}-status", name
            assert deployed.client("events").describe_event_bus(Name=environment[name])["Name"] == environment[name]
    # and the settings the code reads accept them, naming the stack's resources
    settings = Settings.from_env(environment)
    assert settings.table_name == deployed.created["EmailsTable"]
    assert settings.queue_url("high") == deployed.created["HighPrioritySendQueue"]
    assert settings.sending_identities == ("example.com", "app@example.org")
    if function_id == "SenderFunction":
        assert settings.configuration_set == PARAMETERS["ConfigurationSetName"]
        assert deployed.client("sesv2").get_configuration_set(ConfigurationSetName=settings.configuration_set)
    # the function runs with its own role, the one the stack created
    role = deployed.template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    assert configuration["Role"].endswith(f"/{deployed.created[role]}")


# --- event source mappings ---------------------------------------------------------------------------------


def queue_arn(deployed: Deployed, logical_id: str) -> str:
    attributes = deployed.client("sqs").get_queue_attributes(
        QueueUrl=deployed.created[logical_id], AttributeNames=["QueueArn"]
    )
    return str(attributes["Attributes"]["QueueArn"])


def test_each_event_source_mapping_feeds_its_function_from_its_queue_with_its_settings(deployed: Deployed) -> None:
    # SenderMaxConcurrency's default; the webhook function's own bound
    concurrency = {"SenderFunction": 2, "WebhookFunction": 5}
    declared = {
        logical_id: resource
        for logical_id, resource in deployed.resources("AWS::Lambda::EventSourceMapping").items()
        if resource["Properties"]["FunctionName"]["Ref"] in concurrency
    }
    assert len(declared) == 3  # the send queue, the high-priority queue and the webhook queue
    client = deployed.client("lambda")
    for logical_id, resource in declared.items():
        properties = resource["Properties"]
        function_id = properties["FunctionName"]["Ref"]
        queue_id = properties["EventSourceArn"]["Fn::GetAtt"][0]
        mappings = client.list_event_source_mappings(FunctionName=deployed.created[function_id])["EventSourceMappings"]
        [mapping] = [m for m in mappings if m["UUID"] == deployed.created[logical_id]]

        assert mapping["EventSourceArn"] == queue_arn(deployed, queue_id), logical_id
        assert mapping["FunctionArn"].endswith(f":function:{deployed.created[function_id]}")
        assert mapping["State"] == "Enabled"
        assert mapping["BatchSize"] == properties["BatchSize"] == 10
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping.get("MaximumBatchingWindowInSeconds") == properties.get("MaximumBatchingWindowInSeconds")
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": concurrency[function_id]}
    queues = {resource["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] for resource in declared.values()}
    assert queues == {"SendQueue", "HighPrioritySendQueue", "WebhookQueue"}


def test_the_notify_function_reads_the_emails_table_stream_filtered_with_partial_failures(deployed: Deployed) -> None:
    [(logical_id, resource)] = [
        (logical_id, resource)
        for logical_id, resource in deployed.resources("AWS::Lambda::EventSourceMapping").items()
        if resource["Properties"]["FunctionName"]["Ref"] == "NotifyFunction"
    ]
    properties = resource["Properties"]
    client = deployed.client("lambda")
    mappings = client.list_event_source_mappings(FunctionName=deployed.created["NotifyFunction"])["EventSourceMappings"]
    [mapping] = [m for m in mappings if m["UUID"] == deployed.created[logical_id]]

    table = deployed.client("dynamodb").describe_table(TableName=deployed.created["EmailsTable"])["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert mapping["EventSourceArn"] == table["LatestStreamArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    [pattern] = [json.loads(item["Pattern"]) for item in mapping["FilterCriteria"]["Filters"]]
    assert pattern["dynamodb"]["NewImage"] == {"status": {"S": ["delivered", "bounced", "complained", "failed"]}}
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["NotifyDeadLetterQueue", "Arn"]
    }
    assert exists(deployed, "NotifyDeadLetterQueue")


def test_publishing_none_makes_no_bus_no_stream_and_no_function(session: boto3.session.Session) -> None:
    deployed = deploy(session, "mailqueue-quiet", {**PARAMETERS, "PublishStatuses": "none"})
    assert deployed.stack["StackStatus"] == "CREATE_COMPLETE"

    for logical_id in ("StatusEventBus", "NotifyFunction", "NotifyRole", "NotifyDeadLetterQueue"):
        assert logical_id not in deployed.created, logical_id
    table = deployed.client("dynamodb").describe_table(TableName=deployed.created["EmailsTable"])["Table"]
    assert "LatestStreamArn" not in table


def test_each_send_queue_redrives_to_its_created_dead_letter_queue(deployed: Deployed) -> None:
    sqs = deployed.client("sqs")
    for queue_id, dead_letters in [
        ("SendQueue", "SendDeadLetterQueue"),
        ("HighPrioritySendQueue", "HighPriorityDeadLetterQueue"),
    ]:
        attributes = sqs.get_queue_attributes(QueueUrl=deployed.created[queue_id], AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == queue_arn(deployed, dead_letters)
        assert int(redrive["maxReceiveCount"]) == 5
        assert attributes["VisibilityTimeout"] == "180"


# --- tables ------------------------------------------------------------------------------------------------


def test_each_table_has_its_keys_indexes_and_ttl(deployed: Deployed) -> None:
    tables = deployed.resources("AWS::DynamoDB::Table")
    assert set(tables) == {"EmailsTable", "IdempotencyTable"}
    dynamodb = deployed.client("dynamodb")
    for logical_id, resource in tables.items():
        properties = resource["Properties"]
        table = dynamodb.describe_table(TableName=deployed.created[logical_id])["Table"]
        assert table["KeySchema"] == properties["KeySchema"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        indexes = {
            index["IndexName"]: (index["KeySchema"], index["Projection"])
            for index in table.get("GlobalSecondaryIndexes", [])
        }
        assert indexes == {
            index["IndexName"]: (index["KeySchema"], index["Projection"])
            for index in properties.get("GlobalSecondaryIndexes", [])
        }
        # moto's CloudFormation does not apply TimeToLiveSpecification: it reaches CloudFormation as
        # written (SAM's transform keeps it), and the table accepts it
        ttl = properties["TimeToLiveSpecification"]
        dynamodb.update_time_to_live(TableName=table["TableName"], TimeToLiveSpecification=ttl)
        described = dynamodb.describe_time_to_live(TableName=table["TableName"])["TimeToLiveDescription"]
        assert (described["TimeToLiveStatus"], described["AttributeName"]) == ("ENABLED", ttl["AttributeName"])
    emails = tables["EmailsTable"]["Properties"]
    assert {index["IndexName"] for index in emails["GlobalSecondaryIndexes"]} == {
        "by-arrival",
        "by-deadline",
        "by-status",
    }
    assert emails["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


# --- with a customer managed key ---------------------------------------------------------------------------


def test_with_a_key_the_queues_bucket_and_roles_use_it(session: boto3.session.Session) -> None:
    key = session.client("kms").create_key()["KeyMetadata"]["Arn"]
    deployed = deploy(session, "mailqueue-kms", {**PARAMETERS, "KmsKeyArn": key})
    assert deployed.stack["StackStatus"] == "CREATE_COMPLETE"

    sqs = deployed.client("sqs")
    for logical_id in deployed.resources("AWS::SQS::Queue"):
        attributes = sqs.get_queue_attributes(QueueUrl=deployed.created[logical_id], AttributeNames=["All"])
        assert attributes["Attributes"]["KmsMasterKeyId"] == key, logical_id
        assert attributes["Attributes"]["SqsManagedSseEnabled"] == "false", logical_id
    [rule] = deployed.client("s3").get_bucket_encryption(Bucket=deployed.created["AttachmentsBucket"])[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}

    iam = deployed.client("iam")
    for function in deployed.resources("AWS::Lambda::Function").values():
        role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
        [policy] = deployed.template["Resources"][role_id]["Properties"]["Policies"]
        document = iam.get_role_policy(RoleName=deployed.created[role_id], PolicyName=policy["PolicyName"])
        policy_document = document["PolicyDocument"]
        if isinstance(policy_document, str):  # moto's CloudFormation stores an inline policy as Python's repr
            policy_document = ast.literal_eval(policy_document)
        statements = policy_document["Statement"]
        [uses_key] = [s for s in statements if s.get("Sid") == "KmsKey"]
        assert uses_key["Resource"] == key, role_id
        assert set(uses_key["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}


# --- what moto's CloudFormation cannot create, and the list in docs/deploy.md -------------------------------


def documented_gaps() -> set[str]:
    section = (ROOT / "docs" / "deploy.md").read_text().split("### What a test deploys", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| (`AWS::[^|]+) \|", section, re.MULTILINE)
    return {kind for cell in first_cells for kind in re.findall(r"`(AWS::[A-Za-z0-9:]+)`", cell)}


def test_what_moto_cannot_create_is_what_the_deploy_guide_lists(deployed: Deployed) -> None:
    # resources whose condition holds under these parameters and moto did not create
    conditions = {"HasAlarmEmail": False, "CreateConfigurationSet": False}
    expected = {
        logical_id
        for logical_id, resource in deployed.template["Resources"].items()
        if conditions.get(resource.get("Condition", ""), True)
    }
    missing = {deployed.template["Resources"][logical_id]["Type"] for logical_id in expected - set(deployed.created)}
    # the template's own configuration set exists only without ConfigurationSetName: moto cannot create it either
    assert missing | {"AWS::SES::ConfigurationSet"} == documented_gaps()


def test_the_transform_adds_no_role_and_a_schedule_per_group_passes_its_group(deployed: Deployed) -> None:
    resources = deployed.template["Resources"]
    roles = {logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    assert roles == {
        "ApiRole",
        "SenderRole",
        "RequeueRole",
        "EventsRole",
        "NotifyRole",
        "WebhookRole",
        "RequeueScheduleRole",
    }
    for logical_id in roles:
        assert "ManagedPolicyArns" not in resources[logical_id]["Properties"], logical_id
    schedules = deployed.resources("AWS::Scheduler::Schedule")
    targets = [schedule["Properties"]["Target"] for schedule in schedules.values()]
    assert all(target["Arn"] == {"Fn::GetAtt": ["RequeueFunction", "Arn"]} for target in targets)
    assert all(target["RoleArn"] == {"Fn::GetAtt": ["RequeueScheduleRole", "Arn"]} for target in targets)
    # the Input EventBridge Scheduler hands the function as the event: one group each, every group once
    inputs = sorted(
        (event["shard_groups"], event["shard_group"]) for event in (json.loads(t["Input"]) for t in targets)
    )
    assert inputs == [(len(targets), group) for group in range(len(targets))]
