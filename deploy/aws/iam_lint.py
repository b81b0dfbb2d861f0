"""Lints every IAM policy in deploy/aws/formbridge.yaml with parliament (community auditors
included), in each compute mode: each role's inline policies (those that exist only in Lambda
mode too) and each AWS::IAM::Policy. Intrinsic functions become placeholder values of the right
shape first (`!GetAtt Queue.Arn` an SQS ARN, `!Sub` with its names filled in, ...), so
parliament can match resources against actions.

Any finding fails, unless ALLOWED names it, scoped to the policy, with a reason. Trust policies
(AssumeRolePolicyDocument) are not identity policies, which is what parliament judges; their
principals are checked by template_test.py.

Run by deploy/aws/lint.sh, in the lint virtualenv (cfn-lint and parliament, pinned there).
"""

import json
import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the template
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cfn_template import Template, intrinsic  # noqa: E402

from parliament import analyze_policy_string  # noqa: E402

ACCOUNT, REGION, PARTITION, STACK = "123456789012", "us-east-1", "aws", "formbridge"
# Parameters without a usable default, as a deployment would pass them (see deploy/aws/lint/).
PARAMETERS = {
    "MasterKeysSecret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:formbridge/master-keys-AbCdEf",
    "AlertEmail": "ops@example.com",
}

# (policy, issue, action or None, why it is acceptable). `policy` is "<logical id>/<policy name>"
# and may be a regular expression; a finding is allowed only when every action it names is.
ALLOWED = [
    (r"(Aggregator|Delivery)Role/(aggregator|delivery|lambda-platform)", "RESOURCE_MISMATCH", "dynamodb:ListStreams",
     "AWS's example policy for Lambda stream mappings (DynamoDB developer guide) grants it on the stream ARN"),
    (r"TaskExecutionRole/task-execution", "CREDENTIALS_EXPOSURE", "ecr:getauthorizationtoken",
     "ECS needs a registry token to pull the image; the action has no resource to narrow it to"),
    (r"ApiTenantReadPolicy/tenant-read", "CREDENTIALS_EXPOSURE", "sts:assumerole",
     "by design: the API assumes the tenant read role (only that role) with a session tag per tenant"),
]

ARN_OF = {  # resource type -> placeholder ARN for !GetAtt <id>.Arn ({n}: the logical id)
    "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{{n}}",
    "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{{n}}",
    "AWS::Events::EventBus": f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:event-bus/{{n}}",
    "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{{n}}",
    "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:/placeholder/{{n}}:*",
    "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{{n}}",
    "AWS::SNS::Topic": f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{{n}}",
}
PSEUDO = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": STACK}


class Placeholders:
    def __init__(self, template):
        self.t = template

    def getatt(self, logical_id, attribute):
        kind = self.t.resources[logical_id]["Type"]
        if attribute == "Arn":
            return ARN_OF[kind].format(n=logical_id)
        if attribute == "StreamArn":
            # A real stream label is a timestamp with colons (2026-01-01T00:00:00.000); parliament
            # splits ARNs on colons and could not match it, so the placeholder's has none.
            return ARN_OF[kind].format(n=logical_id) + "/stream/2026-01-01T00-00-00.000"
        if attribute == "QueueName":
            return logical_id
        raise KeyError(f"no placeholder for {logical_id}.{attribute}")

    def ref(self, name):
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.t.parameters:
            value = PARAMETERS.get(name, self.t.parameters[name])
            return ",".join(value) if isinstance(value, list) else str(value)
        kind = self.t.resources[name]["Type"]
        if kind == "AWS::Logs::LogGroup":
            return f"/placeholder/{name}"
        if kind == "AWS::IAM::Role" or kind == "AWS::DynamoDB::Table" or kind == "AWS::Lambda::Function":
            return name
        raise KeyError(f"no placeholder for Ref {name} ({kind})")

    def fill(self, v):
        found = intrinsic(v)
        if found:
            fn, arg = found
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                return self.getatt(*arg)
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                values = {k: self.fill(x) for k, x in variables.items()}

                def one(m):
                    name = m.group(1)
                    if name in values:
                        return values[name]
                    if "." in name:
                        return self.getatt(*name.split(".", 1))
                    return self.ref(name)

                # `${aws:...}` and other lower-case IAM policy variables are IAM's, not CloudFormation's.
                return re.sub(r"\$\{([A-Za-z][A-Za-z0-9]*(?:::[A-Za-z]+)?(?:\.[A-Za-z]+)?)\}", one, text)
            raise KeyError(f"no placeholder for {fn}")
        if isinstance(v, dict):
            return {k: self.fill(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.fill(x) for x in v]
        return v


def policies(t):
    for r in t.of_type("AWS::IAM::Role"):
        for p in t.properties(r).get("Policies", []):
            yield f"{r}/{p['PolicyName']}", p["PolicyDocument"]
    for r in t.of_type("AWS::IAM::Policy"):
        p = t.properties(r)
        yield f"{r}/{p['PolicyName']}", p["PolicyDocument"]


def actions_named(finding):
    """The actions a finding is about (parliament puts them in `detail` or in `location`)."""
    for d in (finding.detail, finding.location):
        if isinstance(d, dict) and "actions" in d:
            return [a.lower() for a in d["actions"]]
    d = finding.detail
    if isinstance(d, list) and all(isinstance(x, dict) and "action" in x for x in d):
        return [x["action"].lower() for x in d]
    if isinstance(d, str) and ":" in d:
        return [d.lower()]
    return []


def allowed(where, finding):
    actions = actions_named(finding)
    if not actions:
        return None
    reasons = []
    for a in actions:
        hit = [why for (pattern, issue, action, why) in ALLOWED
               if issue == finding.issue and action.lower() == a and re.fullmatch(pattern, where)]
        if not hit:
            return None
        reasons.append(hit[0])
    return reasons[0]


def main():
    base = Template.load()
    problems, accepted, linted = [], set(), 0
    for mode in ["lambda", "ecs"]:
        t = base.for_parameters(ComputeMode=mode)
        fill = Placeholders(t)
        for where, doc in policies(t):
            document = fill.fill(doc)
            text = json.dumps(document, indent=1)
            for s in document["Statement"]:
                for a in s["Action"] if isinstance(s["Action"], list) else [s["Action"]]:
                    if "*" in a:
                        problems.append(f"{mode} {where}: wildcard action {a}")
            linted += 1
            for f in analyze_policy_string(text, include_community_auditors=True).findings:
                why = allowed(where, f)
                if why:
                    accepted.add((where, f.issue, why))
                else:
                    problems.append(f"{mode} {where}: {f.issue} {f.detail or ''} {f.location}")
    for where, issue, why in sorted(accepted):
        print(f"allowed  {where}: {issue}: {why}", file=sys.stderr)
    for p in problems:
        print(f"FINDING  {p}", file=sys.stderr)
    if problems:
        print(f"==> parliament: {len(problems)} finding(s) in {linted} policy documents", file=sys.stderr)
        sys.exit(1)
    print(f"==> parliament: {linted} policy documents (both modes) clean", file=sys.stderr)


if __name__ == "__main__":
    main()
