"""Deploys deploy/aws/formbridge.yaml to the local engine's CloudFormation (moto) in both compute
modes, and checks that every resource the engine models exists as the template describes it:

- both modes: the tables (keys, indexes, stream; the data table kept when the stack is deleted),
  the queues with their redrive policies and the mode's visibility timeouts, the event bus, each
  process's role (trust, its own policy, and the Lambda-only `lambda-platform` policy), the tenant
  read role and the API's `tenant-read` policy, the alarm topic and its e-mail subscription, the
  log groups and their retention, and the dashboard (its body parsed, its metrics naming the
  stack's own queues, tables, functions or services);
- Lambda mode: the functions (runtime, handler, role, memory, timeout, environment), their event
  source mappings (batch sizes, windows, response types, bisection, retries, filter, failure
  destination) and the Function URL permissions, with the code read from dummy zips put in the
  engine's S3 first;
- ECS mode: the cluster, the five services and their task definitions (image, command,
  environment, secrets, logging, ports), the load balancer with its listener, routing rules and
  target groups, and the security groups, in the engine's default VPC.

It also checks that the stack holds exactly the resources the template creates in that mode,
less the types moto does not model (NOT_MODELED, listed with a warning and skipped while the
stack still reports success): those are checked by their definitions in template_test.py.

moto gaps worked around here, never in the template:
- A stack whose outputs name a resource moto skipped (the Function URLs) cannot be described
  (DescribeStacks fails), so the stack's status is read from ListStacks.
- CloudFormation drops `!Ref AWS::NoValue` from a list; moto 5.2.5 passes it on as null (an ECS
  role's Policies list then fails). When a mode leaves such an item, the template is sent as JSON
  with exactly those items removed, as CloudFormation would.

Run by ./deploy/local/test.sh with AWS_ENDPOINT_URL set. Stacks get unique names and are deleted
at the end, also when a check fails.
"""

import ast
import io
import json
import os
import sys
import uuid
import zipfile

import boto3

sys.dont_write_bytecode = True  # no __pycache__ beside the template
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cfn_template  # noqa: E402

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
assert ENDPOINT.startswith("http://127.0.0.1:"), "only ever against the local engine"
REGION = os.environ.get("AWS_REGION", "us-east-1")

PROCESS_ROLES = {"IngestRole": "ingest", "PersisterRole": "persister", "AggregatorRole": "aggregator",
                 "DeliveryRole": "delivery", "ApiRole": "api"}
LAMBDA_BINARIES = ["formbridge-ingest-lambda", "formbridge-persister-lambda", "formbridge-aggregator-lambda",
                   "formbridge-delivery-lambda", "formbridge-api-lambda"]
NOT_MODELED = {"AWS::CloudWatch::Alarm", "AWS::Budgets::Budget", "AWS::Logs::MetricFilter", "AWS::Lambda::Url",
               "AWS::SNS::TopicPolicy",
               "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy"}
RESOURCE_ENV = ["FORMBRIDGE_TABLE", "FORMBRIDGE_CONTROL_TABLE", "FORMBRIDGE_INGEST_QUEUE", "FORMBRIDGE_INGEST_DLQ",
                "FORMBRIDGE_DELIVERY_QUEUE", "FORMBRIDGE_DELIVERY_DLQ", "FORMBRIDGE_EVENT_BUS"]
MASTER_KEYS = "k1:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
ALERT_EMAIL = "ops@example.com"
PUBLIC_ORIGIN = "https://dash.example.com"

# function logical id -> (name suffix, role, timeout s, extra env: value or None for "any")
FUNCTIONS = {
    "IngestFunction": ("ingest", "IngestRole", 30, {"FORMBRIDGE_MASTER_KEYS": None}),
    "PersisterFunction": ("persister", "PersisterRole", 30, {}),
    "AggregatorFunction": ("aggregator", "AggregatorRole", 60, {}),
    "DeliveryFanoutFunction": ("delivery-fanout", "DeliveryRole", 60,
                               {"FORMBRIDGE_MASTER_KEYS": None, "DELIVERY_LAMBDA_HANDLER": "fanout"}),
    "DeliveryWorkerFunction": ("delivery-worker", "DeliveryRole", 60,
                               {"FORMBRIDGE_MASTER_KEYS": None, "DELIVERY_LAMBDA_HANDLER": "worker"}),
    "DeliveryDeadLettersFunction": ("delivery-dead-letters", "DeliveryRole", 20,
                                    {"FORMBRIDGE_MASTER_KEYS": None, "DELIVERY_LAMBDA_HANDLER": "dead-letters"}),
    "ApiFunction": ("api", "ApiRole", 60, {"FORMBRIDGE_MASTER_KEYS": None, "API_SECURE_COOKIES": "true",
                                           "API_PUBLIC_ORIGIN": PUBLIC_ORIGIN, "API_TENANT_READ_ROLE_ARN": None}),
}
FANOUT_FILTER = {"eventName": ["INSERT"], "dynamodb": {"Keys": {"PK": {"S": [{"prefix": "SUB#"}]}}}}

