"""OPA bundles: reading a ``.tar.gz`` safely, and checking its signature as OPA does.

A bundle (https://www.openpolicyagent.org/docs/latest/management-bundles/)
is a gzipped tar of ``*.rego`` modules, ``data.json``/``data.yaml`` files
(placed under ``data`` at their directory's path), an optional ``.manifest``
(``revision``, ``roots``) and an optional ``.signatures.json``: one JWT whose
payload lists every file with its hash.  JSON and YAML files are hashed over
their canonical JSON (keys sorted, no spaces), other files over their bytes,
so a signature does not depend on formatting.

Everything here is pure and bounded (compressed and uncompressed size, file
count), runs in a worker thread, and raises :class:`BundleError` for anything
it does not accept: a truncated download, a path leaving the bundle, a link,
a file the signature does not cover, a wrong hash, a bad or missing signature.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any

from dsfw.policy.loader import load_yaml

MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
DATA_NAMES = ("data.json", "data.yaml")
STRUCTURED = DATA_NAMES + (MANIFEST, SIGNATURES)
DEFAULT_MAX_BYTES = 16 << 20  # uncompressed, and compressed
MAX_FILES = 10_000

_HASHES = {"SHA-256": hashlib.sha256, "SHA-384": hashlib.sha384, "SHA-512": hashlib.sha512}
# JWT algorithm -> the hash it signs with (RS: RSA PKCS#1 v1.5, PS: RSA-PSS, ES: ECDSA).
_JWT_ALGS = {f"{kind}{bits}": f"SHA{bits}" for kind in ("RS", "PS", "ES")
             for bits in (256, 384, 512)}


class BundleError(ValueError):
    """A bundle dsfw will not activate; the message says why."""


@dataclass(frozen=True)
class Bundle:
    """The policy and data files of one bundle, with what its manifest says."""

    revision: str
    roots: tuple[str, ...]
    files: dict[str, bytes]  # relative name -> bytes, only .rego and data files, sorted
    signed: bool
    digest: str  # sha256 of the archive, for logs when there is no revision


def _member_name(name: str) -> str:
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in ("", ".") or clean.startswith("../") or clean == ".." or "\\" in clean:
        raise BundleError(f"bundle entry {name!r} leaves the bundle")
    return clean


def read_archive(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bytes]:
    """Every regular file of a ``.tar.gz`` (``name -> bytes``), within ``max_bytes`` in all."""
    if len(data) > max_bytes:
        raise BundleError(f"bundle of {len(data)} bytes exceeds the limit of {max_bytes}")
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(f"bundle entry {member.name!r} is not a regular file")
                name = _member_name(member.name)
                total += member.size
                if total > max_bytes:
                    raise BundleError(f"bundle unpacks to more than {max_bytes} bytes")
                if name in files:
                    raise BundleError(f"bundle holds {name!r} twice")
                if len(files) >= MAX_FILES:
                    raise BundleError(f"bundle holds more than {MAX_FILES} files")
                handle = tar.extractfile(member)
                files[name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"not a readable .tar.gz bundle: {e}") from e
    return files


def _structured(name: str, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
        if name.endswith(".yaml"):
            return load_yaml(text)
        return json.loads(text, parse_float=_Number, parse_int=_Number)
    except ValueError as e:
        raise BundleError(f"{name}: cannot parse: {e}") from e


class _Number(str):
    """A JSON number kept as written, so its canonical form is its source text (as Go's json.Number)."""


def canonical_json(value: Any) -> bytes:
    """OPA's canonical encoding for hashing: compact, keys sorted, numbers as written."""
    if isinstance(value, dict):
        return b"{" + b",".join(canonical_json(str(k)) + b":" + canonical_json(v)
                                for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(canonical_json(v) for v in value) + b"]"
    if isinstance(value, _Number):
        return str.__str__(value).encode()
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value).encode()
    text = json.dumps(str(value), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


def file_hash(name: str, raw: bytes, algorithm: str) -> str:
    """The hex digest OPA puts in ``.signatures.json`` for one file."""
    try:
        make = _HASHES[algorithm.upper()]
    except KeyError:
        raise BundleError(f"{name}: hash algorithm {algorithm!r} is not accepted") from None
    content = canonical_json(_structured(name, raw)) if posixpath.basename(name) in STRUCTURED \
        else raw
    return make(content).hexdigest()


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, TypeError) as e:
        raise BundleError(f"signature: bad base64url: {e}") from e


class BundleVerifier:
    """Checks ``.signatures.json`` against one public key (``--bundle-verification-key``).

    As OPA: exactly one JWT; its ``keyid`` must match when one is configured;
    its ``scope`` must equal the configured scope (empty by default); every
    file of the bundle must be listed with a matching hash and every listed
    file must be present.
    """

    def __init__(self, public_key_pem: bytes, key_id: str = "", scope: str = ""):
        # cryptography is loaded with a verifier only: about 10 MB resident that a
        # daemon without --bundle-verification-key does not need.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        try:
            self._key = serialization.load_pem_public_key(public_key_pem)
        except ValueError as e:
            raise BundleError(f"bundle verification key is not a PEM public key: {e}") from e
        if not isinstance(self._key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise BundleError("bundle verification key must be RSA or ECDSA")
        self._key_id = key_id
        self._scope = scope

    def _check_jwt(self, token: str) -> dict:
        parts = token.split(".")
        if len(parts) != 3:
            raise BundleError("signature: not a compact JWT")
        try:
            header = json.loads(_b64(parts[0]))
            payload = json.loads(_b64(parts[1]))
        except ValueError as e:
            raise BundleError(f"signature: JWT is not JSON: {e}") from e
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise BundleError("signature: JWT header and payload must be objects")
        alg = header.get("alg")
        if alg not in _JWT_ALGS:
            raise BundleError(f"signature: algorithm {alg!r} is not accepted")
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        key_type = ec.EllipticCurvePublicKey if alg.startswith("ES") else rsa.RSAPublicKey
        digest = getattr(hashes, _JWT_ALGS[alg])
        if not isinstance(self._key, key_type):
            raise BundleError(f"signature: {alg} does not fit the configured key")
        signed = f"{parts[0]}.{parts[1]}".encode("ascii")
        signature = _b64(parts[2])
        try:
            if alg.startswith("RS"):
                self._key.verify(signature, signed, padding.PKCS1v15(), digest())
            elif alg.startswith("PS"):
                self._key.verify(signature, signed, padding.PSS(
                    padding.MGF1(digest()), digest.digest_size), digest())
            else:
                half = len(signature) // 2
                if len(signature) % 2 or half != (self._key.curve.key_size + 7) // 8:
                    raise BundleError("signature: ECDSA signature has the wrong length")
                der = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                           int.from_bytes(signature[half:], "big"))
                self._key.verify(der, signed, ec.ECDSA(digest()))
        except InvalidSignature:
            raise BundleError("signature: does not verify with the configured key") from None
        key_id = payload.get("keyid") or header.get("kid") or ""
        if self._key_id and key_id != self._key_id:
            raise BundleError(f"signature: key id {key_id!r} is not {self._key_id!r}")
        if payload.get("scope", "") != self._scope:
            raise BundleError(f"signature: scope {payload.get('scope')!r} is not "
                              f"{self._scope!r}")
        return payload

    def verify(self, files: dict[str, bytes]) -> None:
        raw = files.get(SIGNATURES)
        if raw is None:
            raise BundleError("bundle is not signed (no .signatures.json) but a verification "
                              "key is configured")
        try:
            doc = json.loads(raw)
            tokens = doc["signatures"]
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f".signatures.json: {e!r}") from e
        if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
            raise BundleError(".signatures.json: expected exactly one JWT")
        payload = self._check_jwt(tokens[0])
        listed = payload.get("files")
        if not isinstance(listed, list):
            raise BundleError("signature: payload lists no files")
        expected: dict[str, dict] = {}
        for entry in listed:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise BundleError("signature: a file entry has no name")
            expected[_member_name(entry["name"])] = entry
        for name, content in files.items():
            if name == SIGNATURES:
                continue
            entry = expected.pop(name, None)
            if entry is None:
                raise BundleError(f"{name}: not covered by the bundle signature")
            if file_hash(name, content, str(entry.get("algorithm", ""))) != \
                    str(entry.get("hash", "")).lower():
                raise BundleError(f"{name}: digest does not match the bundle signature")
        if expected:
            raise BundleError(f"signature lists files missing from the bundle: {sorted(expected)}")


