"""Measurement: percentiles (measure.stats), process and machine figures (measure.proc), consumer
lag and counters (measure.kafka), and the bench's once-a-second sampler (measure.sampler)."""
