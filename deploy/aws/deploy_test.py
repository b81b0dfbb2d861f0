"""Deploys deploy/aws/formbridge.yaml to the local engine's CloudFormation (moto) and checks that
every resource the engine supports exists as the template describes it: both tables (keys,
indexes, stream), the four queues with their redrive policies, the event bus, and each process's
IAM role with its inline policy. Run by ./deploy/local/test.sh with AWS_ENDPOINT_URL set.

moto reports success while skipping what it does not model (CloudWatch alarms, budgets), so
those are checked by their definitions in the template, in the Rust tests, never by this deploy.
"""

import ast
import json
import os
import sys
import uuid

import boto3

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
assert ENDPOINT.startswith("http://127.0.0.1:"), "only ever against the local engine"
HERE = os.path.dirname(os.path.abspath(__file__))
ROLES = ["IngestRole", "PersisterRole", "AggregatorRole", "DeliveryRole", "ApiRole"]


def client(name):
    return boto3.client(name, endpoint_url=ENDPOINT, region_name=os.environ.get("AWS_REGION", "us-east-1"))


def main():
    suffix = uuid.uuid4().hex[:8]
    names = {
        "TableName": f"FormBridgeData-cfn-{suffix}",
        "ControlTableName": f"FormBridgeControl-cfn-{suffix}",
        "IngestQueueName": f"formbridge-ingest-cfn-{suffix}",
        "IngestDlqName": f"formbridge-ingest-dlq-cfn-{suffix}",
        "DeliveryQueueName": f"formbridge-deliveries-cfn-{suffix}",
        "DeliveryDlqName": f"formbridge-deliveries-dlq-cfn-{suffix}",
        "EventBusName": f"formbridge-cfn-{suffix}",
    }
    cfn = client("cloudformation")
    with open(os.path.join(HERE, "formbridge.yaml")) as f:
        body = f.read()
    stack = f"formbridge-{suffix}"
    cfn.create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in names.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    assert status == "CREATE_COMPLETE", status
    resources = {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]}

    ddb = client("dynamodb")
    data = ddb.describe_table(TableName=names["TableName"])["Table"]
    assert {k["AttributeName"] for k in data["KeySchema"]} == {"PK", "SK"}
    assert sorted(i["IndexName"] for i in data["GlobalSecondaryIndexes"]) == ["GSI1", "GSI2", "GSI3"]
    assert data["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert data.get("BillingModeSummary", {}).get("BillingMode", "PAY_PER_REQUEST") == "PAY_PER_REQUEST"
    ddb.describe_table(TableName=names["ControlTableName"])

    sqs = client("sqs")
    for queue, dlq, receives in [("IngestQueueName", "IngestDlqName", 5), ("DeliveryQueueName", "DeliveryDlqName", 8)]:
        url = sqs.get_queue_url(QueueName=names[queue])["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(":" + names[dlq]), redrive
        assert int(redrive["maxReceiveCount"]) == receives, redrive
        sqs.get_queue_url(QueueName=names[dlq])

    client("events").describe_event_bus(Name=names["EventBusName"])

    iam = client("iam")
    for role in ROLES:
        assert role in resources, f"{role} missing from the stack"
        physical = resources[role]["PhysicalResourceId"]
        policies = iam.list_role_policies(RoleName=physical)["PolicyNames"]
        assert len(policies) == 1, (role, policies)
        doc = iam.get_role_policy(RoleName=physical, PolicyName=policies[0])["PolicyDocument"]
        if isinstance(doc, str):
            # moto hands back the document as CloudFormation resolved it: a Python literal.
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError:
                doc = ast.literal_eval(doc)
        actions = [a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
        assert actions and all(":" in a and "*" not in a for a in actions), (role, actions)

    cfn.delete_stack(StackName=stack)
    print(f"==> the template deployed to the local engine: {len(resources)} resources checked", file=sys.stderr)


if __name__ == "__main__":
    main()
