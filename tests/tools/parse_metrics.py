"""Parses Prometheus text from stdin with the reference parser and prints
each sample as a JSON line: {"name", "labels", "value"}. Exits non-zero if
the text does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type,
                          "name": s.name, "labels": s.labels, "value": s.value}))
