// The explorer's note and entry checks on what Python made (a checkpoint signed
// by a journal key, an entry's bytes): reads one JSON case from argv, prints
// what the verifier says of it.
import { pathToFileURL } from "node:url";

const [verifier, json] = process.argv.slice(2);
const v = await import(pathToFileURL(verifier).href);
const c = JSON.parse(json);
const out = {};
try {
  await v.verifyNote(v.parseNote(c.note), c.keys.map(v.fromHex));
  out.note = "verified";
} catch (error) {
  out.note = error.message;
}
try {
  const e = v.decodeEntry(v.fromBase64(c.entry));
  out.entry = { seq: e.seq, subject: e.subject, eventType: e.eventType, producer: e.producer,
                payload: new TextDecoder().decode(e.payload),
                leafHash: v.toHex(await v.leafHash(v.fromBase64(c.entry))) };
} catch (error) {
  out.entry = error.message;
}
console.log(JSON.stringify(out));
