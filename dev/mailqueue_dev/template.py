"""Read ``template.yaml`` and build its resources in the emulator, so the local stack cannot drift.

Only what the code uses is built: DynamoDB tables (keys, indexes, TTL, streams), SQS queues (visibility,
redrive to their dead-letter queues), S3 buckets, SES configuration sets and EventBridge buses; every other
resource type is left out. Functions' environments are resolved from the template's Globals and function
definitions, with ``Ref``/``GetAtt``/``Join``/``Sub``/``Split`` pointing at what was built and ``Fn::If``
decided by the template's conditions under the stack's parameters.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
# What Ref AWS::NoValue resolves to until the key or item holding it is dropped.
_NO_VALUE = object()


# libyaml's parser where PyYAML was built with it (the wheels are): the template parses ten times faster.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CfnLoader(_SafeLoader):  # type: ignore[misc]
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, !Sub, …) as their long forms."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


# The parsed template by (path, size, modification time): every stack a test suite builds reads the same file.
_PARSED: dict[tuple[str, int, int], dict[str, Any]] = {}


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as a dict of its own (the caller may change it), parsed once while the file is unchanged."""
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key not in _PARSED:
        with path.open() as handle:
            _PARSED[key] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader
    return copy.deepcopy(_PARSED[key])


@dataclass
class Stack:
    """What was built from the template, by logical id."""

    template: dict[str, Any]
    prefix: str
    names: dict[str, str] = field(default_factory=dict)  # table and bucket names, queue URLs
    arns: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == kind and self.exists(resource)
        }

    def condition(self, value: Any) -> bool:
        """A condition of the template (by name) or a condition function, under the stack's parameters."""
        if isinstance(value, str):
            return self.condition(self.template.get("Conditions", {})[value])
        if "Condition" in value:
            return self.condition(value["Condition"])
        if "Fn::Equals" in value:
            left, right = value["Fn::Equals"]
            return str(self.resolve(left)) == str(self.resolve(right))
        if "Fn::Not" in value:
            return not self.condition(value["Fn::Not"][0])
        if "Fn::And" in value:
            return all(self.condition(item) for item in value["Fn::And"])
        if "Fn::Or" in value:
            return any(self.condition(item) for item in value["Fn::Or"])
        raise ValueError(f"not a condition: {value}")

    def resolve(self, value: Any) -> Any:
        """``value`` with its intrinsics replaced; a key or item that resolves to ``AWS::NoValue`` is left out."""
        resolved = self._resolve(value)
        return None if resolved is _NO_VALUE else resolved

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if "Ref" in value:
                ref = value["Ref"]
                if ref == "AWS::NoValue":
                    return _NO_VALUE
                if ref in self.parameters:
                    return self.parameters[ref]
                if ref in self.names:
                    return self.names[ref]
                return ref
            if "Fn::If" in value:
                condition, when_true, when_false = value["Fn::If"]
                return self._resolve(when_true if self.condition(condition) else when_false)
            if "Fn::GetAtt" in value:
                logical_id, attribute = value["Fn::GetAtt"]
                if attribute == "Arn":
                    return self.arns[logical_id]
                if attribute == "QueueName":
                    return self.names[logical_id].rsplit("/", 1)[-1]
                if attribute == "StreamArn":
                    return self.arns[f"{logical_id}.StreamArn"]
                return self.names.get(logical_id, logical_id)
            if "Fn::Join" in value:
                separator, parts = value["Fn::Join"]
                resolved = self._resolve(parts)
                return separator.join(resolved if isinstance(resolved, list) else [resolved])
            if "Fn::Split" in value:
                separator, text = value["Fn::Split"]
                return str(self._resolve(text)).split(separator)
            if "Fn::Sub" in value:
                return self._substitute(value["Fn::Sub"])
            items = ((key, self._resolve(item)) for key, item in value.items())
            return {key: item for key, item in items if item is not _NO_VALUE}
        if isinstance(value, list):
            return [item for item in (self._resolve(item) for item in value) if item is not _NO_VALUE]
        return value

    def _substitute(self, sub: Any) -> str:
        """``Fn::Sub``: ``${Name}`` from its variables, the parameters or what was built; ``${Id.Attr}`` a GetAtt."""
        text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self._resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self._resolve({"Fn::GetAtt": name.split(".", 1)}))
            return str(self._resolve({"Ref": name}))

        return re.sub(r"\$\{([^}!]+)\}", value, text)

    def exists(self, resource: dict[str, Any]) -> bool:
        """Whether a resource is part of the stack: it has no Condition, or its condition holds."""
        return "Condition" not in resource or self.condition(resource["Condition"])

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The environment Lambda would give a function: Globals, then the function's own."""
        variables: dict[str, Any] = dict(
            self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        )
        function = self.template["Resources"][logical_id]["Properties"]
        variables.update(function.get("Environment", {}).get("Variables", {}))
        resolved = {name: self.resolve(value) for name, value in variables.items()}
        return {name: str(value) for name, value in resolved.items() if value is not None}

    def function_handler(self, logical_id: str) -> tuple[Path, str, str]:
        """The function's code folder, handler module and handler attribute."""
        properties = self.template["Resources"][logical_id]["Properties"]
        module, attribute = properties["Handler"].rsplit(".", 1)
        return TEMPLATE.parent / properties["CodeUri"], module, attribute

    def event_sources(self, logical_id: str, kind: str) -> list[dict[str, Any]]:
        events = self.template["Resources"][logical_id]["Properties"].get("Events", {})
        return [self.resolve(event["Properties"]) for event in events.values() if event["Type"] == kind]


