"""Test harness for MeshGuard: real Envoy, real upstream, real OTLP/gRPC collector.

Everything here binds 127.0.0.1 only and picks free ports, so several runs (and the demo)
can overlap on one machine. Each module is one concept: ports, keys and tokens, the audit
collector, the echo upstream, Envoy (config + process), the HTTP client and the plugin
configurations the tests and the demo share.
"""
