"""What an operator or a load balancer reads: health and readiness (health), Prometheus
metrics (metrics), and one job's debug view (job_debug).

May import: logs, files, store, pool, config, clock.
"""
