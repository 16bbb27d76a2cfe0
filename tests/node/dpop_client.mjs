// A DPoP client in Node: jose signs a proof per request with a key handed over on stdin.
//
//   node dpop_client.mjs METHOD URL < {"token": ..., "jwk": <private JWK>, "alg": ...}
//
// Sends METHOD URL with Authorization: DPoP <token> and a fresh proof (typ dpop+jwt, the
// public jwk, jti, htm, htu, iat, ath); prints {"status", "body", "proof"} as JSON. The
// private key comes on stdin, never from a file or the command line.
import { createHash, randomUUID } from "node:crypto";
import { SignJWT, base64url, importJWK } from "jose";

const [method, url] = process.argv.slice(2);
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { token, jwk, alg } = JSON.parse(input);
const { d, ...publicJwk } = jwk;
const key = await importJWK(jwk, alg);
const target = new URL(url);
const proof = await new SignJWT({
  htm: method,
  htu: `${target.origin}${target.pathname}`,
  ath: base64url.encode(createHash("sha256").update(token, "ascii").digest()),
})
  .setProtectedHeader({ typ: "dpop+jwt", alg, jwk: publicJwk })
  .setJti(randomUUID())
  .setIssuedAt()
  .sign(key);
const answer = await fetch(url, {
  method,
  headers: { authorization: `DPoP ${token}`, dpop: proof },
});
process.stdout.write(
  JSON.stringify({ status: answer.status, body: await answer.text(), proof }) + "\n",
);