def read_bundle(data: bytes, verifier: BundleVerifier | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> Bundle:
    """Unpack, verify (when a verifier is given) and sort out one bundle archive."""
    files = read_archive(data, max_bytes)
    if verifier is not None:
        verifier.verify(files)
    manifest: dict = {}
    if MANIFEST in files:
        try:
            manifest = json.loads(files[MANIFEST].decode("utf-8")) or {}
        except (UnicodeDecodeError, ValueError) as e:
            raise BundleError(f".manifest: cannot parse: {e}") from e
        if not isinstance(manifest, dict):
            raise BundleError(".manifest must be a JSON object")
    revision = manifest.get("revision", "")
    roots = manifest.get("roots", [""])
    if not isinstance(revision, str) or not isinstance(roots, list) or \
            not all(isinstance(r, str) for r in roots):
        raise BundleError(".manifest: revision must be text and roots a list of text")
    roots = tuple(r.strip("/") for r in roots)
    for a in roots:
        for b in roots:
            if a != b and (a == "" or b.startswith(a + "/")):
                raise BundleError(f".manifest: roots {a!r} and {b!r} overlap")
    wanted = {name: content for name, content in sorted(files.items())
              if name.endswith(".rego") or posixpath.basename(name) in DATA_NAMES}
    return Bundle(str(revision), roots, wanted, verifier is not None,
                  hashlib.sha256(data).hexdigest())
