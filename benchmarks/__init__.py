"""Quality benchmarks that drive a running domainrag service through its REST API."""
