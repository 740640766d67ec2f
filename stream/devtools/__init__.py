"""Development tools, never imported by the runtime: the local broker and Redis, the synthetic
event generator, the demo and a topic reader."""
