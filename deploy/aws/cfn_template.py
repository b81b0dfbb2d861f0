"""Reads deploy/aws/formbridge.yaml the way CloudFormation does, for the checks that judge it by
its definition (template_test.py, iam_lint.py) and for deploy_test.py's list of what a deployment
creates. Only PyYAML is needed.

- `load()` parses the short-form tags (`!Ref`, `!GetAtt`, `!Sub`, `!If`, ...) into their
  long forms (`{"Ref": ...}`, `{"Fn::GetAtt": [...]}`), as CloudFormation does.
- `Template.for_parameters(...)` fixes the parameters (defaults, then overrides), evaluates the
  Conditions, and `resolve()` then settles every `Fn::If` and drops `AWS::NoValue`, so a check
  sees what one deployment would get.
"""

import os

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "formbridge.yaml")

NO_VALUE = object()


class _Loader(yaml.SafeLoader):
    """A SafeLoader that also knows CloudFormation's short-form intrinsic functions."""


def _long_form(tag):
    name = tag[1:]
    key = "Ref" if name == "Ref" else ("Condition" if name == "Condition" else f"Fn::{name}")

    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if key == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    return construct


for _tag in ["!Ref", "!GetAtt", "!Sub", "!If", "!Join", "!Select", "!Split", "!Equals", "!Not",
             "!And", "!Or", "!Condition", "!Contains", "!FindInMap", "!Base64", "!GetAZs",
             "!ImportValue", "!Cidr", "!EachMemberEquals", "!EachMemberIn", "!ValueOf", "!RefAll",
             "!ValueOfAll", "!ToJsonString", "!Length"]:
    _Loader.add_constructor(_tag, _long_form(_tag))


def load(path=TEMPLATE):
    with open(path) as f:
        return yaml.load(f, Loader=_Loader)


def parse(text):
    return yaml.load(text, Loader=_Loader)


def intrinsic(value):
    """(name, argument) when `value` is one intrinsic function, else None."""
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "Ref" or k == "Condition" or k.startswith("Fn::"):
            return k, v
    return None


class Template:
    def __init__(self, doc):
        self.doc = doc
        self.parameters = {}
        self.conditions = {}

    @classmethod
    def load(cls, path=TEMPLATE):
        return cls(load(path))

    @property
    def resources(self):
        return self.doc["Resources"]

    def for_parameters(self, **overrides):
        """A copy with the parameters fixed (defaults, then `overrides`) and the conditions
        evaluated. Unknown parameter names are an error."""
        t = Template(self.doc)
        declared = self.doc.get("Parameters", {})
        unknown = set(overrides) - set(declared)
        assert not unknown, f"not parameters of the template: {sorted(unknown)}"
        for name, p in declared.items():
            value = overrides.get(name, p.get("Default"))
            if p.get("Type", "String").startswith("List") or p.get("Type") == "CommaDelimitedList":
                if isinstance(value, str):
                    value = value.split(",")
            t.parameters[name] = value
        for name in self.doc.get("Conditions", {}):
            t._condition(name)
        return t

    def _condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = self._truth(self.doc["Conditions"][name])
        return self.conditions[name]

    def _truth(self, expr):
        fn, arg = intrinsic(expr)
        if fn == "Condition":
            return self._condition(arg)
        if fn == "Fn::Equals":
            a, b = (self.resolve(x, parameters=True) for x in arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self._truth(arg[0])
        if fn == "Fn::And":
            return all(self._truth(x) for x in arg)
        if fn == "Fn::Or":
            return any(self._truth(x) for x in arg)
        raise ValueError(f"not a condition: {expr!r}")

    def exists(self, logical_id):
        """Whether a deployment with these parameters creates the resource."""
        cond = self.resources[logical_id].get("Condition")
        return cond is None or self.conditions[cond]

    def created(self):
        return {k: v for k, v in self.resources.items() if self.exists(k)}

    def resolve(self, value, parameters=False):
        """Settles `Fn::If` and drops `AWS::NoValue`; with `parameters`, also replaces `Ref`s to
        parameters by their values. Leaves other references as they are, so a check can see
        that a value comes from a parameter or a resource."""
        found = intrinsic(value)
        if found:
            fn, arg = found
            if fn == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self._condition(cond) else no, parameters)
            if fn == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
            if fn == "Ref" and parameters and arg in self.parameters:
                return self.parameters[arg]
            return {fn: self.resolve(arg, parameters)}
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                r = self.resolve(v, parameters)
                if r is not NO_VALUE:
                    out[k] = r
            return out
        if isinstance(value, list):
            return [r for r in (self.resolve(v, parameters) for v in value) if r is not NO_VALUE]
        return value

    def properties(self, logical_id):
        return self.resolve(self.resources[logical_id].get("Properties", {}))

    def of_type(self, type_name):
        """Logical ids of the created resources of one type."""
        return [k for k, v in self.created().items() if v["Type"] == type_name]


def refers_to(value):
    """The logical id a `Ref` or `Fn::GetAtt` names (None for anything else)."""
    found = intrinsic(value)
    if not found:
        return None
    fn, arg = found
    if fn == "Ref":
        return arg
    if fn == "Fn::GetAtt":
        return arg[0]
    return None
