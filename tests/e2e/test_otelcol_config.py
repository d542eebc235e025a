"""The OpenTelemetry Collector fan-out configuration in cli/COLLECTOR.md is checked.

No full otelcol-contrib build is obtainable here (no Go toolchain; the only registry
package shipping an otelcol binary is a minimal build without the otlp receiver or these
exporters), so the configuration is validated against a schema derived from the
components' documentation (otelcol-contrib: otlpreceiver, memorylimiterprocessor,
batchprocessor, otlpexporter, kafkaexporter, clickhouseexporter, otlphttpexporter,
elasticsearchexporter, filestorage, exporterhelper's queue and retry settings): unknown
keys are errors, as in the collector's own strict unmarshalling. Then the checks the
collector makes when it builds its service (every pipeline component and extension
defined, queue storage pointing at a storage extension), and MeshGuard's own rule: no
processor on the pipeline may change attributes, times or trace ids, or the hash chains
stop verifying.

That the filter's OTLP is accepted by an implementation other than ours is shown by the
whole e2e suite: tests/harness/collector.py decodes every Export with the official
opentelemetry-proto Python messages.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

DOC = Path(__file__).resolve().parents[2] / "cli" / "COLLECTOR.md"

DURATION = {"type": "string", "pattern": r"^(0|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$"}
DURATION_OR_ZERO = {"anyOf": [DURATION, {"const": 0}]}
QUEUE = {
    "type": "object", "additionalProperties": False,
    "properties": {"enabled": {"type": "boolean"}, "num_consumers": {"type": "integer", "minimum": 1},
                   "queue_size": {"type": "integer", "minimum": 1}, "storage": {"type": "string"},
                   "blocking": {"type": "boolean"}, "sizer": {"enum": ["requests", "items", "bytes"]}},
}
RETRY = {
    "type": "object", "additionalProperties": False,
    "properties": {"enabled": {"type": "boolean"}, "initial_interval": DURATION, "max_interval": DURATION,
                   "max_elapsed_time": DURATION_OR_ZERO, "multiplier": {"type": "number"},
                   "randomization_factor": {"type": "number"}},
}
TLS_CLIENT = {
    "type": "object", "additionalProperties": False,
    "properties": {"insecure": {"type": "boolean"}, "insecure_skip_verify": {"type": "boolean"},
                   "ca_file": {"type": "string"}, "cert_file": {"type": "string"}, "key_file": {"type": "string"},
                   "server_name_override": {"type": "string"}, "min_version": {"type": "string"}},
}
COMPRESSION = {"enum": ["gzip", "zstd", "snappy", "zlib", "deflate", "lz4", "none", ""]}
EXPORTER_COMMON = {"sending_queue": QUEUE, "retry_on_failure": RETRY, "timeout": DURATION}


def _obj(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


COMPONENTS = {
    "receivers": {
        "otlp": _obj({"protocols": _obj({
            "grpc": _obj({"endpoint": {"type": "string"}, "max_recv_msg_size_mib": {"type": "integer", "minimum": 1},
                          "max_concurrent_streams": {"type": "integer"}, "tls": {"type": "object"},
                          "keepalive": {"type": "object"}, "auth": {"type": "object"}}),
            "http": _obj({"endpoint": {"type": "string"}, "tls": {"type": "object"}, "cors": {"type": "object"}}),
        })}, ("protocols",)),
    },
    "processors": {
        "memory_limiter": _obj({"check_interval": DURATION, "limit_mib": {"type": "integer"},
                                "spike_limit_mib": {"type": "integer"},
                                "limit_percentage": {"type": "integer", "minimum": 1, "maximum": 100},
                                "spike_limit_percentage": {"type": "integer", "minimum": 0, "maximum": 100}},
                               ("check_interval",)),
        "batch": _obj({"send_batch_size": {"type": "integer", "minimum": 0},
                       "send_batch_max_size": {"type": "integer", "minimum": 0}, "timeout": DURATION,
                       "metadata_keys": {"type": "array"}}),
    },
    "exporters": {
        "otlp": _obj({"endpoint": {"type": "string"}, "tls": TLS_CLIENT, "compression": COMPRESSION,
                      "headers": {"type": "object"}, "balancer_name": {"type": "string"}, **EXPORTER_COMMON},
                     ("endpoint",)),
        "otlphttp": _obj({"endpoint": {"type": "string"}, "logs_endpoint": {"type": "string"}, "tls": TLS_CLIENT,
                          "compression": COMPRESSION, "headers": {"type": "object"}, **EXPORTER_COMMON}),
        "kafka": _obj({"brokers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                       "logs": _obj({"topic": {"type": "string"},
                                     "encoding": {"enum": ["otlp_proto", "otlp_json", "raw"]}}),
                       "protocol_version": {"type": "string"}, "client_id": {"type": "string"},
                       "producer": {"type": "object"}, "auth": {"type": "object"}, "tls": TLS_CLIENT,
                       **EXPORTER_COMMON}, ("brokers",)),
        "clickhouse": _obj({"endpoint": {"type": "string"}, "database": {"type": "string"},
                            "username": {"type": "string"}, "password": {"type": "string"},
                            "logs_table_name": {"type": "string"}, "create_schema": {"type": "boolean"},
                            "ttl": DURATION, "async_insert": {"type": "boolean"}, **EXPORTER_COMMON},
                           ("endpoint",)),
        "elasticsearch": _obj({"endpoints": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                               "logs_index": {"type": "string"},
                               "mapping": _obj({"mode": {"enum": ["none", "ecs", "otel", "raw", "bodymap"]}}),
                               "auth": {"type": "object"}, "tls": TLS_CLIENT, **EXPORTER_COMMON}),
    },
    "extensions": {
        "file_storage": _obj({"directory": {"type": "string"}, "timeout": DURATION, "create_directory": {"type": "boolean"},
                              "compaction": {"type": "object"}, "fsync": {"type": "boolean"}}),
    },
}
STORAGE_EXTENSIONS = {"file_storage"}
# Processors that rewrite what the chain hashes cover.
REWRITING_PROCESSORS = {"attributes", "transform", "resource", "redaction", "logdedup", "filter", "groupbyattrs"}


def fanout_config() -> dict:
    text = DOC.read_text()
    blocks = re.findall(r"```yaml\n(# otelcol-contrib config:.*?)```", text, re.S)
    assert len(blocks) == 1, "cli/COLLECTOR.md has one otelcol-contrib config block"
    return yaml.safe_load(blocks[0])


def config_errors(cfg: dict) -> list[str]:
    errors = []
    top = set(cfg) - {"receivers", "processors", "exporters", "extensions", "connectors", "service"}
    errors += [f"unknown top-level key {k!r}" for k in sorted(top)]
    for section, known in COMPONENTS.items():
        for cid, body in (cfg.get(section) or {}).items():
            ctype = cid.split("/", 1)[0]
            if ctype not in known:
                errors.append(f"{section}: unknown component type {ctype!r} ({cid})")
                continue
            validator = jsonschema.Draft202012Validator(known[ctype])
            for e in validator.iter_errors(body or {}):
                where = ".".join(map(str, e.absolute_path))
                errors.append(f"{section}.{cid}{'.' + where if where else ''}: {e.message}")
            queue = (body or {}).get("sending_queue", {})
            storage = queue.get("storage")
            if storage is not None and (storage not in (cfg.get("extensions") or {})
                                        or storage.split("/", 1)[0] not in STORAGE_EXTENSIONS):
                errors.append(f"{section}.{cid}.sending_queue.storage: {storage!r} is not a storage extension")
    service = cfg.get("service") or {}
    for ext in service.get("extensions", []):
        if ext not in (cfg.get("extensions") or {}):
            errors.append(f"service.extensions: {ext!r} is not defined")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        errors.append("service.pipelines: none")
    for name, p in pipelines.items():
        if name.split("/", 1)[0] not in ("logs", "traces", "metrics", "profiles"):
            errors.append(f"service.pipelines.{name}: unknown signal")
        for kind in ("receivers", "processors", "exporters"):
            for cid in p.get(kind, []):
                if cid not in (cfg.get(kind) or {}):
                    errors.append(f"service.pipelines.{name}.{kind}: {cid!r} is not defined")
                if kind == "processors" and cid.split("/", 1)[0] in REWRITING_PROCESSORS:
                    errors.append(f"service.pipelines.{name}: processor {cid!r} rewrites what the chain hashes cover")
        for kind in ("receivers", "exporters"):
            if not p.get(kind):
                errors.append(f"service.pipelines.{name}: no {kind}")
    return errors


def test_documented_fanout_config_is_valid():
    cfg = fanout_config()
    assert config_errors(cfg) == []
    logs = cfg["service"]["pipelines"]["logs"]
    assert "otlp/meshguard" in logs["exporters"], "the reference collector stays in the fan-out"
    assert cfg["exporters"]["otlp/meshguard"]["endpoint"].endswith(":4317")


@pytest.mark.parametrize("break_it, expected", [
    (lambda c: c["exporters"]["otlp/meshguard"].__setitem__("endpiont", "x:4317"), "endpiont"),
    (lambda c: c["service"]["pipelines"]["logs"]["exporters"].append("kafka/typo"), "'kafka/typo' is not defined"),
    (lambda c: c["processors"]["batch"].__setitem__("timeout", "soon"), "does not match"),
    (lambda c: c["exporters"]["kafka"]["sending_queue"].__setitem__("storage", "nope"), "not a storage extension"),
    (lambda c: (c["processors"].__setitem__("attributes/scrub", {}),
                c["service"]["pipelines"]["logs"]["processors"].append("attributes/scrub")), "rewrites"),
])
def test_the_validator_rejects_broken_configs(break_it, expected):
    cfg = copy.deepcopy(fanout_config())
    break_it(cfg)
    errors = config_errors(cfg)
    assert any(expected in e for e in errors), errors
