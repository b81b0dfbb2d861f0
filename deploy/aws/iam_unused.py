"""Fails on a permission nothing uses: each process role's own policy (the one named after the
process, and the API's tenant-scoped read role's) in deploy/aws/formbridge.yaml against the IAM actions the integration tests saw that
process call (`formbridge_shared::testing::assert_role_allows` leaves them in
target/iam-usage/, one file per test and component). The other direction, a call without a
permission, fails in the Rust tests themselves.

Run by ./deploy/local/test.sh after the whole suite (no single test binary sees every path).
An action granted for a path the suite does not reach is listed in RARE with the reason; an
entry that the suite does reach, or that the role no longer grants, fails too, so the list
cannot go stale.
"""

import glob
import json
import os
import sys

from cfn_template import Template

HERE = os.path.dirname(os.path.abspath(__file__))
USAGE = os.path.join(HERE, "..", "..", "target", "iam-usage")

# component -> (role, the policy of the role that is the code's)
ROLES = {
    "ingest": ("IngestRole", "ingest"),
    "persister": ("PersisterRole", "persister"),
    "aggregator": ("AggregatorRole", "aggregator"),
    "delivery": ("DeliveryRole", "delivery"),
    "api": ("ApiRole", "api"),
    "api-tenant-read": ("ApiTenantReadRole", "tenant-data-read"),
}

# (component, action) -> why the suite does not call it, though the process does.
RARE = {
}


def granted(template, role, policy_name):
    role_props = template.resolve(template.resources[role]["Properties"])
    for policy in role_props.get("Policies", []):
        if policy["PolicyName"] != policy_name:
            continue
        actions = set()
        for st in policy["PolicyDocument"]["Statement"]:
            a = st["Action"]
            actions.update([a] if isinstance(a, str) else a)
        return actions
    raise SystemExit(f"{role} has no policy named {policy_name}")


def main():
    files = glob.glob(os.path.join(USAGE, "*.json"))
    if not files:
        raise SystemExit(f"no usage files in {USAGE}: run the whole suite first (./deploy/local/test.sh)")
    used = {c: set() for c in ROLES}
    for f in files:
        with open(f) as fh:
            u = json.load(fh)
        used.setdefault(u["component"], set()).update(u["actions"])
    template = Template.load().for_parameters()
    problems = []
    for component, (role, policy) in ROLES.items():
        grants = granted(template, role, policy)
        for action in sorted(grants - used[component]):
            if (component, action) not in RARE:
                problems.append(f"{role} grants {action}, which no test saw {component} call")
        for (c, action), why in RARE.items():
            if c == component and (action in used[component] or action not in grants):
                problems.append(f"RARE lists {action} for {component} ({why}), but the suite calls it or the role no longer grants it")
    if problems:
        print("permissions nothing uses:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"==> every permission of the {len(ROLES)} roles of the code is used by the suite ({len(files)} usage files)", file=sys.stderr)


if __name__ == "__main__":
    main()
