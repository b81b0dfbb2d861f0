"""Checks deploy/aws/formbridge.yaml by its definitions, for what the local engine's
CloudFormation skips (alarms, budgets, metric filters, Function URLs, autoscaling) or cannot show
(architectures, log configuration), and for rules that hold across the whole template. Each check
runs against the template as a deployment in each mode would see it (conditions evaluated,
`Fn::If` settled):

- alarms: each one listed in ALARMS exists in its modes, no other does, with its namespace,
  metric, dimensions (pointing at resources that exist whenever the alarm does), statistic,
  comparison, threshold, missing-data treatment, and the alarm topic as its action;
- metric filters: each reads the log groups of the processes that emit its metric in that mode,
  matches `{ $.metric = "<name>" }`, takes `$.value` (and the `Group` dimension from `$.group`);
  every metric a filter makes is used by an alarm or the dashboard, and every alarm on the
  FormBridge namespace is fed by a filter;
- the dashboard body is valid JSON in both modes;
- the three budgets: amounts, and ACTUAL and FORECASTED notifications by e-mail;
- every event source mapping's settings, every Lambda function's log group (named after it, with
  the retention parameter), runtime and architecture, and the Function URLs;
- ECS autoscaling targets and policies;
- no wildcard action in any policy, and every role's trust principal;
- the event bus's rules: each e-mails through the alarm topic, whose policy lets exactly those
  rules and this account's CloudWatch alarms publish.

No engine needed: python3 with PyYAML (./deploy/local/test.sh runs it with .venv's python).
"""

import json
import os
import re
import sys
import traceback

sys.dont_write_bytecode = True  # no __pycache__ beside the template
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cfn_template import Template, intrinsic, refers_to  # noqa: E402

MODES = ["lambda", "ecs"]
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0123abcd-0123-4567-89ab-0123456789ab"


def ref(x):
    return {"Ref": x}


def att(x, a):
    return {"Fn::GetAtt": [x, a]}


GT = "GreaterThanThreshold"
SQS_VISIBLE = ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
SQS_AGE = ("AWS/SQS", "ApproximateAgeOfOldestMessage")

