#!/usr/bin/env python3
"""Known-answer self-checks for the primitives in kbs_client.py.  Run: python3 vectors.py

1. Runtime-data binding worked example (protocol notes §4).
2. RFC 7518 Appendix C Concat KDF example (ECDH-ES, A128GCM, "Alice"/"Bob").
3. RFC 3394 §4.6 AES key wrap: 256 bits of key data with a 256-bit KEK.
Plus round-trips of the JWE profile (notes §6) for P-256, P-521 and RSA-OAEP-256.
Exits non-zero on any mismatch.
"""

import base64
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbs_client as k  # noqa: E402

from cryptography.hazmat.primitives import keywrap  # noqa: E402  (cross-check only)
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

failures = 0


def check(name, got, want):
    global failures
    if got == want:
        print(f"ok    {name}")
    else:
        failures += 1
        print(f"FAIL  {name}\n      got : {got!r}\n      want: {want!r}")


# --- 1. notes §4 worked example -------------------------------------------------------------

NONCE = "9WkKnSK2mC9kq1d8g1Oqsm9O0b3c3o9m3R2dIuH1mZc="
TEE_PUBKEY = {  # field order as sent in notes §3.2; JCS must sort it
    "kty": "EC",
    "crv": "P-256",
    "alg": "ECDH-ES+A256KW",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
check(
    "notes §4 JCS material",
    k.runtime_data_material(NONCE, TEE_PUBKEY).decode(),
    '{"additional-evidence":"","nonce":"9WkKnSK2mC9kq1d8g1Oqsm9O0b3c3o9m3R2dIuH1mZc=","tee-pubkey":'
    '{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
    '"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}',
)
digest = k.runtime_data_digest(NONCE, TEE_PUBKEY)
check(
    "notes §4 SHA-384",
    digest.hex(),
    "fa810191d3d4ecd8a662c2bcf1766296a26245cbc38c3da0e2720c1e00ddfdd927b0714770f904c2ac6cc3a3b98b150a",
)
check(
    "notes §4 sample report_data",
    base64.b64encode(digest).decode(),
    "+oEBkdPU7NimYsK88XZilqJiRcvDjD2g4nIMHgDd/dknsHFHcPkEwqxsw6O5ixUK",
)
check("notes §4 SNP/TDX 64-byte report data", k.report_data_64(digest), digest + b"\0" * 16)
# The notes also give the prefix/suffix of the *wrong* {nonce, tee-pubkey}-only hash.
wrong = hashlib.sha384(k.jcs({"nonce": NONCE, "tee-pubkey": TEE_PUBKEY}).encode()).hexdigest()
check("notes §4 wrong-hash comparison value", (wrong[:8], wrong[-6:]), ("c36419e6", "d219c7"))

# JCS details (RFC 8785 §3.2.2.2 string escaping, §3.2.3 UTF-16 key order)
check("JCS escapes", k.jcs({"a": "\"\\\b\f\n\r\t\x01\x1f\u00e9\u20ac"}),
      '{"a":"\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u00e9\u20ac"}')
check("JCS UTF-16 key order", k.jcs({"\U0001F600": 1, "\ufb01": 2, "a": [True, None, -3]}),
      '{"a":[true,null,-3],"\U0001F600":1,"\ufb01":2}')

# --- 2. RFC 7518 Appendix C ------------------------------------------------------------------

Z = bytes([158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156,
           251, 49, 110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196])


def _ec_priv(d, x, y):
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(k.b64url_decode(x), "big"),
                                        int.from_bytes(k.b64url_decode(y), "big"), ec.SECP256R1())
    return ec.EllipticCurvePrivateNumbers(int.from_bytes(k.b64url_decode(d), "big"), pub).private_key()


alice = _ec_priv("0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo",
                 "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
                 "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps")
bob = _ec_priv("VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw",
               "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
               "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck")
check("RFC 7518 App. C ECDH Z", alice.exchange(ec.ECDH(), bob.public_key()), Z)
check("RFC 7518 App. C Concat KDF",
      k.b64url(k.concat_kdf(Z, "A128GCM", 128, b"Alice", b"Bob")), "VqqN6vgjbSBcIijNcacQGg")

# --- 3. RFC 3394 §4.6 -----------------------------------------------------------------------

KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
KEY_DATA = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
WRAPPED = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
check("RFC 3394 §4.6 wrap", k.aes_key_wrap(KEK, KEY_DATA), WRAPPED)
check("RFC 3394 §4.6 unwrap", k.aes_key_unwrap(KEK, WRAPPED), KEY_DATA)
check("AES-KW matches cryptography.keywrap", k.aes_key_wrap(KEK, KEY_DATA), keywrap.aes_key_wrap(KEK, KEY_DATA))
try:
    k.aes_key_unwrap(KEK, WRAPPED[:-1] + bytes([WRAPPED[-1] ^ 1]))
    check("AES-KW integrity failure detected", False, True)
except k.ProtocolError:
    check("AES-KW integrity failure detected", True, True)

# --- JWE profile round trips (notes §6) ---------------------------------------------------------

for kind, alg in (("ec-p256", "ECDH-ES+A256KW"), ("ec-p521", "ECDH-ES+A256KW"), ("rsa", "RSA-OAEP-256")):
    priv = k.generate_tee_key(kind)
    jwe = k.encrypt_response(k.tee_pubkey_jwk(priv), b"secret \x00\xff payload")
    header = k.b64url_decode(jwe["protected"]).decode()
    head = '{"alg":"%s","enc":"A256GCM"' % alg
    check(f"JWE {kind}: header starts canonically", header.startswith(head), True)
    if kind.startswith("ec"):
        check(f"JWE {kind}: epk member order", list(json.loads(header)["epk"]), ["crv", "kty", "x", "y"])
        check(f"JWE {kind}: encrypted_key 40 bytes", len(k.b64url_decode(jwe["encrypted_key"])), 40)
    check(f"JWE {kind}: round trip", k.decrypt_response(priv, jwe), b"secret \x00\xff payload")

# A non-canonical header (enc before alg) must be rejected by the client.
priv = k.generate_tee_key("rsa")
jwe = k.encrypt_response(k.tee_pubkey_jwk(priv), b"x")
jwe["protected"] = k.b64url(b'{"enc":"A256GCM","alg":"RSA-OAEP-256"}')
try:
    k.decrypt_response(priv, jwe)
    check("non-canonical protected header rejected", False, True)
except k.ProtocolError:
    check("non-canonical protected header rejected", True, True)

print(f"\n{'ALL OK' if not failures else f'{failures} FAILURE(S)'}")
sys.exit(1 if failures else 0)
