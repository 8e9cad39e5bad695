// A real OpenID Provider (the npm package oidc-provider, OpenID Certified) for the request
// authentication test (crates/weft-proxy/tests/jwt_oidc.rs). Listens on 127.0.0.1:0 with the
// issuer http://127.0.0.1:<port>, gets access tokens (JWTs, RS256 and ES256, audience
// urn:weft:api) from its own token endpoint by the client credentials grant, prints one JSON
// line {issuer, tokens: {RS256, ES256}} and serves discovery and the JWKS until killed.
// Run with NODE_PATH pointing at the install (scripts/jwt-peers.sh).
import http from 'node:http';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(process.env.OIDC_PROVIDER_DIR + '/');
const { default: Provider } = await import(require.resolve('oidc-provider'));

const jwk = (type, opts, kid) => ({ ...crypto.generateKeyPairSync(type, opts).privateKey.export({ format: 'jwk' }), kid });
const keys = [jwk('rsa', { modulusLength: 2048 }, 'rsa-1'), jwk('ec', { namedCurve: 'P-256' }, 'ec-1')];

const server = http.createServer();
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const issuer = `http://127.0.0.1:${server.address().port}`;
const secret = crypto.randomBytes(32).toString('hex');

const provider = new Provider(issuer, {
  jwks: { keys },
  clients: [{
    client_id: 'weft-test', client_secret: secret, grant_types: ['client_credentials'],
    redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_post',
  }],
  scopes: ['read'],
  ttl: { ClientCredentials: 600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:weft:api',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'read',
        audience: 'urn:weft:api',
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: resource.endsWith(':es256') ? 'ES256' : 'RS256' } },
      }),
    },
  },
});
server.on('request', provider.callback());

async function token(resource) {
  const body = new URLSearchParams({ grant_type: 'client_credentials', client_id: 'weft-test', client_secret: secret, scope: 'read', resource });
  const r = await fetch(`${issuer}/token`, { method: 'POST', body });
  const j = await r.json();
  if (!j.access_token) throw new Error(`token endpoint: ${r.status} ${JSON.stringify(j)}`);
  return j.access_token;
}

const tokens = { RS256: await token('urn:weft:api'), ES256: await token('urn:weft:api:es256') };
process.stdout.write(JSON.stringify({ issuer, tokens }) + '\n');
