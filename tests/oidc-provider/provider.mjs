// A real OpenID provider on loopback for Tether's tests and for trying the sign-in by
// hand: oauth2-mock-server 8 runs the authorization code flow (discovery, the
// authorization endpoint, codes, the PKCE check, the nonce carried into the ID token,
// the token endpoint, userinfo, the JWKS). This file adds what a test of a relying party
// needs and the mock lacks:
//
// - client authentication checked for real at the token endpoint: `private_key_jwt`
//   (the assertion's RS/PS signature verified with node:crypto against the client's
//   public key, `iss` = `sub` = client id, `aud` = the token endpoint, `exp` at most five
//   minutes ahead, each `jti` once) or a client secret (Basic or in the form);
// - the authorization request must carry `state`, `nonce` and an S256 PKCE challenge,
//   and the token request the same `redirect_uri` and client as the authorization;
// - the person signing in: their claims (`acr`, `nhsid_nrbac_roles`, `roles`, `groups`,
//   …), with the role claims in the ID token or at userinfo, as NHS CIS2 gives them;
// - key rotation: a new signing key, the old one withdrawn from the JWKS;
// - hostile ID tokens on request: expired, another audience, issuer or nonce, a low
//   `acr`, signed with the retired key or a key never published, or unsigned.
//
//   node provider.mjs [--port 9400] [--client-id tether] [--client-key tether-client.pem]
//                     [--client-secret SECRET]
//
// It prints `oidc provider: listening on http://127.0.0.1:PORT` (the issuer) when ready.
// The tests drive it through POST /_control/person, /_control/next, /_control/rotate and
// GET /_control/log (see tests/src/oidc.rs).

import http from 'node:http';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, constants, createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '9400' },
    host: { type: 'string', default: '127.0.0.1' },
    'client-id': { type: 'string', default: 'tether' },
    'client-key': { type: 'string' },
    'client-secret': { type: 'string' },
  },
});

const clientId = args['client-id'];
let clientPublicKey = null;
if (args['client-key'] !== undefined) {
  const { readFileSync } = await import('node:fs');
  clientPublicKey = createPublicKey(createPrivateKey(readFileSync(args['client-key'])));
}
const clientSecret = args['client-secret'] ?? null;
if (clientPublicKey === null && clientSecret === null) {
  console.error('provider.mjs: give --client-key (private_key_jwt) or --client-secret');
  process.exit(2);
}

// The person who signs in next, until told otherwise: an NHS CIS2 user with a nurse's
// role at organisation RX4, assurance AAL3, roles at userinfo.
const DEFAULT_PERSON = {
  sub: '910000000001',
  email: 'sam.example@nhs.net',
  name: 'Sam Example',
  acr: 'AAL3_ANY',
  nhsid_nrbac_roles: [
    {
      person_orgid: '1001',
      person_roleid: '2001',
      org_code: 'RX4',
      role_name: '"Clinical":"Clinical Provision":"Nurse Access Role"',
      role_code: 'S8000:G8000:R8001',
    },
  ],
};
const ROLE_CLAIMS = ['nhsid_nrbac_roles', 'selected_roleid', 'roles', 'groups', '_claim_names', '_claim_sources'];
let person = { claims: DEFAULT_PERSON, rolesAt: 'userinfo' };
// One-shot changes to the next ID token.
let next = null;
let issuer;
let service;
let url;
const retired = [];
const seenJti = new Set();
const authorizations = new Map();
const accessTokens = new Set();
const log = [];

const b64url = (buffer) => Buffer.from(buffer).toString('base64url');
const json = (value) => b64url(JSON.stringify(value));

function signJwt(header, payload, privateKey) {
  const input = `${json(header)}.${json(payload)}`;
  if (header.alg === 'none') return `${input}.`;
  const signature = sign('sha256', Buffer.from(input), privateKey);
  return `${input}.${b64url(signature)}`;
}

