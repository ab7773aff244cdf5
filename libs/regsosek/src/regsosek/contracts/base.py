"""Base class of every event body: strict for producers, tolerant for consumers."""

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    # Producers validate with the default (forbid unknown fields); consumers call
    # `model_validate_json(..., extra="ignore")` so that additive changes flow. A producer's hot path
    # may write an event's JSON itself (messaging.Outbox.publish_encoded) when its tests hold the bytes
    # to the model's own serialisation and validation (classify's publisher).
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
