// A protected resource in Node: verifies an agentsudo token bound to a key (cnf.jkt) and
// the DPoP proof (RFC 9449) of each request, with jose alone.
//
//   node dpop_service.mjs JWKS_PATH ISSUER AUDIENCE
//
// Listens on 127.0.0.1 (a free port) and prints "listening PORT" on stdout. A request
// that passes gets 200 and {"sub", "scope", "jkt"}; any refusal a 401 with
// WWW-Authenticate: DPoP error="...", error_description="..." (one line).
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import http from "node:http";
import {
  EmbeddedJWK,
  base64url,
  calculateJwkThumbprint,
  createLocalJWKSet,
  jwtVerify,
} from "jose";

const [jwksPath, issuer, audience] = process.argv.slice(2);
if (!jwksPath || !issuer || !audience) {
  process.stderr.write("usage: node dpop_service.mjs JWKS_PATH ISSUER AUDIENCE\n");
  process.exit(2);
}
const jwks = createLocalJWKSet(JSON.parse(await readFile(jwksPath, "utf8")));
const algorithms = ["EdDSA", "ES256"];
const seen = new Map(); // proof jti -> when it may be forgotten (ms)
const WINDOW = 60; // seconds a proof's iat may lie from now

class Refusal extends Error {
  constructor(error, description) {
    super(description);
    this.error = error;
  }
}

function headerValues(req, name) {
  const values = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() === name) values.push(req.rawHeaders[i + 1]);
  }
  return values;
}

async function check(req) {
  const authorization = headerValues(req, "authorization");
  if (authorization.length !== 1 || !authorization[0].startsWith("DPoP ")) {
    throw new Refusal("invalid_token", "expected Authorization: DPoP <token>");
  }
  const token = authorization[0].slice(5).trim();
  let claims;
  try {
    ({ payload: claims } = await jwtVerify(token, jwks, {
      issuer,
      audience,
      algorithms,
      typ: "at+jwt",
      requiredClaims: ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope"],
    }));
  } catch (err) {
    throw new Refusal("invalid_token", `token: ${err.code ?? err.name}`);
  }
  const jkt = claims.cnf?.jkt;
  if (typeof jkt !== "string") throw new Refusal("invalid_token", "the token is not bound");
  const proofs = headerValues(req, "dpop");
  if (proofs.length !== 1) {
    throw new Refusal("invalid_dpop_proof", `expected one DPoP header, found ${proofs.length}`);
  }
  let proof, header;
  try {
    ({ payload: proof, protectedHeader: header } = await jwtVerify(proofs[0], EmbeddedJWK, {
      typ: "dpop+jwt",
      algorithms,
      requiredClaims: ["jti", "htm", "htu", "iat", "ath"],
    }));
  } catch (err) {
    throw new Refusal("invalid_dpop_proof", `proof: ${err.code ?? err.name}`);
  }
  const now = Math.floor(Date.now() / 1000);
  if (Math.abs(now - proof.iat) > WINDOW) throw new Refusal("invalid_dpop_proof", "iat");
  if (proof.htm !== req.method) throw new Refusal("invalid_dpop_proof", "htm");
  const url = new URL(req.url, `http://${req.headers.host}`);
  if (proof.htu !== `${url.origin}${url.pathname}`) {
    throw new Refusal("invalid_dpop_proof", "htu");
  }
  const ath = base64url.encode(createHash("sha256").update(token, "ascii").digest());
  if (proof.ath !== ath) throw new Refusal("invalid_dpop_proof", "ath");
  if ((await calculateJwkThumbprint(header.jwk, "sha256")) !== jkt) {
    throw new Refusal("invalid_token", "the proof's key is not the token's");
  }
  for (const [old, until] of seen) if (until < Date.now()) seen.delete(old);
  if (seen.has(proof.jti)) throw new Refusal("invalid_dpop_proof", "replayed");
  seen.set(proof.jti, (proof.iat + WINDOW + 1) * 1000);
  return { sub: claims.sub, scope: claims.scope, jkt };
}

const server = http.createServer(async (req, res) => {
  try {
    const body = JSON.stringify(await check(req));
    res.writeHead(200, { "content-type": "application/json" }).end(body);
  } catch (err) {
    const error = err instanceof Refusal ? err.error : "invalid_token";
    const description = String(err.message).replace(/["\\\r\n]/g, "'");
    res
      .writeHead(401, {
        "www-authenticate": `DPoP error="${error}", error_description="${description}"`,
        "content-type": "application/json",
      })
      .end(JSON.stringify({ error, error_description: description }));
  }
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
