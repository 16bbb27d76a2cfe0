// Verify an agentsudo token with jose, given only the issuer's jwks.json.
//
//   node verify.mjs JWKS_PATH TOKEN ISSUER AUDIENCE
//
// Prints the verified payload as JSON on stdout and exits 0; on any refusal
// prints one line "error: CODE: message" on stderr and exits 1 (2 for bad usage).
import { readFile } from "node:fs/promises";
import { createLocalJWKSet, jwtVerify } from "jose";

const [jwksPath, token, issuer, audience] = process.argv.slice(2);
if (!jwksPath || !token || !issuer || !audience) {
  process.stderr.write("usage: node verify.mjs JWKS_PATH TOKEN ISSUER AUDIENCE\n");
  process.exit(2);
}

try {
  const jwks = createLocalJWKSet(JSON.parse(await readFile(jwksPath, "utf8")));
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    algorithms: ["EdDSA", "Ed25519", "ES256"],
    typ: "at+jwt",
    requiredClaims: ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope"],
  });
  process.stdout.write(JSON.stringify({ header: protectedHeader, payload }) + "\n");
} catch (err) {
  process.stderr.write(`error: ${err.code ?? err.name}: ${err.message}\n`);
  process.exit(1);
}