// A client assertion's signature, for the RS and PS algorithms Tether may use.
function verifyAssertion(assertion) {
  const parts = assertion.split('.');
  if (parts.length !== 3) return 'the client assertion is not a JWS';
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  } catch {
    return 'the client assertion is not JSON';
  }
  const algs = {
    RS256: ['sha256', constants.RSA_PKCS1_PADDING],
    RS384: ['sha384', constants.RSA_PKCS1_PADDING],
    RS512: ['sha512', constants.RSA_PKCS1_PADDING],
    PS256: ['sha256', constants.RSA_PKCS1_PSS_PADDING],
    PS384: ['sha384', constants.RSA_PKCS1_PSS_PADDING],
    PS512: ['sha512', constants.RSA_PKCS1_PSS_PADDING],
  };
  const alg = algs[header.alg];
  if (alg === undefined) return `the client assertion's algorithm ${header.alg} is not accepted`;
  const ok = verify(
    alg[0],
    Buffer.from(`${parts[0]}.${parts[1]}`),
    { key: clientPublicKey, padding: alg[1], saltLength: constants.RSA_PSS_SALTLEN_DIGEST },
    Buffer.from(parts[2], 'base64url'),
  );
  if (!ok) return "the client assertion's signature does not verify with the client's key";
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== clientId || claims.sub !== clientId) return 'the client assertion is not from this client';
  if (claims.aud !== `${url}/token`) return 'the client assertion is not for this token endpoint';
  if (typeof claims.exp !== 'number' || claims.exp <= now || claims.exp > now + 300) return 'the client assertion has expired or lives too long';
  if (typeof claims.jti !== 'string' || seenJti.has(claims.jti)) return "the client assertion's jti is missing or was used before";
  seenJti.add(claims.jti);
  return null;
}

// Which client a token request authenticates as, or why none.
function authenticate(req) {
  const body = req.body ?? {};
  if (body.client_assertion_type === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    if (clientPublicKey === null) return { method: 'private_key_jwt', error: 'this provider takes a client secret' };
    const error = verifyAssertion(String(body.client_assertion ?? ''));
    return { method: 'private_key_jwt', error: error ?? (body.client_id !== undefined && body.client_id !== clientId ? 'client_id differs' : null) };
  }
  const basic = req.headers.authorization;
  if (basic !== undefined && basic.startsWith('Basic ')) {
    const [id, secret] = Buffer.from(basic.slice(6), 'base64').toString().split(':').map(decodeURIComponent);
    const ok = clientSecret !== null && id === clientId && secret === clientSecret;
    return { method: 'client_secret_basic', error: ok ? null : 'wrong client id or secret' };
  }
  if (body.client_secret !== undefined) {
    const ok = clientSecret !== null && body.client_id === clientId && body.client_secret === clientSecret;
    return { method: 'client_secret_post', error: ok ? null : 'wrong client id or secret' };
  }
  return { method: 'none', error: 'the client did not authenticate' };
}

