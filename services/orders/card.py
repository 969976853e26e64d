"""The order's identity card: checked locally, written as JSON and a QR code."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import qrcode
import qrcode.image.svg

from services.gen.scf.orders.v1 import orders_pb2
from services.journal import decode_entry, leaf_hash, parse_note, verify_inclusion

__all__ = ["card_uri", "check_card", "write_card"]


def check_card(card: orders_pb2.VerifyOrderResponse, journal_key: bytes) -> list[dict[str, Any]]:
    """Raise unless the checkpoint is the journal's and every entry is in its tree."""
    note = parse_note(card.checkpoint)
    note.verify(note.checkpoint.origin, journal_key)
    checked = []
    for e in card.entries:
        entry = decode_entry(e.leaf)
        if entry.statement.subject != f"order/{card.order_id}":
            raise ValueError(f"entry {e.seq} is about {entry.statement.subject}")
        verify_inclusion(
            e.seq, note.checkpoint.size, leaf_hash(e.leaf), list(e.inclusion_proof),
            note.checkpoint.root,
        )  # fmt: skip
        checked.append(
            {"seq": e.seq, "event": e.event_type, "payload": json.loads(entry.statement.payload)}
        )
    return checked


def card_uri(card: orders_pb2.VerifyOrderResponse, contract_sha256: bytes) -> str:
    """What the QR code holds: enough to ask for the card again and compare roots."""
    note = parse_note(card.checkpoint)
    root = base64.urlsafe_b64encode(note.checkpoint.root).decode().rstrip("=")
    return (
        f"scf-order:{card.order_id}?sha256={contract_sha256.hex()}"
        f"&log={note.checkpoint.origin}&size={note.checkpoint.size}&root={root}"
    )


def write_card(
    card: orders_pb2.VerifyOrderResponse, contract_sha256: bytes, journal_key: bytes, out_dir: Path
) -> tuple[Path, Path]:
    """Check the card, then write ``<order>.card.json`` and ``<order>.qr.svg``."""
    entries = check_card(card, journal_key)
    uri = card_uri(card, contract_sha256)
    document = {
        "order_id": card.order_id,
        "state": orders_pb2.OrderState.Name(card.state).removeprefix("ORDER_STATE_").lower(),
        "amount": f"{card.amount.amount} {card.amount.currency}",
        "buyer": card.buyer_id,
        "subcontractor": card.subcontractor_id,
        "due_date": card.due_date,
        "pledged": card.pledged,
        "contract_sha256": contract_sha256.hex(),
        "checkpoint": card.checkpoint,
        "journal_entries": entries,
        "qr": uri,
    }
    json_path = out_dir / f"{card.order_id}.card.json"
    json_path.write_text(json.dumps(document, indent=2))
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage)
    buffer = io.BytesIO()
    image.save(buffer)
    svg_path = out_dir / f"{card.order_id}.qr.svg"
    svg_path.write_bytes(buffer.getvalue())
    return json_path, svg_path