def build(
    session: Any,
    prefix: str = "mailqueue",
    overrides: dict[str, str] | None = None,
    secret_strings: dict[str, str] | None = None,
) -> Stack:
    """Create the template's tables, queues and buckets through ``session`` (a boto3 Session).

    ``secret_strings`` gives the value of a secret by logical id (the local webhook secret, say).
    """
    template = load_template()
    parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    parameters.update(overrides or {})
    parameters.update({"AWS::Region": session.region_name, "AWS::AccountId": "123456789012", "AWS::StackName": prefix})
    stack = Stack(template=template, prefix=prefix, parameters=parameters)

    dynamodb = session.client("dynamodb")
    for logical_id, resource in stack.resources("AWS::DynamoDB::Table").items():
        properties = resource["Properties"]
        name = f"{prefix}-{logical_id}"
        params: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if properties.get("GlobalSecondaryIndexes"):
            params["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
        stream = stack.resolve(properties.get("StreamSpecification"))
        if stream:
            params["StreamSpecification"] = {"StreamEnabled": True, **stream}
        created = dynamodb.create_table(**params)["TableDescription"]
        if stream:
            stack.arns[f"{logical_id}.StreamArn"] = created["LatestStreamArn"]
        ttl = properties.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        stack.names[logical_id] = name
        stack.arns[logical_id] = f"arn:aws:dynamodb:{session.region_name}:123456789012:table/{name}"

    sqs = session.client("sqs")
    queues = stack.resources("AWS::SQS::Queue")
    # Dead-letter queues first: the queues that redrive to them name their ARNs.
    ordered = sorted(queues.items(), key=lambda item: "RedrivePolicy" in item[1].get("Properties", {}))
    for logical_id, resource in ordered:
        properties = stack.resolve(resource.get("Properties", {}))
        name = f"{prefix}-{logical_id}"
        attributes: dict[str, str] = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds"):
            if key in properties:
                attributes[key] = str(properties[key])
        if "RedrivePolicy" in properties:
            attributes["RedrivePolicy"] = json.dumps(properties["RedrivePolicy"])
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        stack.names[logical_id] = url
        stack.arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    s3 = session.client("s3")
    for logical_id in stack.resources("AWS::S3::Bucket"):
        name = f"{prefix}-{logical_id}".lower()
        s3.create_bucket(Bucket=name)
        stack.names[logical_id] = name
        stack.arns[logical_id] = f"arn:aws:s3:::{name}"

    # The configuration set the sender names. Its event destination is not built: the emulator's SES
    # publishes no events.
    sesv2 = session.client("sesv2")
    for logical_id, resource in stack.resources("AWS::SES::ConfigurationSet").items():
        name = str(stack.resolve(resource.get("Properties", {}).get("Name") or f"{prefix}-{logical_id}"))
        sesv2.create_configuration_set(ConfigurationSetName=name)
        stack.names[logical_id] = name
        stack.arns[logical_id] = f"arn:aws:ses:{session.region_name}:123456789012:configuration-set/{name}"

    # Buses of the stack's own (the status events'): Ref is the name.
    events = session.client("events")
    for logical_id, resource in stack.resources("AWS::Events::EventBus").items():
        name = str(stack.resolve(resource["Properties"]["Name"]))
        stack.names[logical_id] = name
        stack.arns[logical_id] = events.create_event_bus(Name=name)["EventBusArn"]
    _build_secrets(session, stack, secret_strings or {})
    _build_rules(session, stack)
    return stack


def _build_secrets(session: Any, stack: Stack, values: dict[str, str]) -> None:
    """Secrets Manager secrets: the value given for the logical id, else a random one (GenerateSecretString)."""
    client = session.client("secretsmanager")
    for logical_id in stack.resources("AWS::SecretsManager::Secret"):
        value = values.get(logical_id) or secrets.token_urlsafe(48)
        arn = client.create_secret(Name=f"{stack.prefix}-{logical_id}", SecretString=value)["ARN"]
        stack.names[logical_id] = arn  # Ref is the ARN
        stack.arns[logical_id] = arn


def _build_rules(session: Any, stack: Stack) -> None:
    """EventBridge rules on a bus the stack built, with their SQS targets: moto's PutEvents then sends to them
    as EventBridge would. (Rules on the default bus, SES's, are played by the local stack itself.)"""
    client = session.client("events")
    for logical_id, resource in stack.resources("AWS::Events::Rule").items():
        properties = stack.resolve(resource["Properties"])
        bus = properties.get("EventBusName")
        if bus not in stack.names.values() or bus is None:
            continue
        name = f"{stack.prefix}-{logical_id}"
        arn = client.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(properties["EventPattern"]))[
            "RuleArn"
        ]
        stack.arns[logical_id] = arn
        stack.names[logical_id] = name
        targets = [
            {"Id": target["Id"], "Arn": target["Arn"]}
            for target in properties.get("Targets", [])
            if str(target.get("Arn", "")).startswith("arn:aws:sqs:")
        ]
        if targets:
            client.put_targets(Rule=name, EventBusName=bus, Targets=targets)
