// The order's identity card, verified here: the checkpoint's signature against
// the journal keys pinned in this page, then every entry's inclusion proof
// against that checkpoint's root. What is shown of an entry is read from the
// bytes just proven, not from anything else the server says.
import {
  VerifyError, decodeEntry, fromBase64, fromHex, leafHash, parseNote, toHex,
  verifyConsistency, verifyInclusion, verifyNote,
} from "./verify.js";

const verdict = document.getElementById("verdict");
const rows = document.querySelector("#card-entries tbody");
const config = JSON.parse(document.getElementById("scf-config").textContent);

function row(cells, ok) {
  const tr = document.createElement("tr");
  tr.className = ok ? "ok" : "bad";
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = cell;
    tr.appendChild(td);
  }
  rows.appendChild(tr);
  return tr;
}

function fail(message) {
  verdict.className = "verdict bad";
  verdict.textContent = `NOT verified: ${message}`;
}

function fromBase64Url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return fromBase64(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
}

async function main() {
  const order = verdict.dataset.order;
  const reply = await fetch(`/api/orders/${encodeURIComponent(order)}/card`);
  if (!reply.ok) return fail(`the explorer has no card for ${order} (${reply.status})`);
  const card = await reply.json();
  let note;
  try {
    note = parseNote(card.checkpoint);
    await verifyNote(note, config.journal_keys.map(fromHex));
  } catch (error) {
    return fail(error instanceof VerifyError ? error.message : `checkpoint: ${error}`);
  }
  document.getElementById("checkpoint-line").textContent =
    `Checkpoint of ${note.size} entries, root ${toHex(note.root)}, signed by ${note.origin}.`;
  const failures = [];
  for (const claimed of card.entries) {
    try {
      const leaf = fromBase64(claimed.leaf);
      const entry = decodeEntry(leaf);
      if (entry.seq !== claimed.seq) {
        throw new VerifyError(`the bytes are entry ${entry.seq}, not entry ${claimed.seq}`);
      }
      await verifyInclusion(entry.seq, note.size, await leafHash(leaf), claimed.proof.map(fromBase64), note.root);
      row([entry.seq, entry.eventType, entry.subject, entry.producer, "verified"], true)
        .dataset.seq = entry.seq;
    } catch (error) {
      const why = error instanceof VerifyError ? error.message : String(error);
      failures.push(`entry ${claimed.seq}: ${why}`);
      row([claimed.seq, "", "", "", `entry ${claimed.seq}: ${why}`], false).dataset.seq = claimed.seq;
    }
  }
  for (const seq of card.pending) {
    row([seq, "", "", "", "after the latest checkpoint: not yet provable"], true).dataset.seq = seq;
  }
  const scanned = Number(verdict.dataset.scannedSize || 0);
  if (scanned && !failures.length) {
    try {
      const proof = await (await fetch(`/api/consistency?first=${scanned}&second=${note.size}`)).json();
      if (proof.error) throw new VerifyError(proof.error);
      await verifyConsistency(scanned, note.size, proof.proof.map(fromBase64),
        fromBase64Url(verdict.dataset.scannedRoot), note.root);
    } catch (error) {
      failures.push(`the scanned card's checkpoint (${scanned} entries) is not in this journal's history: ${error.message}`);
    }
  }
  if (failures.length) return fail(failures.join("; "));
  verdict.className = "verdict ok";
  verdict.textContent = `verified: all ${card.entries.length} entries are in the checkpoint of ${note.size} entries`
    + (scanned ? `, which extends the scanned card's ${scanned}` : "");
}

main().catch((error) => fail(String(error)));
