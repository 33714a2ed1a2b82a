"""Validates webhook bodies against the version 1 JSON Schemas in
schemas/v1/, with the reference `jsonschema` library (PyPI), for the
integration tests.

Reads a JSON list of bodies (each the exact text a receiver got) on stdin.
A body with `webhook_type` is checked against schemas/v1/<webhook_type>.json;
a Standard Webhooks envelope ({"type", "timestamp", "data"}) against
standard_envelope.json, and its `data` against the schema of its `type`.
Every schema is itself checked first. Prints `VALID <n>` and exits 0, or
one line per problem and exits 1.
"""

import json
import os
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError as e:
    print(f"validate_v1: missing Python package ({e}); install it with "
          "`pip install -r tests/receivers/requirements.txt`", file=sys.stderr)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS = os.path.join(HERE, "..", "..", "schemas", "v1")


def validator(name):
    with open(os.path.join(SCHEMAS, f"{name}.json"), encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(name, value, where):
    for err in validator(name).iter_errors(value):
        path = "/".join(str(p) for p in err.absolute_path)
        yield f"{where}: {name}.json at /{path}: {err.message}"


def main():
    bodies = json.load(sys.stdin)
    bad = []
    for i, text in enumerate(bodies):
        body = json.loads(text)
        where = f"body {i}"
        if "webhook_type" in body:
            bad.extend(problems(body["webhook_type"], body, where))
        elif {"type", "timestamp", "data"} <= body.keys():
            bad.extend(problems("standard_envelope", body, where))
            data = body["data"]
            if data.get("webhook_type") != body["type"]:
                bad.append(f"{where}: type {body['type']!r} is not data.webhook_type")
            bad.extend(problems(body["type"], data, where + " data"))
        else:
            bad.append(f"{where}: neither a version 1 payload nor an envelope: {text[:200]}")
    for line in bad:
        print(line)
    if bad:
        sys.exit(1)
    print(f"VALID {len(bodies)}")


if __name__ == "__main__":
    main()
