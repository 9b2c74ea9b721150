// Verify a Sigstore bundle v0.3 offline with @sigstore/verify and one public key (no tlog, no CT, no TSA).
// Usage: node verify-bundle.js BUNDLE.json KEY.pem KEY_DETAILS   (prints VERIFIED, or the error code and exits 1)
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { toSignedEntity, toTrustMaterial, Verifier } = require('@sigstore/verify');

const [bundlePath, keyPath, keyDetails] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const hint = bundle.verificationMaterial.content.publicKey.hint;
  const rawBytes = crypto.createPublicKey(fs.readFileSync(keyPath)).export({ type: 'spki', format: 'der' });
  const root = { mediaType: '', tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] };
  const trust = toTrustMaterial(root, { [hint]: { rawBytes, keyDetails, validFor: { start: new Date(0) } } });
  new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(toSignedEntity(bundle));
  console.log('VERIFIED');
} catch (error) {
  console.log(`REJECTED ${error.code || error.name}: ${error.message}`);
  process.exitCode = 1;
}