# alarm -> (modes, (namespace, metric), dimensions, statistic, threshold)
ALARMS = {
    "IngestDlqDepthAlarm": (MODES, SQS_VISIBLE, {"QueueName": att("IngestDlq", "QueueName")}, "Maximum", 0),
    "DeliveryDlqDepthAlarm": (MODES, SQS_VISIBLE, {"QueueName": att("DeliveryDlq", "QueueName")}, "Minimum", 0),
    "StreamFailuresDepthAlarm": (["lambda"], SQS_VISIBLE, {"QueueName": att("StreamFailuresQueue", "QueueName")}, "Maximum", 0),
    "IngestQueueAgeAlarm": (MODES, SQS_AGE, {"QueueName": att("IngestQueue", "QueueName")}, "Maximum", ref("IngestQueueAgeAlarmSeconds")),
    "DeliveryQueueAgeAlarm": (MODES, SQS_AGE, {"QueueName": att("DeliveryQueue", "QueueName")}, "Maximum",
                              ref("DeliveryQueueAgeAlarmSeconds")),
    "AggregatorStreamLagAlarm": (MODES, ("FormBridge", "StreamLagSeconds"), {"Group": "aggregator"}, "Maximum",
                                 ref("StreamLagAlarmSeconds")),
    "DeliveryStreamLagAlarm": (MODES, ("FormBridge", "StreamLagSeconds"), {"Group": "delivery"}, "Maximum",
                               ref("StreamLagAlarmSeconds")),
    "AggregatorIteratorAgeAlarm": (["lambda"], ("AWS/Lambda", "IteratorAge"), {"FunctionName": ref("AggregatorFunction")},
                                   "Maximum", ref("StreamLagAlarmSeconds")),
    "DeliveryFanoutIteratorAgeAlarm": (["lambda"], ("AWS/Lambda", "IteratorAge"), {"FunctionName": ref("DeliveryFanoutFunction")},
                                       "Maximum", ref("StreamLagAlarmSeconds")),
    "Ingest5xxAlarm": (MODES, ("FormBridge", "Ingest5xx"), {}, "Sum", ref("Ingest5xxAlarmCount")),
    "IngestUrl5xxAlarm": (["lambda"], ("AWS/Lambda", "Url5xxCount"), {"FunctionName": ref("IngestFunction")}, "Sum",
                          ref("Ingest5xxAlarmCount")),
    "IngestTarget5xxAlarm": (["ecs"], ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"),
                             {"LoadBalancer": att("LoadBalancer", "LoadBalancerFullName"),
                              "TargetGroup": att("IngestTargetGroup", "TargetGroupFullName")}, "Sum", ref("Ingest5xxAlarmCount")),
    "LoadBalancer5xxAlarm": (["ecs"], ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"),
                             {"LoadBalancer": att("LoadBalancer", "LoadBalancerFullName")}, "Sum", ref("Ingest5xxAlarmCount")),
    "DeliveriesFailedAlarm": (MODES, ("FormBridge", "DeliveriesFailed"), {}, "Sum", ref("DeliveryFailuresAlarmCount")),
    "StreamRecordsTrimmedAlarm": (MODES, ("FormBridge", "StreamRecordsTrimmed"), {}, "Sum", 0),
}
FUNCTIONS = {  # logical id -> (name suffix, role, binary, timeout)
    "IngestFunction": ("ingest", "IngestRole", "formbridge-ingest-lambda", 30),
    "PersisterFunction": ("persister", "PersisterRole", "formbridge-persister-lambda", 30),
    "AggregatorFunction": ("aggregator", "AggregatorRole", "formbridge-aggregator-lambda", 60),
    "DeliveryFanoutFunction": ("delivery-fanout", "DeliveryRole", "formbridge-delivery-lambda", 60),
    "DeliveryWorkerFunction": ("delivery-worker", "DeliveryRole", "formbridge-delivery-lambda", 60),
    "DeliveryDeadLettersFunction": ("delivery-dead-letters", "DeliveryRole", "formbridge-delivery-lambda", 20),
    "ApiFunction": ("api", "ApiRole", "formbridge-api-lambda", 60),
}
for _fn in FUNCTIONS:
    ALARMS[f"{_fn}ErrorsAlarm"] = (["lambda"], ("AWS/Lambda", "Errors"), {"FunctionName": ref(_fn)}, "Sum", 0)

# metric filter metric -> (log line name, log groups producing it per mode)
FILTERED_METRICS = {
    "StreamLagSeconds": ("stream_lag_seconds", {"lambda": {"AggregatorFunctionLogGroup", "DeliveryFanoutFunctionLogGroup"},
                                                "ecs": {"AggregatorTaskLogGroup", "DeliveryTaskLogGroup"}}),
    "StreamRecordsTrimmed": ("stream_trimmed", {"lambda": {"AggregatorFunctionLogGroup", "DeliveryFanoutFunctionLogGroup"},
                                                "ecs": {"AggregatorTaskLogGroup", "DeliveryTaskLogGroup"}}),
    "DeliveriesFailed": ("delivery_failed", {"lambda": {"DeliveryWorkerFunctionLogGroup", "DeliveryDeadLettersFunctionLogGroup"},
                                             "ecs": {"DeliveryTaskLogGroup"}}),
    "Ingest5xx": ("ingest_5xx", {"lambda": {"IngestFunctionLogGroup"}, "ecs": {"IngestTaskLogGroup"}}),
}
# event source mapping -> (function, source, settings)
STREAM = att("DataTable", "StreamArn")
STREAM_SETTINGS = {"StartingPosition": "TRIM_HORIZON", "BatchSize": 1000, "MaximumBatchingWindowInSeconds": ref("StreamBatchWindowSeconds"),
                   "BisectBatchOnFunctionError": True, "MaximumRetryAttempts": ref("StreamMaxRetryAttempts"),
                   "ParallelizationFactor": 1, "FunctionResponseTypes": ["ReportBatchItemFailures"],
                   "DestinationConfig": {"OnFailure": {"Destination": att("StreamFailuresQueue", "Arn")}}}
