"""The running worker: the Faust app and its thin agents, recovery and snapshots, the web pages,
the Redis and Prometheus sinks and the processor's metrics."""
