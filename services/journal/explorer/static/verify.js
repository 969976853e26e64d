// The journal's checks, in the browser: RFC 9162 (RFC 6962) Merkle proofs,
// the C2SP signed-note checkpoint and its Ed25519 signature, and the entry
// encoding of docs/journal-format.md. Web Crypto only (crypto.subtle), so
// nothing is loaded from anywhere; the same checks as services/journal in
// Python, tested against the same RFC 6962 vectors (tests/test_explorer.py).

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export class VerifyError extends Error {}

export function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export function fromHex(text) {
  if (text.length % 2 || /[^0-9a-f]/i.test(text)) throw new VerifyError(`not hex: ${text}`);
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

// SHA-256(0x00 || data) and SHA-256(0x01 || left || right).
export async function leafHash(data) { return sha256(concat(Uint8Array.of(0), data)); }
export async function nodeHash(left, right) { return sha256(concat(Uint8Array.of(1), left, right)); }

function checkSizes(...hashes) {
  for (const h of hashes) {
    if (h.length !== 32) throw new VerifyError(`a hash of ${h.length} bytes; hashes are 32 bytes`);
  }
}

// RFC 9162 section 2.1.3.2. Sizes and indexes are BigInt-free: a journal of
// more than 2^53 entries is not in sight, and Number is exact below it.
export async function rootFromInclusionProof(index, size, leaf, proof) {
  if (!(index >= 0 && index < size)) throw new VerifyError(`index ${index} is beyond tree size ${size}`);
  checkSizes(leaf, ...proof);
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) throw new VerifyError("inclusion proof is longer than the tree is deep");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new VerifyError("inclusion proof is shorter than the tree is deep");
  return r;
}

export async function verifyInclusion(index, size, leaf, proof, root) {
  checkSizes(root);
  const calculated = await rootFromInclusionProof(index, size, leaf, proof);
  if (!equal(calculated, root)) {
    throw new VerifyError(`root mismatch: expected ${toHex(root)}, calculated ${toHex(calculated)}`);
  }
}

// RFC 9162 section 2.1.4.2.
export async function verifyConsistency(size1, size2, proof, root1, root2) {
  if (size2 < size1) throw new VerifyError(`size2 (${size2}) < size1 (${size1})`);
  if (size1 === 0) throw new VerifyError("a consistency proof from the empty tree proves nothing");
  if (size1 === size2) {
    if (proof.length) throw new VerifyError("sizes are equal but the proof is not empty");
    if (!equal(root1, root2)) throw new VerifyError("root mismatch");
    return;
  }
  if (!proof.length) throw new VerifyError("empty consistency proof for different sizes");
  checkSizes(root1, root2, ...proof);
  const path = (size1 & (size1 - 1)) === 0 ? [root1, ...proof] : [...proof];
  let fn = size1 - 1, sn = size2 - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) throw new VerifyError("consistency proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new VerifyError("consistency proof is too short");
  if (!equal(fr, root1)) throw new VerifyError("root mismatch for the first tree");
  if (!equal(sr, root2)) throw new VerifyError("root mismatch for the second tree");
}

// A checkpoint: "<origin>\n<size>\n<root b64>\ntimestamp <micros>\n\n— <name> <b64>\n...".
export function parseNote(text) {
  const cut = text.indexOf("\n\n");
  if (cut < 0) throw new VerifyError("checkpoint: no blank line before the signatures");
  const body = text.slice(0, cut + 1);
  const lines = body.split("\n");
  if (lines.length !== 5 || !/^[0-9]+$/.test(lines[1]) || !lines[3].startsWith("timestamp ")) {
    throw new VerifyError("checkpoint: not the four lines of a journal checkpoint");
  }
  const signatures = [];
  for (const line of text.slice(cut + 2).split("\n")) {
    if (!line) continue;
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new VerifyError(`checkpoint: a malformed signature line: ${line}`);
    signatures.push({ name: m[1], blob: fromBase64(m[2]) });
  }
  return {
    origin: lines[0], size: Number(lines[1]), root: fromBase64(lines[2]),
    timestampMicros: Number(lines[3].slice("timestamp ".length)), body, signatures,
  };
}

// SHA-256(name || "\n" || 0x01 || public key)[:4]: which key a signature line claims.
export async function noteKeyHash(name, publicKey) {
  const digest = await sha256(concat(encoder.encode(name + "\n"), Uint8Array.of(1), publicKey));
  return digest.slice(0, 4);
}

// Throws unless one of `publicKeys` signed the note under its origin.
export async function verifyNote(note, publicKeys) {
  for (const key of publicKeys) {
    const wanted = await noteKeyHash(note.origin, key);
    for (const s of note.signatures) {
      if (s.name !== note.origin || s.blob.length !== 68 || !equal(s.blob.slice(0, 4), wanted)) continue;
      const imported = await subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
      if (await subtle.verify({ name: "Ed25519" }, imported, s.blob.slice(4), encoder.encode(note.body))) {
        return;
      }
      throw new VerifyError(`checkpoint: the signature of ${note.origin} does not verify`);
    }
  }
  throw new VerifyError(`checkpoint: not signed by ${note.origin} with the pinned journal key`);
}

// The entry encoding (docs/journal-format.md): what the leaf hash covers.
export function decodeEntry(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const take = (n, field) => {
    if (at + n > bytes.length) throw new VerifyError(`entry: truncated at ${field}`);
    const out = bytes.subarray(at, at + n); at += n; return out;
  };
  const u8 = (f) => take(1, f)[0];
  const u16 = (f) => { take(2, f); return view.getUint16(at - 2); };
  const u32 = (f) => { take(4, f); return view.getUint32(at - 4); };
  const i64 = (f) => { take(8, f); return Number(view.getBigInt64(at - 8)); };
  const text = (n, f) => decoder.decode(take(n, f));
  if (u8("version") !== 1) throw new VerifyError("entry: not version 1");
  const seq = i64("seq");
  const timeMicros = i64("time");
  take(32, "prev_hash");
  const statementLength = u32("statement length");
  const end = at + statementLength;
  const tag = text(25, "tag");
  if (tag !== "scf-journal-statement-v1\n") throw new VerifyError("entry: not an SCF statement");
  const producer = text(u8("producer"), "producer");
  take(32, "key_id");
  const producedMicros = i64("produced");
  const subject = text(u16("subject"), "subject");
  const eventType = text(u8("event_type"), "event_type");
  const idempotencyKey = text(u8("idempotency_key"), "idempotency_key");
  const payload = take(u32("payload length"), "payload");
  if (at !== end) throw new VerifyError("entry: statement length does not match");
  const batchSize = u32("batch size");
  const batchIndex = u32("batch index");
  const pathLength = u8("batch path length");
  take(32 * pathLength, "batch path");
  take(64, "signature");
  if (at !== bytes.length) throw new VerifyError("entry: trailing bytes");
  if (!(batchIndex < batchSize)) throw new VerifyError("entry: batch index beyond its batch");
  return { seq, timeMicros, producer, producedMicros, subject, eventType, idempotencyKey, payload };
}