EVENT_SOURCES = {
    "PersisterEventSource": ("PersisterFunction", att("IngestQueue", "Arn"),
                             {"BatchSize": 10, "MaximumBatchingWindowInSeconds": ref("PersisterBatchWindowSeconds"),
                              "FunctionResponseTypes": ["ReportBatchItemFailures"]}),
    "AggregatorEventSource": ("AggregatorFunction", STREAM, STREAM_SETTINGS),
    "DeliveryFanoutEventSource": ("DeliveryFanoutFunction", STREAM, dict(STREAM_SETTINGS, FilterCriteria={"Filters": [
        {"Pattern": {"eventName": ["INSERT"], "dynamodb": {"Keys": {"PK": {"S": [{"prefix": "SUB#"}]}}}}}]})),
    "DeliveryWorkerEventSource": ("DeliveryWorkerFunction", att("DeliveryQueue", "Arn"),
                                  {"BatchSize": 10, "FunctionResponseTypes": ["ReportBatchItemFailures"]}),
    "DeliveryDeadLettersEventSource": ("DeliveryDeadLettersFunction", att("DeliveryDlq", "Arn"),
                                       {"BatchSize": 10, "FunctionResponseTypes": ["ReportBatchItemFailures"]}),
}
PROCESS_ROLES = ["IngestRole", "PersisterRole", "AggregatorRole", "DeliveryRole", "ApiRole"]
def templates():
    base = Template.load()
    yield "lambda", base.for_parameters(ComputeMode="lambda")
    yield "ecs", base.for_parameters(ComputeMode="ecs")
    yield "ecs", base.for_parameters(ComputeMode="ecs", CertificateArn=CERT)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def alarm_metrics(p):
    """[(namespace, metric, {dimension: value}, statistic)] an alarm watches."""
    if "MetricName" in p:
        dims = {d["Name"]: d["Value"] for d in p.get("Dimensions", [])}
        return [(p["Namespace"], p["MetricName"], dims, p.get("Statistic"))]
    out = []
    for m in p.get("Metrics", []):
        if "MetricStat" in m:
            s = m["MetricStat"]
            dims = {d["Name"]: d["Value"] for d in s["Metric"].get("Dimensions", [])}
            out.append((s["Metric"]["Namespace"], s["Metric"]["MetricName"], dims, s["Stat"]))
    return out


def check_alarms():
    for mode, t in templates():
        alarms = t.of_type("AWS::CloudWatch::Alarm")
        want = {a for a, spec in ALARMS.items() if mode in spec[0]}
        expect(set(alarms) == want, f"{mode}: alarms missing {sorted(want - set(alarms))}, unlisted {sorted(set(alarms) - want)}")
        for a in alarms:
            _, (ns, metric), dims, stat, threshold = ALARMS[a]
            p = t.properties(a)
            watched = alarm_metrics(p)
            expect(len(watched) == 1, f"{a}: watches {watched}")
            expect(watched[0] == (ns, metric, dims, stat), f"{a}: watches {watched[0]}, not {(ns, metric, dims, stat)}")
            for value in dims.values():
                target = refers_to(value)
                if target:
                    expect(target in t.resources and t.exists(target), f"{a} ({mode}): dimension names {target}, not created")
            if "Metrics" in p:
                exprs = [m for m in p["Metrics"] if m.get("ReturnData", True)]
                expect(len(exprs) == 1 and exprs[0].get("Expression") == "age / 1000", f"{a}: the returned series is age in seconds")
            expect(p["ComparisonOperator"] == GT, f"{a}: {p['ComparisonOperator']}")
            expect(p["Threshold"] == threshold, f"{a}: threshold {p['Threshold']} not {threshold}")
            expect(p.get("TreatMissingData") == "notBreaching", f"{a}: TreatMissingData {p.get('TreatMissingData')}")
            expect(p.get("AlarmActions") == [ref("AlarmTopic")], f"{a}: actions {p.get('AlarmActions')}")
            expect(p.get("ActionsEnabled", True) is True, f"{a}: actions disabled")
            expect(p.get("OKActions") == [ref("AlarmTopic")], f"{a}: OK actions {p.get('OKActions')}")
            expect(p["EvaluationPeriods"] >= p.get("DatapointsToAlarm", 1), f"{a}: datapoints")
    t = Template.load().for_parameters()
    defaults = {n: t.parameters[n] for n in ["IngestQueueAgeAlarmSeconds", "DeliveryQueueAgeAlarmSeconds", "StreamLagAlarmSeconds",
                                             "Ingest5xxAlarmCount", "DeliveryFailuresAlarmCount"]}
    expect(defaults["DeliveryQueueAgeAlarmSeconds"] > 900, "retries wait up to 900 s in the delivery queue")
    return len(ALARMS)


