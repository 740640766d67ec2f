"""Adapters to Kafka and Faust: the offsets ledger, producer batches, topics, table stores, the
wire formats of the internal topics, and the one module that reaches into faust/aiokafka internals."""
