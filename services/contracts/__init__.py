"""What crosses a service boundary, declared once.

- :mod:`.subjects`: every NATS subject, stream, consumer and bucket;
- :mod:`.permissions`: who may publish, subscribe to and consume what, from
  which the NATS users are generated;
- :mod:`.envelope`: the signed envelope every command and answer travels in;
- :mod:`.errors`: typed refusals that cross a service boundary and come back
  as the same error class;
- the messages themselves are ``scf.bus.v1`` (``protos/scf/bus/v1/bus.proto``).

A service imports this package, the runtime and the journal's public API,
never another service.
"""

from services.contracts.subjects import ConsumerSpec, StreamSpec, Subjects

__all__ = ["ConsumerSpec", "StreamSpec", "Subjects"]