def metric_filters(t):
    """[(filter, log group logical id, log line name, namespace, metric, value, dimensions)]"""
    out = []
    for f in t.of_type("AWS::Logs::MetricFilter"):
        p = t.properties(f)
        m = re.fullmatch(r'\{ \$\.metric = "([a-z0-9_]+)" \}', p["FilterPattern"])
        expect(m, f"{f}: pattern {p['FilterPattern']!r}")
        (tr,) = p["MetricTransformations"]
        dims = {d["Key"]: d["Value"] for d in tr.get("Dimensions", [])}
        out.append((f, refers_to(p["LogGroupName"]), m.group(1), tr["MetricNamespace"], tr["MetricName"], tr["MetricValue"], dims))
    return out


def dashboard_metrics(t):
    """(namespace, metric) pairs the dashboard shows, from its body rendered with placeholders."""
    body = render(t, t.properties("Dashboard")["DashboardBody"])
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise AssertionError(f"the dashboard body is not JSON: {e}") from None
    pairs = set()
    for w in doc["widgets"]:
        for row in w["properties"]["metrics"]:
            if isinstance(row[0], str):
                pairs.add((row[0], row[1]))
    return pairs


def render(t, v):
    """A string value with every reference replaced by a placeholder (enough to parse JSON)."""
    if isinstance(v, str):
        return v
    fn, arg = intrinsic(v)
    if fn == "Fn::Join":
        sep, parts = arg
        return sep.join(render(t, x) for x in parts)
    if fn == "Fn::Sub":
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        return re.sub(r"\$\{([^}!]+)\}", lambda m: f"<{m.group(1)}>" if m.group(1) not in variables else "<var>", text)
    return f"<{fn}>"


def check_metric_filters():
    checked = 0
    for mode, t in templates():
        filters = metric_filters(t)
        made = {}
        for f, group, line, ns, metric, value, dims in filters:
            expect(ns == "FormBridge" and value == "$.value", f"{f}: {ns} {value}")
            expect(metric in FILTERED_METRICS, f"{f}: an unknown metric {metric}")
            want_line, groups = FILTERED_METRICS[metric]
            expect(line == want_line, f"{f}: log lines {line!r} make {metric}, not {want_line!r}")
            expect(group in groups[mode], f"{f} ({mode}): reads {group}, not one of {sorted(groups[mode])}")
            expect(t.resources[group]["Type"] == "AWS::Logs::LogGroup" and t.exists(group), f"{f} ({mode}): {group}")
            expect(dims == ({"Group": "$.group"} if metric == "StreamLagSeconds" else {}), f"{f}: dimensions {dims}")
            made.setdefault(metric, set()).add(group)
            checked += 1
        for metric, (_, groups) in FILTERED_METRICS.items():
            expect(made.get(metric) == groups[mode], f"{mode}: {metric} is made from {made.get(metric)}, not {groups[mode]}")
        used = dashboard_metrics(t)
        for a in t.of_type("AWS::CloudWatch::Alarm"):
            for ns, metric, _, _ in alarm_metrics(t.properties(a)):
                used.add((ns, metric))
                if ns == "FormBridge":
                    expect(metric in made, f"{a} ({mode}): no metric filter makes FormBridge/{metric}")
        for metric in made:
            expect(("FormBridge", metric) in used, f"{mode}: FormBridge/{metric} is made but no alarm or dashboard uses it")
    return checked


