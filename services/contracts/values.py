"""The enums of scf.bus.v1 and the lower-case names the services keep."""

from __future__ import annotations

from services.gen.scf.bus.v1 import bus_pb2

__all__ = ["BUCKETS", "enum_name", "kind_value", "lease_option_value"]

#: Delinquency buckets as repayment names them, to the wire's enum.
BUCKETS: dict[str, bus_pb2.DelinquencyBucket.ValueType] = {
    "current": bus_pb2.DELINQUENCY_BUCKET_CURRENT,
    "1-30": bus_pb2.DELINQUENCY_BUCKET_1_30,
    "31-60": bus_pb2.DELINQUENCY_BUCKET_31_60,
    "61-90": bus_pb2.DELINQUENCY_BUCKET_61_90,
    "90+": bus_pb2.DELINQUENCY_BUCKET_OVER_90,
}


def _value(enum: object, prefix: str, name: str) -> int:
    """``"purchase"`` -> LEASE_OPTION_PURCHASE; ``""`` or unknown -> UNSPECIFIED."""
    try:
        return int(enum.Value(f"{prefix}_{name.upper()}"))  # type: ignore[attr-defined]
    except ValueError:
        return 0


def enum_name(enum: object, value: int) -> str:
    """LEASE_OPTION_PURCHASE -> ``"purchase"``; UNSPECIFIED (or unknown) -> ``""``."""
    if not value:
        return ""
    try:
        full = str(enum.Name(value))  # type: ignore[attr-defined]
    except ValueError:
        return ""
    return full.split("_", 2)[-1].lower()


def lease_option_value(name: str) -> bus_pb2.LeaseOption.ValueType:
    return bus_pb2.LeaseOption.ValueType(_value(bus_pb2.LeaseOption, "LEASE_OPTION", name))


def kind_value(name: str) -> bus_pb2.FinancingKind.ValueType:
    return bus_pb2.FinancingKind.ValueType(_value(bus_pb2.FinancingKind, "FINANCING_KIND", name))
