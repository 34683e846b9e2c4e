"""Validate audit events with the reference implementation (bh-audit-logger).

Usage: python validate.py CASES.jsonl

Each input line is {"id": <int>, "version": "1.0"|"1.1"|"2.0", "event": <any>}.
Each output line is {"id": <int>, "valid": <bool>, "errors": [<str>, ...]},
in input order. Used by tests/reference_conformance.rs; all data is synthetic.
"""

import json
import sys

from bh_audit_logger import validate_event_schema


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: validate.py CASES.jsonl", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as cases:
        for line in cases:
            if not line.strip():
                continue
            case = json.loads(line)
            try:
                errors = validate_event_schema(case["event"], case["version"])
            except Exception as exc:  # a crash is a verdict too: report it
                errors = [f"reference raised {type(exc).__name__}: {exc}"]
            verdict = {"id": case["id"], "valid": not errors, "errors": errors}
            sys.stdout.write(json.dumps(verdict) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
