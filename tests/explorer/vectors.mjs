// Runs the explorer's verifier (static/verify.js) over the RFC 6962 / RFC 9162
// vectors the Python tests use, and prints one JSON line per case:
// {"path", "wantErr", "gotErr"}. tests/explorer/test_verifier.py compares.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [verifier, ...paths] = process.argv.slice(2);
const v = await import(pathToFileURL(verifier).href);
const b64 = (s) => v.fromBase64(s);

for (const path of paths) {
  const c = JSON.parse(readFileSync(path, "utf8"));
  let gotErr = false;
  try {
    if ("leafIdx" in c) {
      await v.verifyInclusion(c.leafIdx, c.treeSize, b64(c.leafHash), (c.proof || []).map(b64), b64(c.root));
    } else {
      await v.verifyConsistency(c.size1, c.size2, (c.proof || []).map(b64), b64(c.root1), b64(c.root2));
    }
  } catch (error) {
    gotErr = true;
  }
  console.log(JSON.stringify({ path, wantErr: c.wantErr, gotErr }));
}
