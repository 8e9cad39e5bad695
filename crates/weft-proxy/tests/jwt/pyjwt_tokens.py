"""Tokens from a second JWT implementation (PyJWT + cryptography) for the request authentication
test (crates/weft-proxy/tests/jwt_pyjwt.rs). Prints one JSON document:
  jwks      the public keys (one per algorithm, kid = the algorithm), plus an HMAC key `HS256`
  valid     {alg: token} for every algorithm weft accepts
  invalid   {case: token} each of which must be refused
Issuer https://issuer.test, audience api, subject alice."""
import base64, hashlib, hmac, json, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISS, AUD = "https://issuer.test", "api"
now = int(time.time())
claims = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 600, "groups": ["dev", "ops"]}

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
keys = {
    "RS256": rsa_key, "RS384": rsa_key, "RS512": rsa_key, "PS256": rsa_key, "PS384": rsa_key, "PS512": rsa_key,
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}
hmac_secret = b"weft-test-hmac-secret-of-32-bytes!!"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def public_jwk(alg, key):
    algo = jwt.get_algorithm_by_name(alg)
    d = json.loads(algo.to_jwk(key.public_key()))
    d.update(kid=alg, alg=alg, use="sig")
    return d


jwks = {"keys": [public_jwk(a, k) for a, k in keys.items()]}
jwks["keys"].append({"kty": "oct", "kid": "HS256", "alg": "HS256", "k": b64(hmac_secret)})

valid = {a: jwt.encode(claims, k, algorithm=a, headers={"kid": a}) for a, k in keys.items()}
valid["HS256"] = jwt.encode(claims, hmac_secret, algorithm="HS256", headers={"kid": "HS256"})


def signed(alg, over):
    return jwt.encode({**claims, **over}, keys[alg], algorithm=alg, headers={"kid": alg})


def unsigned_parts(header, body):
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())


# HS256 keyed with the RSA public key (PEM), the algorithm confusion attack: PyJWT refuses to
# make it, so it is made by hand.
pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
confused = unsigned_parts({"alg": "HS256", "typ": "JWT", "kid": "RS256"}, claims)
confused += "." + b64(hmac.new(pem, confused.encode(), hashlib.sha256).digest())

rs = valid["RS256"]
head, body, sig = rs.split(".")
bad_sig = head + "." + body + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

invalid = {
    "bad-signature": bad_sig,
    "tampered-claims": head + "." + b64(json.dumps({**claims, "sub": "admin"}).encode()) + "." + sig,
    "wrong-issuer": signed("ES256", {"iss": "https://evil.test"}),
    "wrong-audience": signed("ES256", {"aud": "other"}),
    "expired": signed("RS256", {"exp": now - 3600, "iat": now - 7200}),
    "not-yet-valid": signed("EdDSA", {"nbf": now + 3600}),
    "alg-none": jwt.encode(claims, None, algorithm="none"),
    "hs256-with-rsa-public-key": confused,
    "unknown-kid": jwt.encode(claims, other, algorithm="RS256", headers={"kid": "ghost"}),
    "other-key-same-kid": jwt.encode(claims, other, algorithm="RS256", headers={"kid": "RS256"}),
}
json.dump({"issuer": ISS, "audience": AUD, "jwks": jwks, "valid": valid, "invalid": invalid}, sys.stdout)