def check_dashboard():
    for mode, t in templates():
        used = dashboard_metrics(t)
        common = {("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
                  ("FormBridge", "StreamLagSeconds"), ("FormBridge", "Ingest5xx"), ("FormBridge", "DeliveriesFailed"),
                  ("AWS/DynamoDB", "ConsumedReadCapacityUnits"), ("AWS/DynamoDB", "ConsumedWriteCapacityUnits")}
        per_mode = {"lambda": {("AWS/Lambda", m) for m in ["Invocations", "Errors", "Duration", "UrlRequestCount", "Url5xxCount"]},
                    "ecs": {("AWS/ECS", "CPUUtilization"), ("AWS/ECS", "MemoryUtilization"), ("AWS/ApplicationELB", "RequestCount"),
                            ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count")}}[mode]
        expect(common | per_mode <= used, f"{mode}: the dashboard lacks {sorted((common | per_mode) - used)}")
    return 1


def check_budgets():
    t = Template.load().for_parameters()
    budgets = t.of_type("AWS::Budgets::Budget")
    want = {"BudgetWarnBudget": ("BudgetWarn", 10), "BudgetHighBudget": ("BudgetHigh", 15), "BudgetMaxBudget": ("BudgetMax", 20)}
    expect(set(budgets) == set(want), budgets)
    for b, (param, default) in want.items():
        p = t.properties(b)
        expect(p["Budget"]["BudgetType"] == "COST" and p["Budget"]["TimeUnit"] == "MONTHLY", f"{b}: {p['Budget']}")
        expect(p["Budget"]["BudgetLimit"] == {"Amount": ref(param), "Unit": "USD"}, f"{b}: {p['Budget']['BudgetLimit']}")
        expect(t.parameters[param] == default, f"{param} defaults to {t.parameters[param]}, not {default}")
        notes = {(n["Notification"]["NotificationType"], n["Notification"]["ComparisonOperator"], n["Notification"]["Threshold"],
                  n["Notification"]["ThresholdType"]) for n in p["NotificationsWithSubscribers"]}
        expect(notes == {("ACTUAL", "GREATER_THAN", 100, "PERCENTAGE"), ("FORECASTED", "GREATER_THAN", 100, "PERCENTAGE")},
               f"{b}: {notes}")
        for n in p["NotificationsWithSubscribers"]:
            expect(n["Subscribers"] == [{"SubscriptionType": "EMAIL", "Address": ref("AlertEmail")}], f"{b}: {n['Subscribers']}")
    expect(t.resources[budgets[0]].get("Condition") is None, "budgets exist in both modes")
    return len(budgets)


def check_event_sources():
    for mode, t in templates():
        esms = t.of_type("AWS::Lambda::EventSourceMapping")
        expect(set(esms) == (set(EVENT_SOURCES) if mode == "lambda" else set()), f"{mode}: {esms}")
        for e in esms:
            fn, source, settings = EVENT_SOURCES[e]
            p = t.properties(e)
            expect(p.pop("FunctionName") == ref(fn) and p.pop("EventSourceArn") == source, f"{e}: function or source")
            if "FilterCriteria" in p:
                p["FilterCriteria"] = {"Filters": [{"Pattern": json.loads(f["Pattern"])} for f in p["FilterCriteria"]["Filters"]]}
            expect(p == settings, f"{e}: {p} is not {settings}")
    t = Template.load().for_parameters()
    expect((t.parameters["PersisterBatchWindowSeconds"], t.parameters["StreamBatchWindowSeconds"],
            t.parameters["StreamMaxRetryAttempts"]) == (5, 10, 10), "event source parameter defaults")
    failures = t.properties("StreamFailuresQueue")
    expect(failures["MessageRetentionPeriod"] == 1209600, "stream failures kept 14 days")
    return len(EVENT_SOURCES)


def check_functions():
    for mode, t in templates():
        fns = t.of_type("AWS::Lambda::Function")
        expect(set(fns) == (set(FUNCTIONS) if mode == "lambda" else set()), f"{mode}: {fns}")
        for fn in fns:
            suffix, role, binary, timeout = FUNCTIONS[fn]
            p = t.properties(fn)
            expect(p["FunctionName"] == {"Fn::Sub": f"${{AWS::StackName}}-{suffix}"}, f"{fn}: {p['FunctionName']}")
            expect((p["Runtime"], p["Handler"], p["Architectures"]) == ("provided.al2023", "bootstrap", ["x86_64"]), fn)
            expect(p["Code"] == {"S3Bucket": ref("CodeBucket"), "S3Key": {"Fn::Sub": f"${{CodePrefix}}/{binary}.zip"}}, f"{fn}: {p['Code']}")
            expect(p["Role"] == att(role, "Arn") and p["Timeout"] == timeout and p["MemorySize"] == ref("LambdaMemoryMb"), fn)
            expect("ReservedConcurrentExecutions" not in p, f"{fn}: reserved concurrency is left unset")
            group = refers_to(p["LoggingConfig"]["LogGroup"])
            lg = t.properties(group)
            expect(t.resources[group]["Type"] == "AWS::Logs::LogGroup", f"{fn}: {group}")
            expect(lg["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{suffix}"}, f"{fn}: its log group {lg['LogGroupName']}")
            expect(lg.get("RetentionInDays") == ref("LogRetentionDays"), f"{group}: retention {lg.get('RetentionInDays')}")
        for g in t.of_type("AWS::Logs::LogGroup"):
            expect(t.properties(g).get("RetentionInDays") == ref("LogRetentionDays"), f"{g}: retention")
        if mode == "lambda":
            sqs_fn_timeouts = {"PersisterFunction": "IngestQueue", "DeliveryWorkerFunction": "DeliveryQueue",
                               "DeliveryDeadLettersFunction": "DeliveryDlq"}
            for fn, queue in sqs_fn_timeouts.items():
                visibility = t.properties(queue)["VisibilityTimeout"]
                expect(visibility >= 6 * FUNCTIONS[fn][3], f"{queue}: visibility {visibility} < 6 x {fn}'s timeout")
            urls = t.of_type("AWS::Lambda::Url")
            expect(sorted(urls) == ["ApiFunctionUrl", "IngestFunctionUrl"], urls)
            for u in urls:
                p = t.properties(u)
                expect(p["AuthType"] == "NONE" and refers_to(p["TargetFunctionArn"]) == u[:-3], f"{u}: {p}")
                # lambda_http::run (ingest) answers buffered; run_with_streaming_response (API) streams.
                want_mode = {"IngestFunctionUrl": "BUFFERED", "ApiFunctionUrl": "RESPONSE_STREAM"}[u]
                expect(p["InvokeMode"] == want_mode, f"{u}: InvokeMode {p['InvokeMode']}")
            perms = {(refers_to(t.properties(x)["FunctionName"]), t.properties(x)["Action"]): t.properties(x)
                     for x in t.of_type("AWS::Lambda::Permission")}
            expect(set(perms) == {(f, a) for f in ["IngestFunction", "ApiFunction"]
                                  for a in ["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"]}, sorted(perms))
            for (f, a), p in perms.items():
                expect(p["Principal"] == "*", f"{f} {a}")
                expect(p.get("FunctionUrlAuthType") == "NONE" if a.endswith("Url") else p.get("InvokedViaFunctionUrl") is True,
                       f"{f} {a}: {p}")
    t = Template.load().for_parameters()
    expect(t.parameters["LogRetentionDays"] == 14 and t.parameters["LambdaMemoryMb"] == 256, "function defaults")
    return len(FUNCTIONS)


def check_autoscaling():
    t = Template.load().for_parameters(ComputeMode="ecs")
    want = {"PersisterScalableTarget": ("PersisterService", ref("ServiceMaxTasks"), "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                                        {"QueueName": att("IngestQueue", "QueueName")}),
            "DeliveryScalableTarget": ("DeliveryService", ref("ServiceMaxTasks"), "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                                       {"QueueName": att("DeliveryQueue", "QueueName")}),
            "AggregatorScalableTarget": ("AggregatorService", 2, "FormBridge", "StreamLagSeconds", {"Group": "aggregator"})}
    expect(set(t.of_type("AWS::ApplicationAutoScaling::ScalableTarget")) == set(want), "scalable targets")
    policies = {refers_to(t.properties(p)["ScalingTargetId"]): t.properties(p)
                for p in t.of_type("AWS::ApplicationAutoScaling::ScalingPolicy")}
    for target, (service, most, ns, metric, dims) in want.items():
        p = t.properties(target)
        expect(p["ServiceNamespace"] == "ecs" and p["ScalableDimension"] == "ecs:service:DesiredCount", target)
        expect(p["ResourceId"] == {"Fn::Sub": f"service/${{Cluster}}/${{{service}.Name}}"}, f"{target}: {p['ResourceId']}")
        expect(p["MinCapacity"] == 1 and p["MaxCapacity"] == most, f"{target}: {p['MinCapacity']}..{p['MaxCapacity']}")
        pol = policies[target]
        expect(pol["PolicyType"] == "TargetTrackingScaling", target)
        spec = pol["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
        expect((spec["Namespace"], spec["MetricName"], {d["Name"]: d["Value"] for d in spec["Dimensions"]}) == (ns, metric, dims),
               f"{target}: scales on {spec}")
    expect(t.parameters["ServiceMaxTasks"] == 4, "ServiceMaxTasks defaults to 4")
    expect(not Template.load().for_parameters(ComputeMode="lambda").of_type("AWS::ApplicationAutoScaling::ScalableTarget"),
           "no autoscaling in Lambda mode")
    return len(want)


def policy_documents(t):
    """(where, document) for every IAM policy and trust policy of the deployment."""
    for r in t.of_type("AWS::IAM::Role"):
        p = t.properties(r)
        yield f"{r} trust", p["AssumeRolePolicyDocument"]
        for pol in p.get("Policies", []):
            yield f"{r}/{pol['PolicyName']}", pol["PolicyDocument"]
    for r in t.of_type("AWS::IAM::Policy"):
        p = t.properties(r)
        yield f"{r}/{p['PolicyName']}", p["PolicyDocument"]


def check_policies():
    count = 0
    for mode, t in templates():
        for where, doc in policy_documents(t):
            for s in doc["Statement"]:
                expect("NotAction" not in s and "NotResource" not in s, f"{where}: NotAction/NotResource")
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                for a in actions:
                    expect(isinstance(a, str) and re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", a), f"{where}: action {a!r}")
                count += 1
        for r in PROCESS_ROLES:
            names = [p["PolicyName"] for p in t.properties(r)["Policies"]]
            want = [r[:-4].lower()] + (["lambda-platform"] if mode == "lambda" else [])
            expect(names == want, f"{r} ({mode}): policies {names}, not {want}")
        read = t.properties("ApiTenantReadPolicy")
        expect(read["PolicyName"] == "tenant-read" and read["Roles"] == [ref("ApiRole")], f"tenant-read: {read}")
        expect(read["PolicyDocument"]["Statement"][0]["Resource"] == att("ApiTenantReadRole", "Arn"), "tenant-read resource")
        (reads,) = t.properties("ApiTenantReadRole")["Policies"]
        (stmt,) = reads["PolicyDocument"]["Statement"]
        expect(stmt["Action"] == ["dynamodb:Query"], stmt["Action"])
        expect(stmt["Resource"] == [att("DataTable", "Arn"), {"Fn::Sub": "${DataTable.Arn}/index/*"}], stmt["Resource"])
        # Which keys: checked against the key functions themselves in the API's unit test
        # (processors/api/src/readers.rs). Here: only a LeadingKeys condition, each pattern tied
        # to the session's tenant tag.
        keys = stmt["Condition"].get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys", [])
        expect(list(stmt["Condition"]) == ["ForAllValues:StringLike"] and keys, stmt["Condition"])
        expect(all("${aws:PrincipalTag/tenant}" in k for k in keys), keys)
    return count


def check_trust():
    count = 0
    for mode, t in templates():
        service = {"lambda": "lambda.amazonaws.com", "ecs": "ecs-tasks.amazonaws.com"}[mode]
        want = {r: ({"Service": service}, ["sts:AssumeRole"]) for r in PROCESS_ROLES}
        want["ApiTenantReadRole"] = ({"AWS": att("ApiRole", "Arn")}, ["sts:AssumeRole", "sts:TagSession"])
        if mode == "ecs":
            want["TaskExecutionRole"] = ({"Service": "ecs-tasks.amazonaws.com"}, ["sts:AssumeRole"])
        roles = t.of_type("AWS::IAM::Role")
        expect(set(roles) == set(want), f"{mode}: roles {sorted(roles)}")
        for r in roles:
            (s,) = t.properties(r)["AssumeRolePolicyDocument"]["Statement"]
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            expect(s["Effect"] == "Allow" and (s["Principal"], actions) == want[r], f"{r} ({mode}): trusts {s['Principal']} {actions}")
            count += 1
    return count


def check_listeners():
    plain = Template.load().for_parameters(ComputeMode="ecs")
    https = Template.load().for_parameters(ComputeMode="ecs", CertificateArn=CERT)
    expect(not plain.exists("HttpsListener") and https.exists("HttpsListener"), "HTTPS only with a certificate")
    expect(plain.properties("HttpListener")["DefaultActions"][0]["Type"] == "forward", "HTTP forwards without a certificate")
    redirect = https.properties("HttpListener")["DefaultActions"][0]
    expect(redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Protocol"] == "HTTPS", redirect)
    for rule in ["MetricsNotPublishedRule", "IngestListenerRule", "ApiListenerRule"]:
        expect(plain.properties(rule)["ListenerArn"] == ref("HttpListener"), rule)
        expect(https.properties(rule)["ListenerArn"] == ref("HttpsListener"), rule)
    return 2


def check_bus_rules():
    """Each rule on the bus e-mails through the alarm topic, and the topic's policy lets exactly
    those rules (and this account's CloudWatch alarms) publish."""
    count = 0
    for mode, t in templates():
        rules = [r for r in t.of_type("AWS::Events::Rule")]
        expect(rules, f"{mode}: no rule on the bus")
        for r in rules:
            p = t.properties(r)
            expect(p["EventBusName"] == att("EventBus", "Name"), (r, p["EventBusName"]))
            expect([x["Arn"] for x in p["Targets"]] == [ref("AlarmTopic")], (r, p["Targets"]))
            expect(set(p["EventPattern"]) == {"source", "detail-type"}, (r, p["EventPattern"]))
            count += 1
        (policy,) = t.of_type("AWS::SNS::TopicPolicy")
        doc = t.properties(policy)["PolicyDocument"]
        by = {st["Principal"]["Service"]: st for st in doc["Statement"]}
        expect(set(by) == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}, sorted(by))
        events = by["events.amazonaws.com"]
        expect(events["Action"] == "sns:Publish" and events["Resource"] == ref("AlarmTopic"), events)
        arns = events["Condition"]["ArnEquals"]["aws:SourceArn"]
        expect(sorted(json.dumps(a) for a in arns) == sorted(json.dumps(att(r, "Arn")) for r in rules), arns)
        cw = by["cloudwatch.amazonaws.com"]
        expect(cw["Condition"] == {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}, cw)
    return count


CHECKS = [check_bus_rules, check_alarms, check_metric_filters, check_dashboard, check_budgets, check_event_sources, check_functions,
          check_autoscaling, check_policies, check_trust, check_listeners]


def main():
    failed = 0
    for check in CHECKS:
        try:
            n = check()
            print(f"ok   {check.__name__} ({n})", file=sys.stdout)
        except Exception as e:  # noqa: BLE001 - report every check, then fail
            failed += 1
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            print(f"FAIL {check.__name__}: {detail}", file=sys.stdout)
    print(f"template_test: {len(CHECKS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
