// A bank developer's SCF client in Node.js, written from protos/ and docs/
// alone (docs/integrating.md walks through it). It finances one purchase
// order end to end, as five parties, each with its own client certificate:
//
//   1. acme-builders (a subcontractor) registers an order; citybuild (its
//      buyer) confirms it;
//   2. uw-alice (an underwriter of bank-north) grants acme-builders a
//      facility; acme-builders asks bank-north for financing;
//   3. the application is scored; when it is referred, bank-north's
//      underwriters approve it (two of them above the four-eyes amount);
//   4. the three signers read the contract and sign its SHA-256 with their
//      own Ed25519 keys; lending disburses;
//   5. auditor-reg reads the order's journal history and verifies every
//      entry against the checkpoint the journal signed, with the journal's
//      public key pinned.
//
// Settings, as the platform's own (README, docs/operations.md):
//   SCF_CERTS_DIR       ca.pem and parties/<party>.pem|.key
//   SCF_KEYS_DIR        journal.pub (hex), the key checkpoints verify under
//   SCF_ORDERS_ADDR, SCF_LENDING_ADDR, SCF_JOURNAL_ADDR   host:port
//
// `node financing.mjs` prints what happens and, last, one line
// `RESULT {...}` with the ids and what was verified; it exits 1 on any failure.

import crypto from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

// The same checks the auditors' explorer runs in browsers (Web Crypto only).
import {
  decodeEntry, fromHex, leafHash, parseNote, verifyInclusion, verifyNote,
} from "../../services/journal/explorer/static/verify.js";

const here = dirname(fileURLToPath(import.meta.url));
const PROTOS = join(here, "..", "..", "protos");

function setting(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

// Field names as in the protos; int64 as strings (exact); enums by name;
// bytes as Buffers; every field present, default or not.
const definition = protoLoader.loadSync(
  ["orders", "lending", "underwriting", "journal", "platform"].map(
    (p) => `scf/${p}/v1/${p}.proto`,
  ),
  { includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: true },
);
const scf = grpc.loadPackageDefinition(definition).scf;

// Mutual TLS: the platform knows a caller only by its client certificate.
function as(party, Service, addrSetting) {
  const certs = setting("SCF_CERTS_DIR");
  const tls = grpc.credentials.createSsl(
    readFileSync(join(certs, "ca.pem")),
    readFileSync(join(certs, "parties", `${party}.key`)),
    readFileSync(join(certs, "parties", `${party}.pem`)),
  );
  return new Service(setting(addrSetting), tls);
}

// A unary call with a deadline (every call should have one).
function call(client, method, request, seconds = 15) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + seconds * 1000 }, (err, reply) =>
      err ? reject(err) : resolve(reply),
    );
  });
}

// A watch: the first answer for which `done` holds. The server sends the
// current state first, then every change, so nothing is polled.
function watchUntil(client, method, request, done, what, seconds = 60) {
  return new Promise((resolve, reject) => {
    const stream = client[method](request, { deadline: Date.now() + seconds * 1000 });
    let found = false;
    stream.on("data", (reply) => {
      if (!found && done(reply)) {
        found = true;
        resolve(reply);
        stream.cancel();
      }
    });
    stream.on("error", (err) => {
      if (!found) reject(new Error(`waiting for ${what}: ${err.code} ${err.details}`));
    });
    stream.on("end", () => {
      if (!found) reject(new Error(`${method} ended before ${what}`));
    });
  });
}

// Every message of a server stream.
function collect(client, method, request, seconds = 30) {
  return new Promise((resolve, reject) => {
    const replies = [];
    const stream = client[method](request, { deadline: Date.now() + seconds * 1000 });
    stream.on("data", (reply) => replies.push(reply));
    stream.on("error", reject);
    stream.on("end", () => resolve(replies));
  });
}

