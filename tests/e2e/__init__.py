"""End-to-end tests: JSON REST through a real Envoy to real server replicas and a real Redis."""
