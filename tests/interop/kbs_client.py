#!/usr/bin/env python3
"""Independent CoCo KBS protocol 0.4.0 client (interop peer for Cloister).

Written only from the protocol notes (/work/shared/reference/kbs-protocol.md, cited below
as "notes §N"); it deliberately shares no code with the Rust implementation.

Besides the CLI, this module is the home of the protocol primitives that kbs_server.py
and vectors.py import: RFC 8785 JCS, the runtime-data digest, the JWK helpers, the
RFC 7518 Concat KDF, RFC 3394 AES key wrap and the canonical JWE `protected` header.

Exit codes: 0 success (or --expect-status matched), 1 --expect-status mismatch,
2 HTTP error, 3 protocol/crypto failure (bad JWE, non-canonical header, ...).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import secrets
import shlex
import ssl
import subprocess
import sys
import urllib.parse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PROTOCOL_VERSION = "0.4.0"  # notes §3.1: server requires exactly 0.4.0
API_PREFIX = "/kbs/v0"  # notes §1
COOKIE_NAME = "kbs-session-id"  # notes §5

EC_ALG = "ECDH-ES+A256KW"  # notes §6, CoCo guest default
RSA_ALG = "RSA-OAEP-256"  # notes §6, guest default for RSA keys
ENC = "A256GCM"  # notes §6: content encryption is always A256GCM

CURVES = {
    # crv name -> (cryptography curve, coordinate length in bytes); notes §6: P-521 has 66-byte coordinates
    "P-256": (ec.SECP256R1(), 32),
    "P-521": (ec.SECP521R1(), 66),
}


class ProtocolError(Exception):
    """A non-HTTP failure: malformed response, bad JWE, non-canonical header."""


class HttpError(Exception):
    """A step of the handshake returned a non-2xx status."""

    def __init__(self, step: str, status: int, body: bytes):
        super().__init__(f"{step}: HTTP {status}")
        self.step = step
        self.status = status
        self.body = body


# --------------------------------------------------------------------------------------------
# Encoding helpers


def b64url(data: bytes) -> str:
    """base64url without padding (notes §2: all JWE members are base64url, no padding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError(f"expected a base64url string, got {type(text).__name__}")
    if "=" in text:
        raise ProtocolError("base64url value carries padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_to_bytes(value: int, length: int | None = None) -> bytes:
    if length is None:
        length = max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


# --------------------------------------------------------------------------------------------
# RFC 8785 JSON Canonicalization Scheme (notes §4)

_JCS_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _jcs_string(s: str) -> str:
    # RFC 8785 §3.2.2.2: ECMAScript JSON.stringify string rules: the two-character escapes above,
    # other control characters as lowercase \u00xx, everything else (including non-ASCII) verbatim.
    out = ['"']
    for ch in s:
        if ch in _JCS_SHORT_ESCAPES:
            out.append(_JCS_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError("JCS: lone surrogate in string")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(value) -> str:
    """Serialise `value` per RFC 8785. Numbers: integers only (enough for this protocol)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        # RFC 8785 uses IEEE-754 doubles; integers beyond 2^53 would not round-trip.
        if abs(value) > 2**53:
            raise ValueError("JCS: integer outside the IEEE-754 exact range")
        return str(value)
    if isinstance(value, float):
        raise ValueError("JCS: non-integer numbers are not supported by this implementation")
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise ValueError("JCS: object keys must be strings")
        # RFC 8785 §3.2.3: sort by UTF-16 code units; big-endian UTF-16 bytes compare identically.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(_jcs_string(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"JCS: unsupported type {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Runtime-data binding (notes §4)

HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def runtime_data_material(nonce: str, tee_pubkey: dict, additional_evidence: str = "") -> bytes:
    # notes §4: the "additional-evidence" key is part of the hashed object ("" without devices).
    return jcs(
        {"additional-evidence": additional_evidence, "nonce": nonce, "tee-pubkey": tee_pubkey}
    ).encode("utf-8")


def runtime_data_digest(
    nonce: str, tee_pubkey: dict, additional_evidence: str = "", hash_alg: str = "sha384"
) -> bytes:
    # notes §4: H = SHA-384 for every TEE except IBM SE (SHA-512).
    return HASHES[hash_alg](runtime_data_material(nonce, tee_pubkey, additional_evidence)).digest()


def report_data_64(digest: bytes) -> bytes:
    # notes §4: SNP/TDX report data = digest zero-padded to 64 bytes (longer values truncated).
    return digest[:64].ljust(64, b"\0")


# --------------------------------------------------------------------------------------------
# Keys and JWKs (notes §2 tee-pubkey shapes)


def generate_tee_key(kind: str):
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)  # notes §6: 2048 bit
    raise ValueError(f"unknown key type {kind}")


def curve_name(curve) -> str:
    for name, (c, _) in CURVES.items():
        if c.name == curve.name:
            return name
    raise ProtocolError(f"unsupported curve {curve.name}")


def ec_public_members(public_key) -> dict:
    """crv/kty/x/y of an EC public key, coordinates padded to the curve size."""
    crv = curve_name(public_key.curve)
    size = CURVES[crv][1]
    nums = public_key.public_numbers()
    return {
        "crv": crv,
        "kty": "EC",
        "x": b64url(int_to_bytes(nums.x, size)),
        "y": b64url(int_to_bytes(nums.y, size)),
    }


def tee_pubkey_jwk(private_key) -> dict:
    """The `tee-pubkey` object sent in runtime-data (notes §2, §3.2)."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        m = ec_public_members(private_key.public_key())
        return {"kty": "EC", "crv": m["crv"], "alg": EC_ALG, "x": m["x"], "y": m["y"]}
    if isinstance(private_key, rsa.RSAPrivateKey):
        nums = private_key.public_key().public_numbers()
        return {"kty": "RSA", "alg": RSA_ALG, "n": b64url(int_to_bytes(nums.n)), "e": b64url(int_to_bytes(nums.e))}
    raise ValueError("unsupported key")


def jwk_to_public_key(jwk: dict):
    """Public key from a tee-pubkey / epk JWK (EC or RSA)."""
    kty = jwk.get("kty")
    if kty == "EC":
        crv = jwk.get("crv")
        if crv not in CURVES:
            raise ProtocolError(f"unsupported EC curve {crv!r}")
        curve, size = CURVES[crv]
        x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
        if len(x) != size or len(y) != size:
            raise ProtocolError(f"{crv} coordinates must be {size} bytes")
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        ).public_key()
    if kty == "RSA":
        n, e = b64url_decode(jwk["n"]), b64url_decode(jwk["e"])
        return rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    raise ProtocolError(f"unsupported kty {kty!r}")


# --------------------------------------------------------------------------------------------
# RFC 7518 §4.6.2 Concat KDF (single-step KDF of NIST SP 800-56A, SHA-256)


def _len_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def concat_kdf(
    z: bytes, algorithm_id: str, keydatalen_bits: int, apu: bytes = b"", apv: bytes = b""
) -> bytes:
    # OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo (keydatalen, 32-bit BE);
    # each of the first three is a 32-bit big-endian length followed by the data (RFC 7518 §4.6.2).
    # notes §6: AlgorithmID "ECDH-ES+A256KW", empty PartyU/PartyV, 256-bit output.
    other_info = (
        _len_prefixed(algorithm_id.encode("ascii"))
        + _len_prefixed(apu)
        + _len_prefixed(apv)
        + keydatalen_bits.to_bytes(4, "big")
    )
    out = b""
    counter = 1
    while len(out) * 8 < keydatalen_bits:
        out += hashlib.sha256(counter.to_bytes(4, "big") + z + other_info).digest()
        counter += 1
    return out[: keydatalen_bits // 8]


# --------------------------------------------------------------------------------------------
# RFC 3394 AES Key Wrap (index-based form, §2.2.1 / §2.2.2)

_KW_IV = bytes.fromhex("A6A6A6A6A6A6A6A6")


def _aes_ecb(kek: bytes, encrypt: bool):
    cipher = Cipher(algorithms.AES(kek), modes.ECB())
    return cipher.encryptor() if encrypt else cipher.decryptor()


def aes_key_wrap(kek: bytes, key_data: bytes) -> bytes:
    if len(key_data) % 8 or len(key_data) < 16:
        raise ValueError("AES-KW: key data must be a multiple of 64 bits, at least 128 bits")
    n = len(key_data) // 8
    a = _KW_IV
    r = [key_data[i * 8 : (i + 1) * 8] for i in range(n)]
    enc = _aes_ecb(kek, True)
    for j in range(6):
        for i in range(n):
            b = enc.update(a + r[i])
            t = (n * j + i + 1).to_bytes(8, "big")
            a = bytes(x ^ y for x, y in zip(b[:8], t))
            r[i] = b[8:]
    return a + b"".join(r)


def aes_key_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    if len(wrapped) % 8 or len(wrapped) < 24:
        raise ProtocolError("AES-KW: wrapped key has an invalid length")
    n = len(wrapped) // 8 - 1
    a = wrapped[:8]
    r = [wrapped[(i + 1) * 8 : (i + 2) * 8] for i in range(n)]
    dec = _aes_ecb(kek, False)
    for j in range(5, -1, -1):
        for i in range(n - 1, -1, -1):
            t = (n * j + i + 1).to_bytes(8, "big")
            b = dec.update(bytes(x ^ y for x, y in zip(a, t)) + r[i])
            a = b[:8]
            r[i] = b[8:]
    if a != _KW_IV:
        raise ProtocolError("AES-KW: integrity check failed (wrong key or corrupted encrypted_key)")
    return b"".join(r)


# --------------------------------------------------------------------------------------------
# JWE profile (notes §6)


def _sorted_deep(value):
    if isinstance(value, dict):
        return {k: _sorted_deep(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_deep(v) for v in value]
    return value


def canonical_protected_json(header: dict) -> str:
    """The exact serialisation CoCo guests re-create before computing the AAD (notes §6):
    {"alg":…,"enc":…,<remaining members sorted by key>}, nested objects (epk) sorted too,
    compact (no whitespace)."""
    ordered = {}
    for k in ("alg", "enc"):
        if k in header:
            ordered[k] = header[k]
    for k in sorted(header):
        if k not in ("alg", "enc"):
            ordered[k] = _sorted_deep(header[k])
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)


def ecdh_kek(private_key, peer_public_key, keydatalen_bits: int = 256) -> bytes:
    z = private_key.exchange(ec.ECDH(), peer_public_key)
    return concat_kdf(z, EC_ALG, keydatalen_bits)


RSA_OAEP_256 = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def decrypt_response(private_key, response: dict) -> bytes:
    """Decrypt a flattened-JSON JWE `Response` (notes §2, §6) with our TEE private key."""
    for member in ("protected", "encrypted_key", "iv", "ciphertext", "tag"):
        if not isinstance(response.get(member), str):
            raise ProtocolError(f"JWE response lacks string member {member!r}")
    protected_b64 = response["protected"]
    header_bytes = b64url_decode(protected_b64)
    try:
        header = json.loads(header_bytes)
    except ValueError as e:
        raise ProtocolError(f"protected header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("protected header is not a JSON object")

    # notes §6 "Header order matters": CoCo guests rebuild the header as alg, enc, rest sorted
    # and use that as AAD. Insist the server sent exactly that form.
    canonical = canonical_protected_json(header)
    if header_bytes.decode("utf-8") != canonical:
        raise ProtocolError(
            "protected header is NOT in the canonical order CoCo guests expect (notes §6)\n"
            f"  received : {header_bytes.decode('utf-8', 'replace')}\n"
            f"  canonical: {canonical}"
        )
    if header.get("enc") != ENC:
        raise ProtocolError(f"unexpected enc {header.get('enc')!r}, notes §6 requires A256GCM")
    if "aad" in response:
        # notes §2: trustee never sends it; the CoCo client would not expect it.
        raise ProtocolError("JWE response carries an unexpected 'aad' member")

    alg = header.get("alg")
    encrypted_key = b64url_decode(response["encrypted_key"])
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if alg != EC_ALG:
            raise ProtocolError(f"alg {alg!r} does not match our EC key ({EC_ALG})")
        epk = header.get("epk")
        if not isinstance(epk, dict) or epk.get("kty") != "EC":
            raise ProtocolError("ECDH-ES header lacks an EC epk")
        if epk.get("crv") != curve_name(private_key.curve):
            raise ProtocolError(f"epk curve {epk.get('crv')!r} differs from our key's curve")
        kek = ecdh_kek(private_key, jwk_to_public_key(epk))
        if len(encrypted_key) != 40:
            raise ProtocolError(f"encrypted_key is {len(encrypted_key)} bytes, expected 40 (AES-KW of 32)")
        cek = aes_key_unwrap(kek, encrypted_key)
    elif isinstance(private_key, rsa.RSAPrivateKey):
        if alg != RSA_ALG:
            raise ProtocolError(f"alg {alg!r} does not match our RSA key ({RSA_ALG})")
        try:
            cek = private_key.decrypt(encrypted_key, RSA_OAEP_256)
        except ValueError:
            raise ProtocolError("RSA-OAEP-256 decryption of encrypted_key failed") from None
    else:
        raise ProtocolError("unsupported private key")
    if len(cek) != 32:
        raise ProtocolError(f"CEK is {len(cek)} bytes, expected 32 for A256GCM")

    iv, tag = b64url_decode(response["iv"]), b64url_decode(response["tag"])
    if len(iv) != 12 or len(tag) != 16:
        raise ProtocolError(f"iv/tag lengths {len(iv)}/{len(tag)}, expected 12/16 (notes §6)")
    ciphertext = b64url_decode(response["ciphertext"])
    # RFC 7516 §5.1 / notes §6: AAD = ASCII bytes of the protected base64url string.
    try:
        return AESGCM(cek).decrypt(iv, ciphertext + tag, protected_b64.encode("ascii"))
    except Exception:
        raise ProtocolError("A256GCM authentication failed") from None


def encrypt_response(tee_pubkey: dict, plaintext: bytes) -> dict:
    """Server side of notes §6: JWE-wrap `plaintext` to the token's tee-pubkey."""
    pub = jwk_to_public_key(tee_pubkey)
    alg = tee_pubkey.get("alg")
    cek = AESGCM.generate_key(bit_length=256)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if alg != EC_ALG:
            raise ProtocolError(f"EC tee-pubkey alg {alg!r} unsupported (want {EC_ALG})")
        eph = ec.generate_private_key(pub.curve)
        header = {"alg": EC_ALG, "enc": ENC, "epk": ec_public_members(eph.public_key())}
        encrypted_key = aes_key_wrap(ecdh_kek(eph, pub), cek)
    else:
        if alg != RSA_ALG:
            # notes §6: plain RSA-OAEP (SHA-1) is not accepted; RSA1_5 is deprecated (not offered here).
            raise ProtocolError(f"RSA tee-pubkey alg {alg!r} unsupported (want {RSA_ALG})")
        header = {"alg": RSA_ALG, "enc": ENC}
        encrypted_key = pub.encrypt(cek, RSA_OAEP_256)
    protected = b64url(canonical_protected_json(header).encode("utf-8"))
    iv = secrets.token_bytes(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {
        "protected": protected,
        "encrypted_key": b64url(encrypted_key),
        "iv": b64url(iv),
        "ciphertext": b64url(sealed[:-16]),
        "tag": b64url(sealed[-16:]),
    }


# --------------------------------------------------------------------------------------------
# HTTP


class KbsHttp:
    """Tiny HTTP helper that remembers the kbs-session-id cookie (notes §5)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise SystemExit(f"unsupported URL scheme {u.scheme!r}")
        self.scheme, self.netloc, self.base_path = u.scheme, u.netloc, u.path.rstrip("/")
        self.timeout = timeout
        self.cookie: str | None = None

    def request(self, step, method, path, body=None, bearer=None, send_cookie=True):
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.netloc, timeout=self.timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.netloc, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if send_cookie and self.cookie:
            headers["Cookie"] = f"{COOKIE_NAME}={self.cookie}"
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            conn.request(method, self.base_path + path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            for name, value in resp.getheaders():
                if name.lower() == "set-cookie":
                    first = value.split(";", 1)[0].strip()
                    if first.startswith(COOKIE_NAME + "="):
                        self.cookie = first[len(COOKIE_NAME) + 1 :]
        finally:
            conn.close()
        if not 200 <= resp.status < 300:
            raise HttpError(step, resp.status, payload)
        return payload


def decode_jwt_claims(token: str) -> dict:
    parts = token.split(".")
    if len(parts) != 3:
        raise ProtocolError("attestation token is not a compact JWS")
    return json.loads(b64url_decode(parts[1]))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The RCAR handshake (notes §3)


def run(args) -> bytes:
    kbs = KbsHttp(args.url)

    # 3.1 Request -> Challenge
    req = {
        "version": PROTOCOL_VERSION,
        "tee": args.tee,
        "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]},
    }
    challenge = json.loads(kbs.request("auth", "POST", API_PREFIX + "/auth", req))
    nonce = challenge.get("nonce")
    if not isinstance(nonce, str):
        raise ProtocolError(f"challenge lacks a nonce: {challenge}")
    if kbs.cookie is None:
        raise ProtocolError(f"/auth did not set the {COOKIE_NAME} cookie")
    log(f"[client] session {kbs.cookie}, nonce {nonce}")

    # notes §3.1: extra-params is "" except for SE, where it selects the hash algorithm.
    hash_alg = "sha384"
    extra = challenge.get("extra-params")
    if isinstance(extra, dict) and "selected-hash-algorithm" in extra:
        hash_alg = extra["selected-hash-algorithm"]
        if hash_alg not in HASHES:
            raise ProtocolError(f"server selected unsupported hash {hash_alg!r}")

    if args.tamper_nonce:
        # Hidden test switch: echo a different nonce (server must reject, notes §3.2 step 2).
        nonce = b64url(b"\0" * 32) if nonce != b64url(b"\0" * 32) else b64url(b"\1" * 32)
        log(f"[client] TAMPERING: sending nonce {nonce}")

    key = generate_tee_key(args.key)
    tee_pubkey = tee_pubkey_jwk(key)
    digest = runtime_data_digest(nonce, tee_pubkey, "", hash_alg)
    log(f"[client] runtime-data digest ({hash_alg}) {digest.hex()}")

    if args.evidence_cmd:
        # Plug-in evidence generator: gets the 64-byte report data (notes §4 SNP/TDX placement).
        cmd = shlex.split(args.evidence_cmd) + [report_data_64(digest).hex()]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            raise ProtocolError(
                f"evidence command failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
            )
        primary = json.loads(proc.stdout)
    elif args.tee == "sample":
        # notes §2 "The sample TEE": standard base64 of the digest, no zero padding.
        primary = {"svn": "1", "report_data": base64.b64encode(digest).decode("ascii")}
    else:
        raise SystemExit(f"--tee {args.tee} needs --evidence-cmd")

    attestation = {
        "init-data": None,
        "runtime-data": {"nonce": nonce, "tee-pubkey": tee_pubkey},
        # notes §2: additional_evidence is a *string*, "" when there are no devices.
        "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""},
    }
    token = json.loads(kbs.request("attest", "POST", API_PREFIX + "/attest", attestation)).get("token")
    if not isinstance(token, str):
        raise ProtocolError("/attest reply lacks a token")
    claims = decode_jwt_claims(token)
    log("[client] token claims:\n" + json.dumps(claims, indent=2, ensure_ascii=False))

    # 3.3 Resource GET: cookie or Bearer.
    path = f"{API_PREFIX}/resource/{args.resource.strip('/')}"
    if args.bearer:
        body = kbs.request("resource", "GET", path, bearer=token, send_cookie=False)
    else:
        body = kbs.request("resource", "GET", path)
    try:
        response = json.loads(body)
    except ValueError:
        raise ProtocolError("resource response is not JSON") from None
    return decrypt_response(key, response)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="CoCo KBS protocol 0.4.0 test client (interop peer)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="KBS base URL")
    p.add_argument("--resource", required=True, help="repo/type/tag")
    p.add_argument("--key", choices=["ec-p256", "ec-p521", "rsa"], default="ec-p256", help="TEE key type")
    p.add_argument("--evidence-cmd", help="command run as `CMD <hex of 64-byte report data>`; stdout JSON = primary_evidence")
    p.add_argument("--tee", default="sample", help="tee value sent in /auth (default: sample)")
    p.add_argument("--bearer", action="store_true", help="fetch the resource with Authorization: Bearer instead of the cookie")
    p.add_argument("--expect-status", type=int, help="exit 0 iff the resource GET (or first failing step) returned this status")
    p.add_argument("--out", help="write the plaintext here instead of stdout")
    p.add_argument("--tamper-nonce", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    try:
        plaintext = run(args)
        status = 200
    except HttpError as e:
        log(f"[client] {e.step} failed: HTTP {e.status}")
        log(f"[client] ErrorInformation: {e.body.decode('utf-8', 'replace')}")
        try:
            info = json.loads(e.body)
            if not (isinstance(info, dict) and "type" in info and "detail" in info):
                log("[client] warning: error body is not an ErrorInformation {type, detail}")
        except ValueError:
            log("[client] warning: error body is not JSON")
        if args.expect_status is None:
            return 2
        ok = e.status == args.expect_status
        log(f"[client] expected status {args.expect_status}: {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    except (ProtocolError, ValueError, KeyError, OSError) as e:
        log(f"[client] PROTOCOL FAILURE: {type(e).__name__}: {e}")
        return 3

    if args.expect_status is not None and args.expect_status != status:
        log(f"[client] expected status {args.expect_status} but the resource GET succeeded: MISMATCH")
        return 1
    if args.out:
        with open(args.out, "wb") as f:
            f.write(plaintext)
    else:
        sys.stdout.buffer.write(plaintext)
        sys.stdout.buffer.flush()
    log(f"[client] OK: {len(plaintext)} bytes decrypted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