// A refusal's status code by name, such as PERMISSION_DENIED.
async function refusal(promise) {
  try {
    await promise;
  } catch (err) {
    return Object.keys(grpc.status).find((name) => grpc.status[name] === err.code);
  }
  throw new Error("the call was expected to be refused");
}

const day = (offset) => new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);
// Idempotency keys: one per intended action, reused on a retry.
const run = crypto.randomBytes(4).toString("hex");
const key = (what) => `node-${run}-${what}`;

async function main() {
  const orders = (party) => as(party, scf.orders.v1.OrdersService, "SCF_ORDERS_ADDR");
  const lending = (party) => as(party, scf.lending.v1.LendingService, "SCF_LENDING_ADDR");
  const underwriting = (party) => as(party, scf.underwriting.v1.UnderwritingService, "SCF_LENDING_ADDR");
  const platform = as("acme-builders", scf.platform.v1.PlatformService, "SCF_ORDERS_ADDR");

  const me = await call(platform, "WhoAmI", {});
  console.log(`connected as ${me.party_id} (${me.role} of ${me.organization}) to ${me.service}`);

  // 1. The order, registered and confirmed. Money is a decimal string in
  // major units with its ISO 4217 code; dates are YYYY-MM-DD.
  const contractSha256 = crypto.createHash("sha256").update("the signed supply contract").digest();
  const { order } = await call(orders("acme-builders"), "RegisterOrder", {
    buyer_id: "citybuild",
    amount: { amount: "4000000.00", currency: "CNY" },
    issue_date: day(0),
    due_date: day(120),
    line_items: [
      { description: "steel (tonnes)", quantity: 400, unit_price: { amount: "9000.00", currency: "CNY" } },
      { description: "installation", quantity: 1, unit_price: { amount: "400000.00", currency: "CNY" } },
    ],
    contract_sha256: contractSha256,
    reference: `NODE-${run}`,
    idempotency_key: key("order"),
  });
  console.log(`registered ${order.order_id}: ${order.amount.amount} ${order.amount.currency}, state ${order.state}`);
  console.log(`the subcontractor may not confirm its own order: ${await refusal(
    call(orders("acme-builders"), "ConfirmOrder", { order_id: order.order_id, idempotency_key: key("self") }),
  )}`);
  await call(orders("citybuild"), "ConfirmOrder", { order_id: order.order_id, idempotency_key: key("confirm") });
  console.log("citybuild confirmed it");

  // 2. A facility, then the request for financing.
  const { facility } = await call(lending("uw-alice"), "CreateFacility", {
    subcontractor_id: "acme-builders",
    limit: { amount: "5000000.00", currency: "CNY" },
    expires_on: day(365),
    spread_bps: 200,
    idempotency_key: key("facility"),
  });
  console.log(`facility ${facility.facility_id}: limit ${facility.limit.amount} CNY`);
  const { application } = await call(lending("acme-builders"), "RequestFinancing", {
    order_id: order.order_id,
    bank: "bank-north",
    amount: { amount: "2000000.00", currency: "CNY" },
    idempotency_key: key("finance"),
  });
  const appId = application.application_id;
  console.log(`application ${appId}: ${application.state}`);

  // 3. Scoring decides; a referral waits for bank-north's underwriters.
  const watchApp = (party, states) =>
    watchUntil(lending(party), "WatchApplication", { application_id: appId },
      (r) => states.includes(r.application.state), `${appId} in ${states.join("|")}`);
  const S = (word) => `APPLICATION_STATE_${word}`; // enums arrive by name (enums: String)
  let app = (await watchApp("acme-builders", [S("REFERRED"), S("APPROVED"), S("CLOSED")])).application;
  const decision = JSON.parse(app.decision_json);
  console.log(`scored: ${app.state} (grade ${decision.grade}, recommends ${decision.recommendation})`);
  if (app.state === S("CLOSED")) throw new Error(`${app.outcome}: ${app.reason}`);
  for (const underwriter of ["uw-alice", "uw-bob"]) {
    if (app.state === S("APPROVED")) break;
    const approved = await call(underwriting(underwriter), "Approve", {
      application_id: appId,
      terms: { amount: { amount: "2000000.00", currency: "CNY" }, rate_bps: 600, tenor_days: 0 },
      reason: "example client: within the facility",
      idempotency_key: key(`approve-${underwriter}`),
    });
    console.log(`${underwriter} approves: ${approved.state}`);
    app = { state: approved.state };
  }

  // 4. Every signer reads the contract and signs the 32 raw bytes of its
  // SHA-256 with its own Ed25519 key, registered first as 32 raw bytes.
  await watchApp("acme-builders", [S("APPROVED")]);
  const buyerOrder = (await call(orders("citybuild"), "GetOrder", { order_id: order.order_id })).order;
  const { contract } = await call(lending("citybuild"), "GetContract", {
    application_id: buyerOrder.pledge.application_id,
  });
  const digest = crypto.createHash("sha256").update(contract.document, "utf8").digest();
  if (!digest.equals(contract.sha256)) throw new Error("the contract's digest is not its document's");
  const terms = JSON.parse(contract.document);
  console.log(`contract ${contract.contract_id}: ${terms.rate_bps} bp, maturing ${terms.maturity}; signers ${contract.signers.join(", ")}`);
  for (const party of ["acme-builders", "uw-alice", "citybuild"]) {
    const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
    const raw = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
    await call(lending(party), "RegisterSigningKey", { public_key: raw, idempotency_key: key(`key-${party}`) });
    await call(lending(party), "SignContract", {
      contract_id: contract.contract_id,
      signature: crypto.sign(null, contract.sha256, privateKey),
      idempotency_key: key(`sign-${party}`),
    });
    console.log(`${party} signed`);
  }
  app = (await watchApp("acme-builders", [S("DISBURSED")])).application;
  console.log(`disbursed ${app.terms.amount.amount} ${app.terms.amount.currency} at ${app.terms.rate_bps} bp`);

  // 5. The auditor's check: the order's history, every entry proven against
  // one checkpoint the journal signed (its key pinned, never fetched).
  const audit = as("auditor-reg", scf.journal.v1.AuditService, "SCF_JOURNAL_ADDR");
  const journalKey = fromHex(readFileSync(join(setting("SCF_KEYS_DIR"), "journal.pub"), "utf8").trim());
  // The history ends with the newest entry: the journal waits (5 s at most)
  // for a checkpoint that covers it.
  const latest = (await call(orders("citybuild"), "GetOrder", { order_id: order.order_id })).order;
  const history = await collect(audit, "GetSubjectHistory", { subject: `order/${order.order_id}` });
  const note = parseNote(history[0].checkpoint);
  await verifyNote(note, [journalKey]);
  const events = [];
  for (const reply of history) {
    const leaf = new Uint8Array(reply.entry.leaf);
    const proof = reply.inclusion_proof.map((h) => new Uint8Array(h));
    await verifyInclusion(Number(reply.entry.seq), note.size, await leafHash(leaf), proof, note.root);
    const decoded = decodeEntry(leaf);
    if (decoded.subject !== `order/${order.order_id}`) throw new Error(`entry ${decoded.seq} is not the order's`);
    events.push(decoded.eventType);
  }
  // One entry per version of the order (Order.version counts its transitions).
  if (history.length < latest.version) {
    throw new Error(`${history.length} entries for version ${latest.version} of the order`);
  }
  console.log(`verified ${events.length} entries of order/${order.order_id} against checkpoint ${note.size}: ${events.join(", ")}`);
  console.log("RESULT " + JSON.stringify({
    order_id: order.order_id, application_id: appId, contract_id: contract.contract_id,
    events, tree_size: note.size,
  }));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`failed: ${err.stack ?? err}`);
    process.exit(1);
  },
);