# How many resources of each type a deployment makes (the types that differ between modes, and
# those both share), so that a wrong Condition shows.
COMMON_KINDS = {"AWS::DynamoDB::Table": 2, "AWS::Events::EventBus": 1, "AWS::IAM::Policy": 1, "AWS::SNS::Topic": 1,
                "AWS::CloudWatch::Dashboard": 1, "AWS::Events::Rule": 3}
MODE_KINDS = {
    "lambda": {"AWS::Lambda::Function": 7, "AWS::Lambda::EventSourceMapping": 5, "AWS::Lambda::Permission": 4,
               "AWS::SQS::Queue": 5, "AWS::Logs::LogGroup": 7, "AWS::IAM::Role": 6, "AWS::ECS::Cluster": 0,
               "AWS::ECS::Service": 0, "AWS::ECS::TaskDefinition": 0, "AWS::ElasticLoadBalancingV2::LoadBalancer": 0,
               "AWS::EC2::SecurityGroup": 0},
    "ecs": {"AWS::Lambda::Function": 0, "AWS::Lambda::EventSourceMapping": 0, "AWS::Lambda::Permission": 0,
            "AWS::SQS::Queue": 4, "AWS::Logs::LogGroup": 5, "AWS::IAM::Role": 7, "AWS::ECS::Cluster": 1,
            "AWS::ECS::Service": 5, "AWS::ECS::TaskDefinition": 5, "AWS::ElasticLoadBalancingV2::LoadBalancer": 1,
            "AWS::ElasticLoadBalancingV2::TargetGroup": 2, "AWS::ElasticLoadBalancingV2::Listener": 1,
            "AWS::ElasticLoadBalancingV2::ListenerRule": 3, "AWS::EC2::SecurityGroup": 3},
}

# ECS: process -> (port or None, needs the master keys)
PROCESSES = {"ingest": (8080, True), "persister": (None, False), "aggregator": (None, False),
             "delivery": (None, True), "api": (8090, True)}


def client(name):
    return boto3.client(name, endpoint_url=ENDPOINT, region_name=REGION)


def policy_doc(doc):
    """moto hands back a policy document as JSON, or as CloudFormation resolved it: a Python
    literal."""
    if isinstance(doc, str):
        try:
            return json.loads(doc)
        except json.JSONDecodeError:
            return ast.literal_eval(doc)
    return doc


def as_list(v):
    return v if isinstance(v, list) else [v]


def statements(doc):
    return as_list(policy_doc(doc)["Statement"])


def actions_of(stmts):
    return {a for s in stmts for a in as_list(s["Action"])}


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def without_novalue_list_items(doc, template):
    """The template with every list item that settles to `AWS::NoValue` in this deployment
    removed (what CloudFormation does and moto does not), and how many there were."""
    removed = 0

    def walk(v):
        nonlocal removed
        if isinstance(v, list):
            out = []
            for item in v:
                found = cfn_template.intrinsic(item)
                if found and found[0] == "Fn::If":
                    cond, yes, no = found[1]
                    if (yes if template.conditions[cond] else no) == {"Ref": "AWS::NoValue"}:
                        removed += 1
                        continue
                out.append(walk(item))
            return out
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(doc), removed


