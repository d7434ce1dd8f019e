"""Helpers of the multi-replica rehearsal (tests/deploy/test_rehearsal.py): nginx as a gRPC load balancer,
the replicas' /metrics, and the client load."""
