"""Load generation: the families of a load (load.families), open-loop pacing (load.pacing), a lean
HTTP client (load.http) and the raw-Kafka ceiling's stages (load.ceiling)."""