async function startIssuer() {
  issuer = new OAuth2Issuer();
  issuer.url = url;
  await issuer.keys.generate('RS256');
  service = new OAuth2Service(issuer);

  service.on('beforeAuthorizeRedirect', (redirect, req) => {
    const q = req.query;
    const code = redirect.url.searchParams.get('code');
    const missing = ['state', 'nonce', 'code_challenge'].filter((name) => typeof q[name] !== 'string' || q[name].length === 0);
    if (missing.length > 0 || q.code_challenge_method !== 'S256' || q.client_id !== clientId) {
      redirect.url.searchParams.delete('code');
      redirect.url.searchParams.set('error', 'invalid_request');
      redirect.url.searchParams.set('error_description', `missing or wrong: ${[...missing, 'code_challenge_method or client_id'].join(', ')}`);
      return;
    }
    if (code !== null) authorizations.set(code, { redirectUri: q.redirect_uri, clientId: q.client_id, scope: q.scope, acrValues: q.acr_values });
  });

  service.on('beforeTokenSigning', (token) => {
    const payload = token.payload;
    const idToken = 'aud' in payload;
    const claims = { ...person.claims };
    if (idToken && person.rolesAt === 'userinfo') for (const name of ROLE_CLAIMS) delete claims[name];
    Object.assign(payload, claims);
    if (!idToken || next === null) return;
    const now = Math.floor(Date.now() / 1000);
    if (next.expired) Object.assign(payload, { iat: now - 7200, nbf: now - 7200, exp: now - 3600 });
    if (next.aud !== undefined) payload.aud = next.aud;
    if (next.iss !== undefined) payload.iss = next.iss;
    if (next.nonce !== undefined) payload.nonce = next.nonce;
    if (next.acr !== undefined) payload.acr = next.acr;
  });

  service.on('beforeResponse', (response, req) => {
    const body = req.body ?? {};
    const auth = authenticate(req);
    const entry = { grant_type: body.grant_type, method: auth.method, ok: auth.error === null, reason: auth.error };
    log.push(entry);
    if (auth.error !== null) {
      response.statusCode = 401;
      response.body = { error: 'invalid_client', error_description: auth.error };
      return;
    }
    const authorized = authorizations.get(body.code);
    authorizations.delete(body.code);
    if (body.grant_type === 'authorization_code' && (authorized === undefined || authorized.redirectUri !== body.redirect_uri)) {
      entry.ok = false;
      entry.reason = 'unknown code or another redirect_uri';
      response.statusCode = 400;
      response.body = { error: 'invalid_grant', error_description: 'the code is unknown, used, or for another redirect_uri' };
      return;
    }
    if (response.statusCode === 200 && typeof response.body.access_token === 'string') accessTokens.add(response.body.access_token);
    if (authorized !== undefined) Object.assign(entry, { scope: authorized.scope, acr_values: authorized.acrValues });
    // An ID token signed as the next change asks: with the retired key, with a key never
    // published, or not at all.
    if (next !== null && next.sign_with !== undefined && typeof response.body.id_token === 'string') {
      const [header, payload] = response.body.id_token.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()));
      if (next.sign_with === 'none') {
        response.body.id_token = signJwt({ alg: 'none', kid: header.kid }, payload, null);
      } else if (next.sign_with === 'retired' && retired.length > 0) {
        const jwk = retired[retired.length - 1];
        response.body.id_token = signJwt({ alg: 'RS256', typ: 'JWT', kid: jwk.kid }, payload, createPrivateKey({ key: jwk, format: 'jwk' }));
      } else if (next.sign_with === 'unserved') {
        const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
        response.body.id_token = signJwt({ alg: 'RS256', typ: 'JWT', kid: 'never-published' }, payload, privateKey);
      } else if (next.sign_with === 'same-kid-other-key') {
        const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
        response.body.id_token = signJwt({ alg: 'RS256', typ: 'JWT', kid: header.kid }, payload, privateKey);
      }
    }
    if (typeof response.body.id_token === 'string') next = null;
  });

  service.on('beforeUserinfo', (response, req) => {
    const bearer = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    if (!accessTokens.has(bearer)) {
      response.statusCode = 401;
      response.body = { error: 'invalid_token' };
      return;
    }
    const body = { sub: person.claims.sub };
    for (const name of ROLE_CLAIMS) if (person.rolesAt === 'userinfo' && name in person.claims) body[name] = person.claims[name];
    for (const name of ['name', 'email', 'uid']) if (name in person.claims) body[name] = person.claims[name];
    response.body = body;
  });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      try {
        const text = Buffer.concat(chunks).toString();
        resolve(text.length === 0 ? {} : JSON.parse(text));
      } catch (e) {
        reject(e);
      }
    });
    req.on('error', reject);
  });
}

async function control(req, res) {
  const answer = (status, value) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };
  try {
    const path = req.url.split('?')[0];
    if (req.method === 'POST' && path === '/_control/person') {
      const body = await readBody(req);
      const { roles_at: rolesAt = 'id_token', ...claims } = body;
      if (typeof claims.sub !== 'string') return answer(400, { error: 'a person needs a sub' });
      person = { claims, rolesAt };
      return answer(200, { ok: true });
    }
    if (req.method === 'POST' && path === '/_control/next') {
      next = await readBody(req);
      return answer(200, { ok: true });
    }
    if (req.method === 'POST' && path === '/_control/rotate') {
      const [old] = issuer.keys.toJSON(true);
      retired.push(old);
      await startIssuer();
      const [now] = issuer.keys.toJSON();
      return answer(200, { retired_kid: old.kid, kid: now.kid });
    }
    if (req.method === 'GET' && path === '/_control/log') return answer(200, log);
    return answer(404, { error: 'no such control' });
  } catch (e) {
    return answer(500, { error: String(e) });
  }
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/_control/')) {
    control(req, res);
  } else {
    service.requestHandler(req, res);
  }
});
server.listen(Number(args.port), args.host, async () => {
  const { port } = server.address();
  url = `http://${args.host}:${port}`;
  await startIssuer();
  // A fingerprint of the client key, so a person starting it by hand sees which key it takes.
  const key = clientPublicKey === null ? 'a client secret' : `key ${createHash('sha256').update(clientPublicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16)}`;
  console.log(`oidc provider: listening on ${url} (client ${clientId}, ${key})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
