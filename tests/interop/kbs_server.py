#!/usr/bin/env python3
"""Minimal independent KBS (interop peer for Cloister).

Written only from the protocol notes (/work/shared/reference/kbs-protocol.md, cited as
"notes §N"). Supports the `sample` TEE only, serves resources from a directory and issues
ES256 EAR tokens signed with an ephemeral key.

    kbs_server.py --port P --resources DIR [--allow-sample] [--missing-status 401|404]

DIR/<repo>/<type>/<tag> is the resource file. Without --allow-sample the resource policy
behaves like trustee's `default` policy and denies tokens whose claims come from the sample
TEE (notes §8), which with this server means every resource request is denied.
Prints "listening on PORT" once ready.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbs_client as proto  # noqa: E402  (shared protocol primitives, checked by vectors.py)

API_PREFIX = "/kbs/v0"
ERROR_PREFIX = "https://github.com/confidential-containers/kbs/errors/"  # notes §9
SESSION_MINUTES = 5  # notes §3.1 / §12: default session lifetime
TOKEN_MINUTES = 5  # notes §7: exp = iat + duration_min (default 5)
BODY_LIMIT = 2 * 1024 * 1024  # notes §12: request body limit 2 MB
# notes §1: each segment starts with [A-Za-z0-9_-] and continues with those or '.'.
SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
# notes §2: known tee values (kbs-types 0.18).
TEE_VALUES = {
    "snp", "tdx", "se", "sgx", "az-snp-vtpm", "az-tdx-vtpm", "cca", "csv", "hygondcu",
    "nvidia", "nvidia-dpu", "tpm", "sample", "sampledevice",
}


class KbsError(Exception):
    """Maps to an ErrorInformation body (notes §9)."""

    def __init__(self, variant: str, detail: str, status: int = 401):
        # notes §9: 404 only for InvalidRequestPath / PluginNotFound, everything else 401.
        super().__init__(detail)
        self.variant, self.detail, self.status = variant, detail, status


# --------------------------------------------------------------------------------------------
# Token signer (notes §7: ES256 EAR JWT, public key in the header jwk)


class TokenSigner:
    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        m = proto.ec_public_members(self.key.public_key())
        # No x5c: we have no certificate chain (notes §7 "x5c is present when ...").
        self.jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "x": m["x"], "y": m["y"]}

    def sign(self, claims: dict) -> str:
        header = {"alg": "ES256", "typ": "JWT", "jwk": self.jwk}
        signing_input = (
            proto.b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + proto.b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS ES256 signature = r || s, 32 bytes each (RFC 7518 §3.4).
        return signing_input + "." + proto.b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def verify(self, token: str) -> dict:
        """Verify with our own key only (we are our own trust anchor) and check exp."""
        try:
            h64, c64, s64 = token.split(".")
            header = json.loads(proto.b64url_decode(h64))
            claims = json.loads(proto.b64url_decode(c64))
            sig = proto.b64url_decode(s64)
        except (ValueError, proto.ProtocolError) as e:
            raise KbsError("TokenVerifierError", f"malformed token: {e}") from None
        if header.get("alg") != "ES256" or len(sig) != 64:
            raise KbsError("TokenVerifierError", "token is not ES256")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            self.key.public_key().verify(der, f"{h64}.{c64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise KbsError("TokenVerifierError", "token signature is not ours") from None
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            raise KbsError("TokenVerifierError", "token expired")
        return claims


# --------------------------------------------------------------------------------------------
# Sessions (notes §5)


class Sessions:
    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[str, dict] = {}

    def create(self, request: dict, nonce: str) -> tuple[str, float]:
        sid = uuid.uuid4().hex  # notes §3.1: UUIDv4 as 32 hex digits, no dashes
        expires = time.time() + SESSION_MINUTES * 60
        with self._lock:
            # Cheap sweep of expired sessions (trustee sweeps every 60 s, notes §5).
            now = time.time()
            for k in [k for k, v in self._items.items() if v["expires"] < now]:
                del self._items[k]
            self._items[sid] = {"request": request, "nonce": nonce, "expires": expires, "token": None}
        return sid, expires

    def get(self, sid: str | None) -> dict | None:
        if not sid:
            return None
        with self._lock:
            s = self._items.get(sid)
            if s is None or s["expires"] < time.time():
                return None
            return s

    def set_token(self, sid: str, token: str) -> None:
        with self._lock:
            if sid in self._items:
                self._items[sid]["token"] = token


# --------------------------------------------------------------------------------------------
# Sample TEE verifier and EAR claims (notes §2 "The sample TEE", §7)


def verify_sample(primary, expected_digest: bytes) -> dict:
    if not isinstance(primary, dict) or not isinstance(primary.get("report_data"), str):
        raise KbsError("AttestationError", "sample evidence lacks report_data")
    try:
        got = base64.b64decode(primary["report_data"], validate=True)
    except ValueError:
        raise KbsError("AttestationError", "sample report_data is not standard base64") from None
    if got != expected_digest:
        raise KbsError("AttestationError", "sample report_data does not match the runtime-data digest")
    # notes §2: fixed claims.
    return {
        "svn": primary.get("svn", "1"),
        "launch_digest": "abcde",
        "platform_version": {"major": 1, "minor": 4},
        "debug": False,
    }


def ear_claims(tee_claims: dict, digest: bytes, runtime_data: dict) -> dict:
    now = int(time.time())
    return {
        "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
        "iat": now,
        "exp": now + TOKEN_MINUTES * 60,
        "iss": "CoCo-Attestation-Service",
        # notes §7: ear crate 0.5 dotted names, as trustee emits them.
        "ear.verifier-id": {"developer": "https://confidentialcontainers.org", "build": "cloister-interop-pyserver 0.1.0"},
        "submods": {
            "cpu0": {
                "ear.status": "affirming",
                "ear.trustworthiness-vector": {
                    "instance-identity": 0, "configuration": 2, "executables": 3, "file-system": 0,
                    "hardware": 2, "runtime-opaque": 0, "storage-opaque": 0, "sourced-data": 0,
                },
                "ear.appraisal-policy-id": "default",
                "ear.veraison.annotated-evidence": {
                    "sample": tee_claims,
                    "report_data": base64.b64encode(digest).decode("ascii"),
                    "runtime_data_claims": {
                        "nonce": runtime_data["nonce"],
                        "tee-pubkey": runtime_data["tee-pubkey"],
                    },
                },
            }
        },
    }


def token_tee_pubkey(claims: dict) -> dict:
    # notes §7: lookup order (no extra_teekey_paths configured here); first hit wins.
    paths = [
        ["tdx", "attester_runtime_data", "tee-pubkey"],
        ["tdx", "attester_user_data", "tee-pubkey"],
        ["customized_claims", "runtime_data", "tee-pubkey"],
        ["submods", "cpu0", "ear.veraison.annotated-evidence", "runtime_data_claims", "tee-pubkey"],
        ["tee-pubkey"],
    ]
    for path in paths:
        node = claims
        for seg in path:
            node = node.get(seg) if isinstance(node, dict) else None
        if isinstance(node, dict):
            return node
    raise KbsError("TokenVerifierError", "no tee-pubkey in token")


def policy_allows(claims: dict, allow_sample: bool) -> bool:
    # notes §8 `default`: deny if cpu0 annotated evidence has a `sample` entry; --allow-sample
    # behaves like `allow_all` for the resource plugin.
    if allow_sample:
        return True
    cpu0 = claims.get("submods", {}).get("cpu0", {})
    evidence = cpu0.get("ear.veraison.annotated-evidence") or cpu0.get("ear_veraison_annotated_evidence") or {}
    return "sample" not in evidence


# --------------------------------------------------------------------------------------------
# HTTP


class Kbs:
    def __init__(self, resources: str, allow_sample: bool, missing_status: int):
        self.resources = os.path.abspath(resources)
        self.allow_sample = allow_sample
        self.missing_status = missing_status
        self.signer = TokenSigner()
        self.sessions = Sessions()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloister-interop-pykbs/0.1"
    kbs: Kbs  # set on the class by main()

    def log_message(self, fmt, *args):
        sys.stderr.write("[server] %s %s\n" % (self.address_string(), fmt % args))

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, obj, headers=None):
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)

    def _send_error(self, err: KbsError):
        self.log_message("error %d %s: %s", err.status, err.variant, err.detail)
        self._send_json(err.status, {"type": ERROR_PREFIX + err.variant, "detail": err.detail})

    def _read_body(self) -> None:
        # Always drain the body first so that an early error does not leave unread bytes on a
        # keep-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        if length > BODY_LIMIT:
            self.close_connection = True
            raise KbsError("SerdeError", "request body too large")
        self._body = self.rfile.read(length)

    def _read_json(self):
        try:
            return json.loads(self._body)
        except ValueError as e:
            raise KbsError("SerdeError", f"invalid JSON: {e}") from None

    def _cookie(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == proto.COOKIE_NAME:
                return value
        return None

    def _dispatch(self, method: str):
        try:
            self._read_body()
            path = urlsplit(self.path).path
            if method == "GET" and path == "/healthz":
                return self._send(200, b"", "text/plain")
            if not path.startswith(API_PREFIX + "/"):
                raise KbsError("InvalidRequestPath", f"path {path!r} is not under {API_PREFIX}", 404)
            rest = path[len(API_PREFIX) + 1 :]
            plugin, _, sub = rest.partition("/")
            if method == "POST" and rest == "auth":
                return self._auth()
            if method == "POST" and rest == "attest":
                return self._attest()
            if plugin == "resource":
                if method != "GET":
                    # Admin API is out of scope for this peer.
                    raise KbsError("AdminAuth", "admin API not implemented by this test server")
                return self._resource(sub)
            raise KbsError("PluginNotFound", f"plugin {plugin!r} not found", 404)
        except KbsError as e:
            self._send_error(e)
        except Exception as e:  # keep the server alive; report as 401 like trustee would
            self._send_error(KbsError("PluginInternalError", f"internal error: {type(e).__name__}: {e}"))

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- endpoints ---------------------------------------------------------------------------

    def _auth(self):
        req = self._read_json()
        if not isinstance(req, dict):
            raise KbsError("SerdeError", "Request must be a JSON object")
        # notes §3.1: version must be exactly 0.4.0.
        if req.get("version") != proto.PROTOCOL_VERSION:
            raise KbsError("RcarAuthFailed", "KBS Client Protocol Version Mismatch")
        if req.get("tee") not in TEE_VALUES:
            raise KbsError("SerdeError", f"unknown tee {req.get('tee')!r}")
        # notes §3.1: nonce = standard base64 (padded) of 32 random bytes.
        nonce = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        sid, expires = self.kbs.sessions.create(req, nonce)
        cookie = f"{proto.COOKIE_NAME}={sid}; Expires={formatdate(expires, usegmt=True)}"
        # notes §3.1: extra-params is the empty string for every non-SE TEE.
        self._send_json(200, {"nonce": nonce, "extra-params": ""}, headers={"Set-Cookie": cookie})

    def _attest(self):
        sid = self._cookie()
        session = self.kbs.sessions.get(sid)
        if session is None:
            raise KbsError("RcarAttestFailed", "unknown or expired session cookie")
        att = self._read_json()
        cookie = f"{proto.COOKIE_NAME}={sid}; Expires={formatdate(session['expires'], usegmt=True)}"
        if session["token"]:
            # notes §3.2 step 1: already attested -> return the stored token again.
            return self._send_json(200, {"token": session["token"]}, headers={"Set-Cookie": cookie})
        try:
            runtime = att["runtime-data"]
            nonce, tee_pubkey = runtime["nonce"], runtime["tee-pubkey"]
            evidence = att["tee-evidence"]
            primary, additional = evidence["primary_evidence"], evidence["additional_evidence"]
        except (KeyError, TypeError) as e:
            raise KbsError("SerdeError", f"malformed Attestation: missing {e}") from None
        if not isinstance(additional, str):
            # notes §2: additional_evidence is a string containing JSON.
            raise KbsError("SerdeError", "additional_evidence must be a string")
        if additional:
            raise KbsError("AttestationError", "additional device evidence not supported by this server")
        if att.get("init-data") is not None:
            raise KbsError("AttestationError", "init-data not supported by this server")
        # notes §3.2 step 2.
        if nonce != session["nonce"]:
            raise KbsError("RcarAttestFailed", "runtime-data nonce does not match the session challenge")
        tee = session["request"]["tee"]
        if tee != "sample":
            raise KbsError("AttestationError", f"tee {tee!r} not supported by this server (sample only)")
        try:
            proto.jwk_to_public_key(tee_pubkey)
        except (proto.ProtocolError, KeyError, ValueError, TypeError) as e:
            raise KbsError("SerdeError", f"invalid tee-pubkey: {e}") from None
        digest = proto.runtime_data_digest(nonce, tee_pubkey, additional)  # notes §4, SHA-384
        tee_claims = verify_sample(primary, digest)
        token = self.kbs.signer.sign(ear_claims(tee_claims, digest, runtime))
        self.kbs.sessions.set_token(sid, token)
        self._send_json(200, {"token": token}, headers={"Set-Cookie": cookie})

    def _resource(self, sub: str):
        segments = sub.split("/")
        if len(segments) != 3 or not all(SEGMENT_RE.match(s) for s in segments):
            raise KbsError("InvalidRequestPath", f"invalid resource path {sub!r}", 404)

        # notes §3.3 / §5: the session cookie (stored token, re-verified) or the Bearer token;
        # an unusable cookie falls back to the Bearer header.
        token = None
        session = self.kbs.sessions.get(self._cookie())
        if session is not None and session["token"]:
            token = session["token"]
        else:
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Bearer "):
                token = auth[len("Bearer ") :].strip()
        if not token:
            raise KbsError("TokenNotFound", "no attested session cookie and no Bearer token")
        claims = self.kbs.signer.verify(token)

        if not policy_allows(claims, self.kbs.allow_sample):
            raise KbsError("PolicyDeny", "Access denied by policy (default policy denies sample-TEE tokens)")

        file_path = os.path.join(self.kbs.resources, *segments)
        if not os.path.isfile(file_path):
            # notes §9: trustee answers 401 here; notes §3.4 recommends 404 (--missing-status).
            raise KbsError("PluginInternalError", f"resource {sub} not found", self.kbs.missing_status)
        with open(file_path, "rb") as f:
            plaintext = f.read()
        try:
            jwe = proto.encrypt_response(token_tee_pubkey(claims), plaintext)
        except (proto.ProtocolError, KeyError, ValueError, TypeError) as e:
            raise KbsError("JweError", f"cannot encrypt to tee-pubkey: {e}") from None
        self._send_json(200, jwe)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Minimal KBS (sample TEE only) for interop tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--resources", required=True, help="directory holding repo/type/tag files")
    p.add_argument("--allow-sample", action="store_true", help="release resources to sample-TEE tokens")
    p.add_argument("--missing-status", type=int, choices=[401, 404], default=401,
                   help="status for a missing resource (trustee: 401, notes §9; notes §3.4 suggests 404)")
    args = p.parse_args(argv)

    Handler.kbs = Kbs(args.resources, args.allow_sample, args.missing_status)
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    print(f"listening on {httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