class Deployment:
    def __init__(self, mode):
        self.mode = mode
        self.suffix = uuid.uuid4().hex[:8]
        self.stack = f"formbridge-{mode}-{self.suffix}"
        s = self.suffix
        self.names = {
            "TableName": f"FormBridgeData-cfn-{s}",
            "ControlTableName": f"FormBridgeControl-cfn-{s}",
            "IngestQueueName": f"formbridge-ingest-cfn-{s}",
            "IngestDlqName": f"formbridge-ingest-dlq-cfn-{s}",
            "DeliveryQueueName": f"formbridge-deliveries-cfn-{s}",
            "DeliveryDlqName": f"formbridge-deliveries-dlq-cfn-{s}",
            "EventBusName": f"formbridge-cfn-{s}",
        }
        self.cfn = client("cloudformation")
        self.created_stack = False
        self.bucket = None
        self.secret_arn = None

    # ------------------------------------------------------------ set-up, deploy, tear-down

    def prepare(self):
        self.secret_arn = client("secretsmanager").create_secret(
            Name=f"formbridge/master-keys-{self.suffix}", SecretString=MASTER_KEYS)["ARN"]
        params = dict(self.names, ComputeMode=self.mode, MasterKeysSecret=self.secret_arn, AlertEmail=ALERT_EMAIL)
        if self.mode == "lambda":
            # The functions' code: a tiny zip per binary where the template looks for it.
            self.bucket = f"formbridge-code-{self.suffix}"
            s3 = client("s3")
            s3.create_bucket(Bucket=self.bucket)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("bootstrap", "#!/bin/sh\nexit 1\n")
            for binary in LAMBDA_BINARIES:
                s3.put_object(Bucket=self.bucket, Key=f"releases/test-{self.suffix}/{binary}.zip", Body=buf.getvalue())
            params.update(CodeBucket=self.bucket, CodePrefix=f"releases/test-{self.suffix}", PublicOrigin=PUBLIC_ORIGIN)
        else:
            ec2 = client("ec2")
            vpc = next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault"))
            subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"])
            expect(len(subnets) >= 2, "the engine's default VPC has two subnets")
            self.vpc, self.subnets = vpc, subnets[:2]
            self.image = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/formbridge:test-{self.suffix}"
            params.update(ContainerImage=self.image, VpcId=vpc, SubnetIds=",".join(self.subnets),
                          PublicSubnetIds=",".join(self.subnets))
        self.params = params

    def deploy(self):
        template = cfn_template.Template.load().for_parameters(**self.params)
        self.template = template
        doc, removed = without_novalue_list_items(template.doc, template)
        if removed:
            body = json.dumps(doc)
        else:
            with open(cfn_template.TEMPLATE) as f:
                body = f.read()
        self.cfn.create_stack(
            StackName=self.stack,
            TemplateBody=body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in self.params.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        self.created_stack = True
        status = next(s["StackStatus"] for s in self.cfn.list_stacks()["StackSummaries"] if s["StackName"] == self.stack)
        expect(status == "CREATE_COMPLETE", f"{self.stack}: {status}")
        summaries = self.cfn.list_stack_resources(StackName=self.stack)["StackResourceSummaries"]
        self.res = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries if r["LogicalResourceId"]}
        expected = {k for k, v in template.created().items() if v["Type"] not in NOT_MODELED}
        expect(set(self.res) == expected,
               f"{self.mode}: the stack's resources differ from the template's: "
               f"missing {sorted(expected - set(self.res))}, unexpected {sorted(set(self.res) - expected)}")
        kinds = {}
        for r in summaries:
            if r["LogicalResourceId"]:
                kinds[r["ResourceType"]] = kinds.get(r["ResourceType"], 0) + 1
        want = dict(COMMON_KINDS, **MODE_KINDS[self.mode])
        expect({k: kinds.get(k, 0) for k in want} == want, f"{self.mode}: resources by type {kinds}")
        return len(self.res)

    def tear_down(self):
        if self.created_stack:
            self.cfn.delete_stack(StackName=self.stack)
            ddb = client("dynamodb")
            # DeletionPolicy Retain: the data table outlives its stack; the control table does not.
            try:
                ddb.describe_table(TableName=self.names["TableName"])
            except ddb.exceptions.ResourceNotFoundException:
                raise AssertionError("the data table was deleted with its stack (DeletionPolicy: Retain)") from None
            try:
                ddb.describe_table(TableName=self.names["ControlTableName"])
                raise AssertionError("the control table was kept after the stack was deleted")
            except ddb.exceptions.ResourceNotFoundException:
                pass
            ddb.delete_table(TableName=self.names["TableName"])
        if self.bucket:
            s3 = client("s3")
            for o in s3.list_objects_v2(Bucket=self.bucket).get("Contents", []):
                s3.delete_object(Bucket=self.bucket, Key=o["Key"])
            s3.delete_bucket(Bucket=self.bucket)
        if self.secret_arn:
            client("secretsmanager").delete_secret(SecretId=self.secret_arn, ForceDeleteWithoutRecovery=True)

    # ------------------------------------------------------------ both modes

    def check_data(self):
        ddb = client("dynamodb")
        data = ddb.describe_table(TableName=self.names["TableName"])["Table"]
        expect({k["AttributeName"] for k in data["KeySchema"]} == {"PK", "SK"}, "data table keys")
        expect(sorted(i["IndexName"] for i in data["GlobalSecondaryIndexes"]) == ["GSI1", "GSI2", "GSI3"], "indexes")
        expect(data["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES", "stream view")
        expect(data.get("BillingModeSummary", {}).get("BillingMode", "PAY_PER_REQUEST") == "PAY_PER_REQUEST", "billing")
        self.stream_arn = data["LatestStreamArn"]
        ddb.describe_table(TableName=self.names["ControlTableName"])

        sqs = client("sqs")
        lam = self.mode == "lambda"
        self.queue_arns = {}
        for queue, dlq, receives, visibility in [("IngestQueueName", "IngestDlqName", 20, 180 if lam else 60),
                                                 ("DeliveryQueueName", "DeliveryDlqName", 8, 360 if lam else 90)]:
            url = sqs.get_queue_url(QueueName=self.names[queue])["QueueUrl"]
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            redrive = json.loads(attrs["RedrivePolicy"])
            expect(redrive["deadLetterTargetArn"].endswith(":" + self.names[dlq]), redrive)
            expect(int(redrive["maxReceiveCount"]) == receives, redrive)
            expect(int(attrs["VisibilityTimeout"]) == visibility, f"{queue} visibility {attrs['VisibilityTimeout']}")
            self.queue_arns[queue] = attrs["QueueArn"]
            dlq_url = sqs.get_queue_url(QueueName=self.names[dlq])["QueueUrl"]
            dlq_attrs = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
            self.queue_arns[dlq] = dlq_attrs["QueueArn"]
            if dlq == "DeliveryDlqName":
                expect(int(dlq_attrs["VisibilityTimeout"]) == (120 if lam else 30), "delivery DLQ visibility")
        if lam:
            failures = sqs.get_queue_attributes(QueueUrl=self.res["StreamFailuresQueue"],
                                                AttributeNames=["All"])["Attributes"]
            expect(int(failures["MessageRetentionPeriod"]) == 1209600, "stream failures kept 14 days")
            self.queue_arns["StreamFailures"] = failures["QueueArn"]
        events = client("events")
        events.describe_event_bus(Name=self.names["EventBusName"])
        # The bus's rules e-mail the pipeline's own alarms through the alarm topic.
        rules = {r["Name"]: r for r in events.list_rules(EventBusName=self.names["EventBusName"])["Rules"]}
        want = {"DataLossEventRule": ("formbridge.stream", "StreamRecordsTrimmed"),
                "DestinationDisabledEventRule": ("formbridge.delivery", "DestinationDisabled"),
                "CostAlertEventRule": ("formbridge.costs", "CostThresholdCrossed")}
        for logical, (source, detail_type) in want.items():
            name = self.res[logical].split("|")[-1]
            expect(name in rules, (logical, name, sorted(rules)))
            pattern = json.loads(rules[name]["EventPattern"])
            expect(pattern == {"source": [source], "detail-type": [detail_type]}, (logical, pattern))
            targets = events.list_targets_by_rule(Rule=name, EventBusName=self.names["EventBusName"])["Targets"]
            expect([t["Arn"] for t in targets] == [self.res["AlarmTopic"]], (logical, targets))

    def check_roles(self):
        iam = client("iam")
        service = "lambda.amazonaws.com" if self.mode == "lambda" else "ecs-tasks.amazonaws.com"
        self.role_arns = {}
        for role, process in PROCESS_ROLES.items():
            name = self.res[role]
            r = iam.get_role(RoleName=name)["Role"]
            self.role_arns[role] = r["Arn"]
            trust = statements(r["AssumeRolePolicyDocument"])
            expect([s["Principal"] for s in trust] == [{"Service": service}], (role, trust))
            policies = sorted(iam.list_role_policies(RoleName=name)["PolicyNames"])
            want = [process] + (["lambda-platform"] if self.mode == "lambda" else []) + (
                ["tenant-read"] if role == "ApiRole" else [])
            expect(policies == sorted(want), (role, policies))
            own = statements(iam.get_role_policy(RoleName=name, PolicyName=process)["PolicyDocument"])
            acts = actions_of(own)
            expect(acts and all(":" in a and "*" not in a for a in acts), (role, acts))

        reader = iam.get_role(RoleName=self.res["ApiTenantReadRole"])["Role"]
        trust = statements(reader["AssumeRolePolicyDocument"])
        expect(len(trust) == 1 and trust[0]["Principal"] == {"AWS": self.role_arns["ApiRole"]}, trust)
        expect(actions_of(trust) == {"sts:AssumeRole", "sts:TagSession"}, trust)
        read = statements(iam.get_role_policy(RoleName=self.res["ApiTenantReadRole"],
                                              PolicyName="tenant-data-read")["PolicyDocument"])
        expect(actions_of(read) == {"dynamodb:Query"}, read)
        keys = read[0]["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        # Which keys is the API's unit test's business (readers.rs, against the key functions).
        expect(keys and all("${aws:PrincipalTag/tenant}" in k for k in keys), keys)
        assume = statements(iam.get_role_policy(RoleName=self.res["ApiRole"], PolicyName="tenant-read")["PolicyDocument"])
        expect(actions_of(assume) == {"sts:AssumeRole", "sts:TagSession"}, assume)
        expect(assume[0]["Resource"] == reader["Arn"], assume)

        if self.mode == "ecs":
            ex = iam.get_role(RoleName=self.res["TaskExecutionRole"])["Role"]
            self.execution_role_arn = ex["Arn"]
            expect([s["Principal"] for s in statements(ex["AssumeRolePolicyDocument"])]
                   == [{"Service": "ecs-tasks.amazonaws.com"}], "execution role trust")
            ex_policy = statements(iam.get_role_policy(RoleName=self.res["TaskExecutionRole"],
                                                       PolicyName="task-execution")["PolicyDocument"])
            secret = [s for s in ex_policy if "secretsmanager:GetSecretValue" in as_list(s["Action"])]
            expect(secret and secret[0]["Resource"] == self.secret_arn, "the execution role reads the master keys")
        else:
            expect("TaskExecutionRole" not in self.res, "no task execution role in Lambda mode")

    def log_group_arn(self, name):
        return f"arn:aws:logs:{REGION}:123456789012:log-group:{name}:*"

    def check_lambda_platform_policies(self):
        iam = client("iam")
        fn = lambda logical: f"/aws/lambda/{self.stack}-{FUNCTIONS[logical][0]}"  # noqa: E731
        want = {
            "IngestRole": {("logs:PutLogEvents", self.log_group_arn(fn("IngestFunction")))},
            "PersisterRole": {("logs:PutLogEvents", self.log_group_arn(fn("PersisterFunction"))),
                              ("sqs:GetQueueAttributes", self.queue_arns["IngestQueueName"])},
            "AggregatorRole": {("logs:PutLogEvents", self.log_group_arn(fn("AggregatorFunction"))),
                               ("dynamodb:GetRecords", self.stream_arn),
                               ("sqs:SendMessage", self.queue_arns["StreamFailures"])},
            "DeliveryRole": {("logs:PutLogEvents", self.log_group_arn(fn(f)))
                             for f in ["DeliveryFanoutFunction", "DeliveryWorkerFunction", "DeliveryDeadLettersFunction"]}
            | {("dynamodb:GetRecords", self.stream_arn), ("sqs:SendMessage", self.queue_arns["StreamFailures"]),
               ("sqs:GetQueueAttributes", self.queue_arns["DeliveryQueueName"]),
               ("sqs:GetQueueAttributes", self.queue_arns["DeliveryDlqName"])},
            "ApiRole": {("logs:PutLogEvents", self.log_group_arn(fn("ApiFunction")))},
        }
        for role, pairs in want.items():
            stmts = statements(iam.get_role_policy(RoleName=self.res[role], PolicyName="lambda-platform")["PolicyDocument"])
            have = {(a, r) for s in stmts for a in as_list(s["Action"]) for r in as_list(s["Resource"])}
            expect(pairs <= have, f"{role} lambda-platform lacks {sorted(pairs - have)}")
            expect(all("*" not in a for a, _ in have), (role, have))

    def check_monitoring(self):
        sns = client("sns")
        subs = sns.list_subscriptions_by_topic(TopicArn=self.res["AlarmTopic"])["Subscriptions"]
        expect([(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", ALERT_EMAIL)], subs)

        logs = client("logs")
        if self.mode == "lambda":
            names = {f"/aws/lambda/{self.stack}-{v[0]}" for v in FUNCTIONS.values()}
            groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{self.stack}-")["logGroups"]
        else:
            names = {f"/formbridge/{p}" for p in PROCESSES}
            groups = logs.describe_log_groups(logGroupNamePrefix="/formbridge/")["logGroups"]
        expect({g["logGroupName"] for g in groups} == names, sorted(g["logGroupName"] for g in groups))
        expect(all(g.get("retentionInDays") == 14 for g in groups), [(g["logGroupName"], g.get("retentionInDays")) for g in groups])

        body = json.loads(client("cloudwatch").get_dashboard(DashboardName=self.stack)["DashboardBody"])
        widgets = body["widgets"]
        expect(all(w["properties"]["region"] == REGION for w in widgets), "every widget in the stack's region")
        rows = [m for w in widgets for m in w["properties"]["metrics"]]
        named = {(r[0], r[1]) for r in rows if isinstance(r[0], str)}
        values = {v for r in rows for v in r if isinstance(v, str)}
        shown = {(r[0], r[1], r[3]) for r in rows if isinstance(r[0], str) and len(r) > 3}

        def shows(namespace, metric, names):
            for n in names:
                expect((namespace, metric, n) in shown, f"the dashboard lacks {namespace} {metric} of {n}")

        queues = [self.names[n] for n in ["IngestQueueName", "DeliveryQueueName", "IngestDlqName", "DeliveryDlqName"]]
        if self.mode == "lambda":
            queues.append(self.res["StreamFailuresQueue"].rsplit("/", 1)[1])
        shows("AWS/SQS", "ApproximateNumberOfMessagesVisible", queues)
        shows("AWS/SQS", "ApproximateAgeOfOldestMessage", [self.names["IngestQueueName"], self.names["DeliveryQueueName"]])
        for metric in ["ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"]:
            shows("AWS/DynamoDB", metric, [self.names["TableName"], self.names["ControlTableName"]])
        expect({("FormBridge", "StreamLagSeconds", g) for g in ["aggregator", "delivery"]} <= shown, "stream lag per group")
        for metric in [("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
                       ("FormBridge", "StreamLagSeconds"), ("FormBridge", "Ingest5xx"), ("FormBridge", "DeliveriesFailed"),
                       ("AWS/DynamoDB", "ConsumedReadCapacityUnits"), ("AWS/DynamoDB", "ConsumedWriteCapacityUnits")]:
            expect(metric in named, f"the dashboard shows {metric}")
        if self.mode == "lambda":
            for metric in ["Invocations", "Errors", "Duration", "UrlRequestCount", "Url5xxCount", "IteratorAge"]:
                expect(("AWS/Lambda", metric) in named, f"the dashboard shows Lambda {metric}")
            functions = [f"{self.stack}-{v[0]}" for v in FUNCTIONS.values()]
            for metric in ["Invocations", "Errors", "Duration"]:
                shows("AWS/Lambda", metric, functions)
            shows("AWS/Lambda", "IteratorAge", [self.res["AggregatorFunction"], self.res["DeliveryFanoutFunction"]])
            shows("AWS/Lambda", "Url5xxCount", [self.res["IngestFunction"]])
        else:
            for metric in [("AWS/ECS", "CPUUtilization"), ("AWS/ECS", "MemoryUtilization"),
                           ("AWS/ApplicationELB", "RequestCount"), ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count")]:
                expect(metric in named, f"the dashboard shows {metric}")
            lb = self.res["LoadBalancer"].split("loadbalancer/", 1)[1]
            tg = self.res["IngestTargetGroup"].rsplit(":", 1)[1]
            expect(lb in values and tg in values, "the dashboard names the load balancer and target group")
            services = [arn.rsplit("/", 1)[1] for arn in client("ecs").list_services(cluster=self.res["Cluster"])["serviceArns"]]
            expect(len(services) == 5, services)
            cluster = self.res["Cluster"]
            for metric in ["CPUUtilization", "MemoryUtilization"]:
                rows_of = {tuple(r[2:6]) for r in rows if r[:2] == ["AWS/ECS", metric]}
                expect(rows_of == {("ClusterName", cluster, "ServiceName", s) for s in services}, f"the dashboard's ECS {metric}: {rows_of}")

    # ------------------------------------------------------------ Lambda mode

    def check_functions(self):
        lam = client("lambda")
        for logical, (suffix, role, timeout, extra) in FUNCTIONS.items():
            name = self.res[logical]
            expect(name == f"{self.stack}-{suffix}", (logical, name))
            c = lam.get_function_configuration(FunctionName=name)
            expect(c["Runtime"] == "provided.al2023" and c["Handler"] == "bootstrap", (name, c["Runtime"], c["Handler"]))
            expect(c["Role"] == self.role_arns[role], (name, c["Role"]))
            expect(c["MemorySize"] == 256 and c["Timeout"] == timeout, (name, c["MemorySize"], c["Timeout"]))
            env = c["Environment"]["Variables"]
            expect(set(env) == set(RESOURCE_ENV) | {"RUST_LOG"} | set(extra), (name, sorted(env)))
            for var, param in zip(RESOURCE_ENV, ["TableName", "ControlTableName", "IngestQueueName", "IngestDlqName",
                                                 "DeliveryQueueName", "DeliveryDlqName", "EventBusName"]):
                expect(env[var] == self.names[param], (name, var, env[var]))
            expect(env["RUST_LOG"] == "info", name)
            for var, value in extra.items():
                if value is not None:
                    expect(env[var] == value, (name, var, env[var]))
            if "FORMBRIDGE_MASTER_KEYS" in extra:
                # moto leaves the dynamic reference unresolved; CloudFormation resolves it.
                v = env["FORMBRIDGE_MASTER_KEYS"]
                expect(v == MASTER_KEYS or v == f"{{{{resolve:secretsmanager:{self.secret_arn}:SecretString}}}}", (name, v))

    def check_event_sources(self):
        lam = client("lambda")

        def mapping(logical):
            found = lam.list_event_source_mappings(FunctionName=self.res[logical])["EventSourceMappings"]
            expect(len(found) == 1, (logical, found))
            return found[0]

        rbif = ["ReportBatchItemFailures"]
        for logical, queue, window in [("PersisterFunction", "IngestQueueName", 5),
                                       ("DeliveryWorkerFunction", "DeliveryQueueName", None),
                                       ("DeliveryDeadLettersFunction", "DeliveryDlqName", None)]:
            m = mapping(logical)
            expect(m["EventSourceArn"] == self.queue_arns[queue], (logical, m["EventSourceArn"]))
            expect(int(m["BatchSize"]) == 10 and m["FunctionResponseTypes"] == rbif, (logical, m))
            if window is not None:
                expect(int(m["MaximumBatchingWindowInSeconds"]) == window, (logical, m))
        for logical in ["AggregatorFunction", "DeliveryFanoutFunction"]:
            m = mapping(logical)
            expect(m["EventSourceArn"] == self.stream_arn, (logical, m["EventSourceArn"]))
            expect(m["StartingPosition"] == "TRIM_HORIZON" and int(m["BatchSize"]) == 1000, (logical, m))
            expect(int(m["MaximumBatchingWindowInSeconds"]) == 10 and int(m["MaximumRetryAttempts"]) == 10, (logical, m))
            expect(m["BisectBatchOnFunctionError"] is True and int(m["ParallelizationFactor"]) == 1, (logical, m))
            expect(m["FunctionResponseTypes"] == rbif, (logical, m))
            expect(m["DestinationConfig"] == {"OnFailure": {"Destination": self.queue_arns["StreamFailures"]}}, (logical, m))
            patterns = [json.loads(f["Pattern"]) for f in m.get("FilterCriteria", {}).get("Filters", [])]
            expect(patterns == ([FANOUT_FILTER] if logical == "DeliveryFanoutFunction" else []), (logical, patterns))

    def check_function_urls(self):
        # moto does not model AWS::Lambda::Url; the permissions a public URL needs it does.
        lam = client("lambda")
        for logical in ["IngestFunction", "ApiFunction"]:
            stmts = json.loads(lam.get_policy(FunctionName=self.res[logical])["Policy"])["Statement"]
            url = [s for s in stmts if s["Action"] == "lambda:InvokeFunctionUrl"]
            invoke = [s for s in stmts if s["Action"] == "lambda:InvokeFunction"]
            expect(len(url) == 1 and url[0]["Principal"] == "*" and "NONE" in json.dumps(url[0]), (logical, stmts))
            expect(len(invoke) == 1 and invoke[0]["Principal"] == "*" and invoke[0].get("InvokedViaFunctionUrl") in (True, "true"),
                   (logical, stmts))
        for logical in ["PersisterFunction", "AggregatorFunction", "DeliveryFanoutFunction"]:
            try:
                lam.get_policy(FunctionName=self.res[logical])
                raise AssertionError(f"{logical} has a resource policy: only the URL functions are public")
            except lam.exceptions.ResourceNotFoundException:
                pass

    # ------------------------------------------------------------ ECS mode

    def check_ecs(self):
        ecs = client("ecs")
        cluster = self.res["Cluster"]
        expect(ecs.describe_clusters(clusters=[cluster])["clusters"][0]["status"] == "ACTIVE", "cluster")
        self.services = {}
        for process, (port, secret) in PROCESSES.items():
            logical = f"{process.capitalize()}Service"
            svc = ecs.describe_services(cluster=cluster, services=[self.res[logical]])["services"][0]
            expect(svc["desiredCount"] == 1, (logical, svc["desiredCount"]))
            td = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
            expect(td["family"] == f"{self.stack}-{process}", (logical, td["family"]))
            expect(str(td.get("memory")) == "512", (logical, td.get("memory")))
            (c,) = td["containerDefinitions"]
            expect(c["name"] == process and c["image"] == self.image and c["command"] == [f"formbridge-{process}"],
                   (logical, c["name"], c["image"], c["command"]))
            env = {e["name"]: e["value"] for e in c["environment"]}
            listen = {"ingest": {"INGEST_LISTEN": "0.0.0.0:8080"},
                      "api": {"API_LISTEN": "0.0.0.0:8090", "API_SECURE_COOKIES": "true"}}.get(process, {})
            api_only = {"API_PUBLIC_ORIGIN", "API_TENANT_READ_ROLE_ARN"}
            want = set(RESOURCE_ENV) | {"RUST_LOG"} | set(listen) | (api_only if process == "api" else set())
            expect(set(env) == want, (logical, sorted(env)))
            expect(env["FORMBRIDGE_EVENT_BUS"] == self.names["EventBusName"], (logical, env["FORMBRIDGE_EVENT_BUS"]))
            expect(env["FORMBRIDGE_TABLE"] == self.names["TableName"], (logical, env["FORMBRIDGE_TABLE"]))
            for k, v in listen.items():
                expect(env[k] == v, (logical, k, env[k]))
            if process == "api":
                dns = client("elbv2").describe_load_balancers(
                    LoadBalancerArns=[self.res["LoadBalancer"]])["LoadBalancers"][0]["DNSName"]
                expect(env["API_PUBLIC_ORIGIN"] == f"http://{dns}", env["API_PUBLIC_ORIGIN"])
            secrets = c.get("secrets", [])
            expect(secrets == ([{"name": "FORMBRIDGE_MASTER_KEYS", "valueFrom": self.secret_arn}] if secret else []),
                   (logical, secrets))
            expect("FORMBRIDGE_MASTER_KEYS" not in env, "the master keys never in a task definition's plain environment")
            log = c["logConfiguration"]
            expect(log["logDriver"] == "awslogs" and log["options"] == {
                "awslogs-group": f"/formbridge/{process}", "awslogs-region": REGION, "awslogs-stream-prefix": process},
                (logical, log))
            ports = [p["containerPort"] for p in c.get("portMappings", [])]
            expect(ports == ([port] if port else []), (logical, ports))

    def check_load_balancer(self):
        elb = client("elbv2")
        lb = elb.describe_load_balancers(LoadBalancerArns=[self.res["LoadBalancer"]])["LoadBalancers"][0]
        expect(lb["Scheme"] == "internet-facing" and lb["Type"] == "application", lb)
        expect(sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) == sorted(self.subnets), lb["AvailabilityZones"])
        ingest_tg, api_tg = self.res["IngestTargetGroup"], self.res["ApiTargetGroup"]
        for tg, port in [(ingest_tg, 8080), (api_tg, 8090)]:
            t = elb.describe_target_groups(TargetGroupArns=[tg])["TargetGroups"][0]
            expect(t["Port"] == port and t["Protocol"] == "HTTP" and t["HealthCheckPath"] == "/healthz", t)
            expect(t.get("TargetType", "ip") == "ip" and t["VpcId"] == self.vpc, t)
        (listener,) = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        expect(listener["Port"] == 80 and listener["Protocol"] == "HTTP", listener)
        expect(listener["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": ingest_tg}], listener["DefaultActions"])
        rules = {r["Priority"]: r for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]}
        expect(sorted(rules) == ["10", "20", "30", "default"], sorted(rules))

        def conditions(r):
            out = {}
            for c in r["Conditions"]:
                cfg = c.get("PathPatternConfig") or c.get("HttpRequestMethodConfig") or {}
                out[c["Field"]] = cfg.get("Values", c.get("Values"))
            return out

        expect(conditions(rules["10"]) == {"path-pattern": ["/metrics"]}
               and rules["10"]["Actions"][0]["Type"] == "fixed-response"
               and rules["10"]["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "404", rules["10"])
        expect(conditions(rules["20"]) == {"path-pattern": ["/v1/submissions"], "http-request-method": ["POST"]}
               and rules["20"]["Actions"] == [{"Type": "forward", "TargetGroupArn": ingest_tg}], rules["20"])
        expect(conditions(rules["30"]) == {"path-pattern": ["/v1/*", "/", "/portal", "/assets/*"]}
               and rules["30"]["Actions"] == [{"Type": "forward", "TargetGroupArn": api_tg}], rules["30"])

        ec2 = client("ec2")
        alb_sg, web_sg, worker_sg = (self.res[k] for k in ["AlbSecurityGroup", "WebTaskSecurityGroup", "WorkerTaskSecurityGroup"])
        expect(lb.get("SecurityGroups") in (None, [alb_sg]), lb.get("SecurityGroups"))
        groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=[alb_sg, web_sg, worker_sg])["SecurityGroups"]}
        ingress = {gid: {(p["FromPort"], tuple(r["CidrIp"] for r in p["IpRanges"]),
                          tuple(u["GroupId"] for u in p["UserIdGroupPairs"])) for p in g["IpPermissions"]}
                   for gid, g in groups.items()}
        expect(ingress[alb_sg] == {(80, ("0.0.0.0/0",), ()), (443, ("0.0.0.0/0",), ())}, ingress[alb_sg])
        expect(ingress[web_sg] == {(8080, (), (alb_sg,)), (8090, (), (alb_sg,))}, ingress[web_sg])
        expect(ingress[worker_sg] == set(), ingress[worker_sg])
        expect(all(g["VpcId"] == self.vpc for g in groups.values()), "security groups in the VPC")

        outputs = {o["OutputKey"]: o["OutputValue"] for o in
                   self.cfn.describe_stacks(StackName=self.stack)["Stacks"][0].get("Outputs", [])}
        expect(outputs["IngestEndpoint"] == f"http://{lb['DNSName']}/", outputs)
        expect(outputs["ApiTenantReadRoleArn"].split("/")[-1] == self.res["ApiTenantReadRole"], outputs)

    def run(self):
        try:
            self.prepare()
            count = self.deploy()
            self.check_data()
            self.check_roles()
            self.check_monitoring()
            if self.mode == "lambda":
                self.check_lambda_platform_policies()
                self.check_functions()
                self.check_event_sources()
                self.check_function_urls()
            else:
                self.check_ecs()
                self.check_load_balancer()
            return count
        finally:
            self.tear_down()


def main():
    for mode in ["lambda", "ecs"]:
        count = Deployment(mode).run()
        print(f"==> the template deployed to the local engine in {mode} mode: {count} resources checked", file=sys.stderr)


if __name__ == "__main__":
    main()
