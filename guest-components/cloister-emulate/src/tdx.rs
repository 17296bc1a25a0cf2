//! Emulated Intel TDX: an Intel-shaped DCAP chain generated locally, version-4 TDX quotes signed
//! through an emulated quoting enclave, and signed collateral for them.
//!
//! > **WARNING — emulated evidence proves nothing about hardware** (see the crate documentation).
//!
//! **What it trusts:** nothing outside the process. Every key comes from `ring`'s system RNG.
//!
//! # The chain and the quote
//!
//! * **Root CA** — ECDSA P-256, self-signed, CA, keyCertSign+cRLSign (like the Intel SGX Root CA).
//! * **PCK Platform CA** — P-256, signed by the root, CA with path length 0; issues the PCK CRL.
//! * **PCK certificate** — P-256, signed by the PCK CA, with the Intel SGX extension
//!   (1.2.840.113741.1.13.1): PPID, TCB (16 SGX components, PCESVN, CPUSVN), PCE-ID, FMSPC and SGX
//!   type, encoded as Intel does.
//! * **TCB Signing** — P-256, signed by the root; signs the TCB info and QE identity.
//! * **QE attestation key** — P-256; the emulated TD quoting enclave's report (ISVPRODID 2,
//!   REPORTDATA = SHA-256(attestation key ‖ QE auth data) ‖ 0³²) is signed by the PCK key.
//!
//! [`EmulatedTdx::quote`] builds a version-4 TDX quote (TD report 1.0 body) with
//! [`cloister_evidence::tdx`]'s own serialiser; the certification data is the PCK chain (type 5,
//! PEM: PCK certificate, PCK CA, root). [`EmulatedTdx::collateral_json`] produces dcap-qvl's
//! `QuoteCollateralV3` JSON (what `TdxCollateral::from_json` reads): root CA CRL, PCK CRL, a TDX
//! TCB info v3 with one `UpToDate` level equal to the platform's TCB, and a `TD_QE` identity v2,
//! freshly signed and valid for [`COLLATERAL_VALIDITY_SECS`].
//!
//! Generation takes a few milliseconds (P-256 keys only). [`EmulatedTdx::save`] writes the chain
//! and keys to a directory (beside an emulated SNP platform: every file is `tdx-*`) and
//! [`EmulatedTdx::load`] reads them back, checking each key against its certificate.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use cloister_evidence::tdx::tdreport::{
    MAC_COVERED_LEN, REPORT_TYPE_TDX, TD_INFO_LEN, TD_INFO_OFFSET, TD_REPORT_LEN, TEE_TCB_INFO_LEN,
    TEE_TCB_INFO_OFFSET, TdInfo, TdReport, TeeTcbInfo,
};
use cloister_evidence::tdx::{
    ATTESTATION_KEY_ECDSA_P256, Bytes, CERT_DATA_PCK_CHAIN, CertificationData, EnclaveReport, INTEL_QE_VENDOR_ID, Mr48,
    Quote, QuoteBody, QuoteHeader, QuoteSignatureData, ReportData, TEE_TYPE_TDX, TdAttributes, TdReport10,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::json;

use crate::EmulateError;
use crate::der::{self, oids};

/// How long generated collateral (CRLs, TCB info, QE identity) is valid: 30 days.
pub const COLLATERAL_VALIDITY_SECS: i64 = 30 * 86_400;
/// Certificates are dated from one day before generation (clock skew).
const BACKDATE_SECS: i64 = 86_400;
/// 25 years (root, PCK CA).
const CA_LIFETIME_SECS: i64 = 25 * 365 * 86_400 + 6 * 86_400;
/// 7 years (PCK certificate, TCB signing certificate).
const LEAF_LIFETIME_SECS: i64 = 7 * 365 * 86_400 + 2 * 86_400;
/// Organisation name of every emulated certificate.
const ORGANISATION: &str = "Cloister emulated TEE (not Intel)";
/// The Intel SGX extension arc 1.2.840.113741.1.13.1.
const SGX_ARC: &[u64] = &[1, 2, 840, 113_741, 1, 13, 1];
/// ISVPRODID of the TD quoting enclave.
const TD_QE_PROD_ID: u16 = 2;
/// ATTRIBUTES of the emulated QE (INIT | MODE64BIT, not DEBUG).
const QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// The platform TCB the emulated PCK certificate and TCB info describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdxPlatformTcb {
    /// FMSPC (family-model-stepping-platform-custom SKU).
    pub fmspc: [u8; 6],
    /// The 16 SGX TCB components (also the CPUSVN).
    pub sgx_components: [u8; 16],
    /// PCESVN.
    pub pce_svn: u16,
    /// TEE_TCB_SVN the TDX module reports (byte 1 zero: checked against the base `tdxModule`).
    pub tee_tcb_svn: [u8; 16],
    /// ISVSVN of the quoting enclave.
    pub qe_svn: u16,
}

impl Default for TdxPlatformTcb {
    fn default() -> Self {
        Self {
            fmspc: [0x90, 0xc0, 0x6f, 0x00, 0x00, 0x00],
            sgx_components: [3, 3, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0],
            pce_svn: 13,
            tee_tcb_svn: [5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            qe_svn: 4,
        }
    }
}

/// What to put in an emulated TD quote. `Default`: all measurements zero, TDATTRIBUTES with only
/// SEPT_VE_DISABLE, XFAM `0x61ae7` (x87, SSE, AVX, AVX-512, PK, AMX state as Linux TDs use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxQuoteRequest {
    /// REPORTDATA.
    pub report_data: ReportData,
    /// MRTD: the build-time measurement of the TD.
    pub mr_td: Mr48,
    /// RTMR0..3.
    pub rtmrs: [Mr48; 4],
    /// MRCONFIGID (CoCo: the initdata digest).
    pub mr_config_id: Mr48,
    /// MROWNER.
    pub mr_owner: Mr48,
    /// MROWNERCONFIG.
    pub mr_owner_config: Mr48,
    /// TDATTRIBUTES.
    pub td_attributes: TdAttributes,
    /// XFAM.
    pub xfam: Bytes<8>,
}

impl Default for TdxQuoteRequest {
    fn default() -> Self {
        Self {
            report_data: Bytes::ZERO,
            mr_td: Bytes::ZERO,
            rtmrs: [Bytes::ZERO; 4],
            mr_config_id: Bytes::ZERO,
            mr_owner: Bytes::ZERO,
            mr_owner_config: Bytes::ZERO,
            td_attributes: TdAttributes(Bytes(TdAttributes::SEPT_VE_DISABLE.to_le_bytes())),
            xfam: Bytes(0x61ae7u64.to_le_bytes()),
        }
    }
}

impl TdxQuoteRequest {
    /// The default request with the given REPORTDATA.
    pub fn new(report_data: [u8; 64]) -> Self {
        Self { report_data: Bytes(report_data), ..Self::default() }
    }
}

/// The state file of a saved platform.
const TDX_STATE_FILE: &str = "tdx-emulator.json";
/// Its format tag.
const TDX_STATE_FORMAT: &str = "cloister-emulate-tdx/1";

/// SHA-384 as a 48-byte value.
fn sha384(b: &[u8]) -> Mr48 {
    Bytes::from_slice(ring::digest::digest(&ring::digest::SHA384, b).as_ref()).unwrap_or(Bytes::ZERO)
}

/// The emulated QE's MRENCLAVE and MRSIGNER and the TDX module's MRSEAM: fixed labels' digests.
fn fixed_identities() -> ([u8; 32], [u8; 32], [u8; 48]) {
    let digest = |label: &str| ring::digest::digest(&ring::digest::SHA384, label.as_bytes());
    let mut qe_mr_enclave = [0u8; 32];
    qe_mr_enclave.copy_from_slice(&digest("cloister-emulate TD_QE MRENCLAVE").as_ref()[..32]);
    let mut qe_mr_signer = [0u8; 32];
    qe_mr_signer.copy_from_slice(&digest("cloister-emulate TD_QE MRSIGNER").as_ref()[..32]);
    let mut mr_seam = [0u8; 48];
    mr_seam.copy_from_slice(digest("cloister-emulate TDX module").as_ref());
    (qe_mr_enclave, qe_mr_signer, mr_seam)
}

/// A P-256 key held as PKCS#8 with its `ring` key pair (fixed-width `r ‖ s` signatures).
struct P256Key {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl P256Key {
    fn generate(rng: &SystemRandom) -> Result<Self, EmulateError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng).map_err(crypto)?;
        Self::from_pkcs8(pkcs8.as_ref(), rng)
    }

    fn from_pkcs8(pkcs8: &[u8], rng: &SystemRandom) -> Result<Self, EmulateError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, rng).map_err(crypto)?;
        Ok(Self { pair, pkcs8: pkcs8.to_vec() })
    }

    /// The uncompressed point (0x04 ‖ X ‖ Y).
    fn point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// X ‖ Y (64 bytes), as quotes carry keys.
    fn raw_public(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.point()[1..]);
        out
    }

    fn spki(&self) -> Vec<u8> {
        der::seq(&[
            &der::seq(&[&der::oid(oids::EC_PUBLIC_KEY), &der::oid(oids::PRIME256V1)]),
            &der::bit_string(self.point()),
        ])
    }

    /// ECDSA P-256/SHA-256, fixed-width `r ‖ s`.
    fn sign_fixed(&self, rng: &SystemRandom, msg: &[u8]) -> Result<[u8; 64], EmulateError> {
        let sig = self.pair.sign(rng, msg).map_err(crypto)?;
        let mut out = [0u8; 64];
        if sig.as_ref().len() != 64 {
            return Err(crypto("unexpected P-256 signature length"));
        }
        out.copy_from_slice(sig.as_ref());
        Ok(out)
    }

    /// ECDSA P-256/SHA-256 as a DER `Ecdsa-Sig-Value` (for certificates and CRLs).
    fn sign_der(&self, rng: &SystemRandom, msg: &[u8]) -> Result<Vec<u8>, EmulateError> {
        let fixed = self.sign_fixed(rng, msg)?;
        Ok(der::seq(&[&der::uint_bytes(&fixed[..32]), &der::uint_bytes(&fixed[32..])]))
    }
}

fn crypto(e: impl fmt::Debug) -> EmulateError {
    EmulateError::Crypto(format!("{e:?}"))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], EmulateError> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(crypto)?;
    Ok(out)
}

fn ecdsa_sha256() -> Vec<u8> {
    der::seq(&[&der::oid(oids::ECDSA_SHA256)])
}

fn name(cn: &str) -> Vec<u8> {
    der::name(&[
        (oids::CN, der::utf8(cn)),
        (oids::O, der::utf8(ORGANISATION)),
        (oids::L, der::utf8("Emulated")),
        (oids::ST, der::utf8("Emulated")),
        (oids::C, der::printable("US")),
    ])
}

fn sgx_oid(tail: &[u64]) -> Vec<u8> {
    let mut arcs = SGX_ARC.to_vec();
    arcs.extend_from_slice(tail);
    der::oid(&arcs)
}

/// The Intel SGX extension value of a PCK certificate.
fn sgx_extension(ppid: &[u8; 16], tcb: &TdxPlatformTcb, pce_id: [u8; 2]) -> Vec<u8> {
    let mut items: Vec<Vec<u8>> = tcb
        .sgx_components
        .iter()
        .zip(1u64..)
        .map(|(svn, n)| der::seq(&[&sgx_oid(&[2, n]), &der::uint(u64::from(*svn))]))
        .collect();
    items.push(der::seq(&[&sgx_oid(&[2, 17]), &der::uint(u64::from(tcb.pce_svn))]));
    items.push(der::seq(&[&sgx_oid(&[2, 18]), &der::octet_string(&tcb.sgx_components)]));
    let item_refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    der::seq(&[
        &der::seq(&[&sgx_oid(&[1]), &der::octet_string(ppid)]),
        &der::seq(&[&sgx_oid(&[2]), &der::seq(&item_refs)]),
        &der::seq(&[&sgx_oid(&[3]), &der::octet_string(&pce_id)]),
        &der::seq(&[&sgx_oid(&[4]), &der::octet_string(&tcb.fmspc)]),
        &der::seq(&[&sgx_oid(&[5]), &der::tlv(0x0a, &[0])]),
    ])
}

struct Issue<'a> {
    issuer: &'a [u8],
    subject: &'a [u8],
    key: &'a P256Key,
    not_before: i64,
    not_after: i64,
    extensions: Vec<Vec<u8>>,
}

fn issue(rng: &SystemRandom, spec: &Issue<'_>, issuer_key: &P256Key) -> Result<Vec<u8>, EmulateError> {
    let alg = ecdsa_sha256();
    let mut serial = random::<16>(rng)?;
    serial[0] = (serial[0] & 0x7f) | 1;
    let exts: Vec<&[u8]> = spec.extensions.iter().map(Vec::as_slice).collect();
    let tbs = der::seq(&[
        &der::explicit(0, &der::uint(2)),
        &der::uint_bytes(&serial),
        &alg,
        spec.issuer,
        &der::seq(&[&der::time(spec.not_before), &der::time(spec.not_after)]),
        spec.subject,
        &spec.key.spki(),
        &der::explicit(3, &der::seq(&exts)),
    ]);
    let sig = issuer_key.sign_der(rng, &tbs)?;
    Ok(der::seq(&[&tbs, &alg, &der::bit_string(&sig)]))
}

/// Key identifier: the first 20 bytes of SHA-256 over the public point.
fn key_id(key: &P256Key) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key.point()).as_ref()[..20].to_vec()
}

fn ski(key: &P256Key) -> Vec<u8> {
    der::extension(oids::SKI, false, &der::octet_string(&key_id(key)))
}

fn aki(key: &P256Key) -> Vec<u8> {
    der::extension(oids::AKI, false, &der::seq(&[&der::tlv(0x80, &key_id(key))]))
}

fn ca_extensions(key: &P256Key, issuer: Option<&P256Key>, path_len: Option<u64>) -> Vec<Vec<u8>> {
    let bc = match path_len {
        Some(n) => der::seq(&[&der::boolean(true), &der::uint(n)]),
        None => der::seq(&[&der::boolean(true)]),
    };
    let mut exts = Vec::new();
    if let Some(i) = issuer {
        exts.push(aki(i));
    }
    exts.push(ski(key));
    // keyCertSign | cRLSign.
    exts.push(der::extension(oids::KEY_USAGE, true, &der::tlv(0x03, &[0x01, 0x06])));
    exts.push(der::extension(oids::BASIC_CONSTRAINTS, true, &bc));
    exts
}

fn leaf_extensions(key: &P256Key, issuer: &P256Key) -> Vec<Vec<u8>> {
    vec![
        aki(issuer),
        ski(key),
        // digitalSignature | nonRepudiation.
        der::extension(oids::KEY_USAGE, true, &der::tlv(0x03, &[0x06, 0xc0])),
        der::extension(oids::BASIC_CONSTRAINTS, true, &der::seq(&[])),
    ]
}

/// An emulated TDX platform: root CA, PCK CA, PCK certificate, TCB signing certificate and the
/// quoting enclave's attestation key. See the module documentation.
pub struct EmulatedTdx {
    rng: SystemRandom,
    tcb: TdxPlatformTcb,
    qe_id: [u8; 16],
    root_key: P256Key,
    pck_ca_key: P256Key,
    pck_key: P256Key,
    tcb_signing_key: P256Key,
    attestation_key: P256Key,
    root_der: Vec<u8>,
    pck_ca_der: Vec<u8>,
    pck_der: Vec<u8>,
    tcb_signing_der: Vec<u8>,
    qe_mr_enclave: [u8; 32],
    qe_mr_signer: [u8; 32],
    mr_seam: [u8; 48],
}

impl fmt::Debug for EmulatedTdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedTdx")
            .field("tcb", &self.tcb)
            .field("root_sha256", &self.root_sha256_hex())
            .finish_non_exhaustive()
    }
}

impl EmulatedTdx {
    /// Generates a platform with [`TdxPlatformTcb::default`].
    pub fn generate() -> Result<Self, EmulateError> {
        Self::generate_with_tcb(TdxPlatformTcb::default())
    }

    /// Generates a platform whose PCK certificate, TCB info and QE describe `tcb`.
    pub fn generate_with_tcb(tcb: TdxPlatformTcb) -> Result<Self, EmulateError> {
        let rng = SystemRandom::new();
        let root_key = P256Key::generate(&rng)?;
        let pck_ca_key = P256Key::generate(&rng)?;
        let pck_key = P256Key::generate(&rng)?;
        let tcb_signing_key = P256Key::generate(&rng)?;
        let attestation_key = P256Key::generate(&rng)?;
        let nb = unix_now() - BACKDATE_SECS;
        let root_name = name("Cloister Emulated SGX Root CA");
        let ca_name = name("Cloister Emulated SGX PCK Platform CA");
        let root_der = issue(
            &rng,
            &Issue {
                issuer: &root_name,
                subject: &root_name,
                key: &root_key,
                not_before: nb,
                not_after: nb + CA_LIFETIME_SECS,
                extensions: ca_extensions(&root_key, None, Some(1)),
            },
            &root_key,
        )?;
        let pck_ca_der = issue(
            &rng,
            &Issue {
                issuer: &root_name,
                subject: &ca_name,
                key: &pck_ca_key,
                not_before: nb,
                not_after: nb + CA_LIFETIME_SECS,
                extensions: ca_extensions(&pck_ca_key, Some(&root_key), Some(0)),
            },
            &root_key,
        )?;
        let ppid = random::<16>(&rng)?;
        let mut pck_exts = leaf_extensions(&pck_key, &pck_ca_key);
        pck_exts.push(der::extension(SGX_ARC, false, &sgx_extension(&ppid, &tcb, [0, 0])));
        let pck_der = issue(
            &rng,
            &Issue {
                issuer: &ca_name,
                subject: &name("Cloister Emulated SGX PCK Certificate"),
                key: &pck_key,
                not_before: nb,
                not_after: nb + LEAF_LIFETIME_SECS,
                extensions: pck_exts,
            },
            &pck_ca_key,
        )?;
        let tcb_signing_der = issue(
            &rng,
            &Issue {
                issuer: &root_name,
                subject: &name("Cloister Emulated SGX TCB Signing"),
                key: &tcb_signing_key,
                not_before: nb,
                not_after: nb + LEAF_LIFETIME_SECS,
                extensions: leaf_extensions(&tcb_signing_key, &root_key),
            },
            &root_key,
        )?;
        let (qe_mr_enclave, qe_mr_signer, mr_seam) = fixed_identities();
        Ok(Self {
            qe_id: random(&rng)?,
            rng,
            tcb,
            root_key,
            pck_ca_key,
            pck_key,
            tcb_signing_key,
            attestation_key,
            root_der,
            pck_ca_der,
            pck_der,
            tcb_signing_der,
            qe_mr_enclave,
            qe_mr_signer,
            mr_seam,
        })
    }

    /// Writes the chain, keys and metadata into `dir` (created if missing): `tdx-emulator.json`,
    /// `tdx-root.pem`, `tdx-pck-ca.pem`, `tdx-pck.pem`, `tdx-tcb-signing.pem` and the matching
    /// `tdx-*-key.pem` (PKCS#8, mode 0600) plus `tdx-attestation-key.pem`.
    pub fn save(&self, dir: &std::path::Path) -> Result<(), EmulateError> {
        use crate::snp::write_file;
        std::fs::create_dir_all(dir).map_err(|e| EmulateError::Io { path: dir.display().to_string(), source: e })?;
        let t = &self.tcb;
        let state = json!({
            "format": TDX_STATE_FORMAT,
            "fmspc": hex::encode(t.fmspc),
            "sgx_components": hex::encode(t.sgx_components),
            "pce_svn": t.pce_svn,
            "tee_tcb_svn": hex::encode(t.tee_tcb_svn),
            "qe_svn": t.qe_svn,
            "qe_id": hex::encode(self.qe_id),
        });
        write_file(&dir.join(TDX_STATE_FILE), state.to_string().as_bytes(), false)?;
        for (name, der) in self.certs() {
            write_file(&dir.join(format!("tdx-{name}.pem")), der::pem_encode("CERTIFICATE", der).as_bytes(), false)?;
        }
        for (name, key) in self.keys() {
            write_file(
                &dir.join(format!("tdx-{name}-key.pem")),
                der::pem_encode("PRIVATE KEY", &key.pkcs8).as_bytes(),
                true,
            )?;
        }
        Ok(())
    }

    fn certs(&self) -> [(&'static str, &[u8]); 4] {
        [
            ("root", &self.root_der),
            ("pck-ca", &self.pck_ca_der),
            ("pck", &self.pck_der),
            ("tcb-signing", &self.tcb_signing_der),
        ]
    }

    fn keys(&self) -> [(&'static str, &P256Key); 5] {
        [
            ("root", &self.root_key),
            ("pck-ca", &self.pck_ca_key),
            ("pck", &self.pck_key),
            ("tcb-signing", &self.tcb_signing_key),
            ("attestation", &self.attestation_key),
        ]
    }

    /// Whether `dir` holds a saved TDX platform.
    pub fn exists(dir: &std::path::Path) -> bool {
        dir.join(TDX_STATE_FILE).exists()
    }

    /// Reads a directory written by [`EmulatedTdx::save`], checking that every certified key
    /// matches its certificate.
    pub fn load(dir: &std::path::Path) -> Result<Self, EmulateError> {
        use crate::snp::{cert_spki, invalid, read_file};
        let rng = SystemRandom::new();
        let state_path = dir.join(TDX_STATE_FILE);
        let state: serde_json::Value = serde_json::from_slice(&read_file(&state_path)?)
            .map_err(|e| invalid(&state_path, format!("not valid emulator state: {e}")))?;
        if state.get("format").and_then(|f| f.as_str()) != Some(TDX_STATE_FORMAT) {
            return Err(invalid(&state_path, format!("format is not {TDX_STATE_FORMAT:?}")));
        }
        fn bytes<const N: usize>(
            v: &serde_json::Value,
            k: &str,
            path: &std::path::Path,
        ) -> Result<[u8; N], EmulateError> {
            let mut out = [0u8; N];
            v.get(k)
                .and_then(|x| x.as_str())
                .and_then(|h| hex::decode_to_slice(h, &mut out).ok())
                .ok_or_else(|| invalid(path, format!("{k} is not {N} bytes of hex")))?;
            Ok(out)
        }
        let num = |k: &str| -> Result<u16, EmulateError> {
            state
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| invalid(&state_path, format!("{k} is not a 16-bit number")))
        };
        let tcb = TdxPlatformTcb {
            fmspc: bytes(&state, "fmspc", &state_path)?,
            sgx_components: bytes(&state, "sgx_components", &state_path)?,
            pce_svn: num("pce_svn")?,
            tee_tcb_svn: bytes(&state, "tee_tcb_svn", &state_path)?,
            qe_svn: num("qe_svn")?,
        };
        let qe_id = bytes(&state, "qe_id", &state_path)?;
        let pem = |file: String, label: &str| -> Result<Vec<u8>, EmulateError> {
            let path = dir.join(&file);
            let text = String::from_utf8(read_file(&path)?).map_err(|_| invalid(&path, "not UTF-8 PEM"))?;
            let mut ders = der::pem_decode_all(&text, label)?;
            match (ders.pop(), ders.is_empty()) {
                (Some(d), true) => Ok(d),
                _ => Err(invalid(&path, format!("expected exactly one {label} block"))),
            }
        };
        let key = |name: &str| P256Key::from_pkcs8(&pem(format!("tdx-{name}-key.pem"), "PRIVATE KEY")?, &rng);
        let cert = |name: &str, k: &P256Key| -> Result<Vec<u8>, EmulateError> {
            let file = format!("tdx-{name}.pem");
            let der = pem(file.clone(), "CERTIFICATE")?;
            if cert_spki(&der) != Some(&k.spki()[..]) {
                return Err(invalid(
                    &dir.join(file),
                    "the certificate's public key does not match the saved private key",
                ));
            }
            Ok(der)
        };
        let (root_key, pck_ca_key, pck_key) = (key("root")?, key("pck-ca")?, key("pck")?);
        let (tcb_signing_key, attestation_key) = (key("tcb-signing")?, key("attestation")?);
        let root_der = cert("root", &root_key)?;
        let pck_ca_der = cert("pck-ca", &pck_ca_key)?;
        let pck_der = cert("pck", &pck_key)?;
        let tcb_signing_der = cert("tcb-signing", &tcb_signing_key)?;
        let (qe_mr_enclave, qe_mr_signer, mr_seam) = fixed_identities();
        Ok(Self {
            rng,
            tcb,
            qe_id,
            root_key,
            pck_ca_key,
            pck_key,
            tcb_signing_key,
            attestation_key,
            root_der,
            pck_ca_der,
            pck_der,
            tcb_signing_der,
            qe_mr_enclave,
            qe_mr_signer,
            mr_seam,
        })
    }

    /// The platform TCB.
    pub fn tcb(&self) -> TdxPlatformTcb {
        self.tcb
    }

    /// The root CA certificate (DER): what `TdxTrustAnchors::empty().with_root(der)` pins.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// SHA-256 of the root's DER, lowercase hex.
    pub fn root_sha256_hex(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.root_der))
    }

    /// The PCK Platform CA certificate (DER).
    pub fn pck_ca_der(&self) -> &[u8] {
        &self.pck_ca_der
    }

    /// The PCK certificate (DER).
    pub fn pck_der(&self) -> &[u8] {
        &self.pck_der
    }

    /// The TCB signing certificate (DER).
    pub fn tcb_signing_der(&self) -> &[u8] {
        &self.tcb_signing_der
    }

    /// PCK certificate, PCK CA and root as PEM (the quote's certification data).
    pub fn pck_chain_pem(&self) -> String {
        [&self.pck_der, &self.pck_ca_der, &self.root_der].iter().map(|d| der::pem_encode("CERTIFICATE", d)).collect()
    }

    /// Produces a version-4 TDX quote (TD report 1.0) with the requested fields, signed by the QE
    /// attestation key, with the QE report signed by the PCK key and the PCK chain attached.
    pub fn quote(&self, req: &TdxQuoteRequest) -> Result<Vec<u8>, EmulateError> {
        self.quote_body(self.report_fields(req).to_td10_body())
    }

    /// The emulated CPU's report MAC key. Real TDREPORTs are MACed with a key only the CPU and
    /// the quoting enclave can derive; here it is derived from the QE attestation key, so a saved
    /// platform needs no extra file and only this platform's QE accepts its reports.
    fn report_mac_key(&self) -> ring::hmac::Key {
        let seed = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"cloister-emulate TDREPORT MAC key".as_slice(), &self.attestation_key.pkcs8].concat(),
        );
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_ref())
    }

    /// The TDREPORT fields of a TD on this platform (this TDX module, the requested TD fields),
    /// hashes and MAC not yet filled in.
    fn report_fields(&self, req: &TdxQuoteRequest) -> TdReport {
        let mut valid = [0u8; 8];
        valid[0] = 0x1f; // TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, ATTRIBUTES (bits 0..4)
        TdReport {
            report_type: [REPORT_TYPE_TDX, 0, 0, 0],
            reserved1: Bytes::ZERO,
            cpu_svn: Bytes(self.tcb.sgx_components),
            tee_tcb_info_hash: Bytes::ZERO,
            tee_info_hash: Bytes::ZERO,
            report_data: req.report_data,
            reserved2: Bytes::ZERO,
            mac: Bytes::ZERO,
            tee_tcb_info: TeeTcbInfo {
                valid: Bytes(valid),
                tee_tcb_svn: Bytes(self.tcb.tee_tcb_svn),
                mr_seam: Bytes(self.mr_seam),
                mr_signer_seam: Bytes::ZERO,
                attributes: Bytes::ZERO,
                tee_tcb_svn2: Bytes::ZERO,
                reserved: Bytes::ZERO,
            },
            reserved3: Bytes::ZERO,
            td_info: TdInfo {
                attributes: req.td_attributes,
                xfam: req.xfam,
                mr_td: req.mr_td,
                mr_config_id: req.mr_config_id,
                mr_owner: req.mr_owner,
                mr_owner_config: req.mr_owner_config,
                rtmr: req.rtmrs,
                servtd_hash: Bytes::ZERO,
                reserved: Bytes::ZERO,
            },
        }
    }

    /// What the emulated TDX module's `TDG.MR.REPORT` returns for a TD with the requested fields
    /// (`/dev/tdx_guest`'s `TDX_CMD_GET_REPORT0`): a 1024-byte TDREPORT whose TEE_TCB_INFO is this
    /// platform's module, whose hashes cover TEE_TCB_INFO and TDINFO, MACed with the emulated CPU
    /// key. [`EmulatedTdx::quote_td_report`] turns it into a quote, as the host's QGS would.
    pub fn td_report(&self, req: &TdxQuoteRequest) -> [u8; TD_REPORT_LEN] {
        let mut report = self.report_fields(req);
        let bytes = report.to_bytes();
        report.tee_tcb_info_hash = sha384(&bytes[TEE_TCB_INFO_OFFSET..TEE_TCB_INFO_OFFSET + TEE_TCB_INFO_LEN]);
        report.tee_info_hash = sha384(&bytes[TD_INFO_OFFSET..TD_INFO_OFFSET + TD_INFO_LEN]);
        let bytes = report.to_bytes();
        let tag = ring::hmac::sign(&self.report_mac_key(), &bytes[..MAC_COVERED_LEN]);
        report.mac = Bytes::from_slice(tag.as_ref()).unwrap_or(Bytes::ZERO);
        report.to_bytes()
    }

    /// The emulated quoting enclave: checks a TDREPORT's MAC (this platform's CPU key) and that
    /// its hashes cover its TEE_TCB_INFO and TDINFO, then quotes its fields. A report from another
    /// platform, or altered after the MAC, is refused.
    pub fn quote_td_report(&self, report: &[u8]) -> Result<Vec<u8>, EmulateError> {
        let parsed =
            TdReport::from_bytes(report).map_err(|e| EmulateError::InvalidRequest(format!("TDREPORT: {e}")))?;
        let bytes = parsed.to_bytes();
        ring::hmac::verify(&self.report_mac_key(), &bytes[..MAC_COVERED_LEN], parsed.mac.as_ref()).map_err(|_| {
            EmulateError::InvalidRequest("TDREPORT MAC does not verify (not this platform's CPU)".into())
        })?;
        let tcb_info = &bytes[TEE_TCB_INFO_OFFSET..TEE_TCB_INFO_OFFSET + TEE_TCB_INFO_LEN];
        let td_info = &bytes[TD_INFO_OFFSET..TD_INFO_OFFSET + TD_INFO_LEN];
        if sha384(tcb_info) != parsed.tee_tcb_info_hash || sha384(td_info) != parsed.tee_info_hash {
            return Err(EmulateError::InvalidRequest(
                "TDREPORT hashes do not cover its TEE_TCB_INFO and TDINFO".into(),
            ));
        }
        self.quote_body(parsed.to_td10_body())
    }

    /// Quotes a TD 1.0 body.
    fn quote_body(&self, body: TdReport10) -> Result<Vec<u8>, EmulateError> {
        let mut user_data = [0u8; 20];
        user_data[..16].copy_from_slice(&self.qe_id);
        let header = QuoteHeader {
            version: 4,
            attestation_key_type: ATTESTATION_KEY_ECDSA_P256,
            tee_type: TEE_TYPE_TDX,
            qe_svn: self.tcb.qe_svn,
            pce_svn: self.tcb.pce_svn,
            qe_vendor_id: Bytes(INTEL_QE_VENDOR_ID),
            user_data: Bytes(user_data),
        };
        let body = QuoteBody::Td10(body);
        let attestation_key = self.attestation_key.raw_public();
        let qe_auth_data: Vec<u8> = (0u8..32).collect();
        let binding = ring::digest::digest(&ring::digest::SHA256, &[&attestation_key[..], &qe_auth_data].concat());
        let mut qe_report_data = [0u8; 64];
        qe_report_data[..32].copy_from_slice(binding.as_ref());
        let qe_report = EnclaveReport {
            cpu_svn: Bytes(self.tcb.sgx_components),
            misc_select: 0,
            reserved1: Bytes::ZERO,
            attributes: Bytes(QE_ATTRIBUTES),
            mr_enclave: Bytes(self.qe_mr_enclave),
            reserved2: Bytes::ZERO,
            mr_signer: Bytes(self.qe_mr_signer),
            reserved3: Bytes::ZERO,
            isv_prod_id: TD_QE_PROD_ID,
            isv_svn: self.tcb.qe_svn,
            reserved4: Bytes::ZERO,
            report_data: Bytes(qe_report_data),
        };
        let qe_report_signature = self.pck_key.sign_fixed(&self.rng, &qe_report.to_bytes())?;
        let mut signature = QuoteSignatureData {
            signature: Bytes::ZERO,
            attestation_key: Bytes(attestation_key),
            qe_report,
            qe_report_signature: Bytes(qe_report_signature),
            qe_auth_data,
            certification: CertificationData {
                cert_type: CERT_DATA_PCK_CHAIN,
                data: self.pck_chain_pem().into_bytes(),
            },
        };
        let unsigned = Quote::new(header, body, signature.clone()).map_err(quote_err)?;
        signature.signature = Bytes(self.attestation_key.sign_fixed(&self.rng, unsigned.signed_bytes())?);
        let quote = Quote::new(header, body, signature).map_err(quote_err)?;
        quote.to_bytes().map_err(quote_err)
    }

    /// A CRL (DER) issued by `issuer` revoking `revoked` serials, valid from one day ago for
    /// [`COLLATERAL_VALIDITY_SECS`].
    fn crl(&self, issuer_cert: &[u8], issuer_key: &P256Key, revoked: &[Vec<u8>]) -> Result<Vec<u8>, EmulateError> {
        let now = unix_now();
        let this_update = now - BACKDATE_SECS;
        let issuer = cert_subject(issuer_cert).ok_or_else(|| crypto("issuer certificate does not parse"))?;
        let alg = ecdsa_sha256();
        let entries: Vec<Vec<u8>> =
            revoked.iter().map(|s| der::seq(&[&der::uint_bytes(s), &der::time(this_update)])).collect();
        let entry_refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let mut parts = vec![
            der::uint(1),
            alg.clone(),
            issuer.to_vec(),
            der::time(this_update),
            der::time(now + COLLATERAL_VALIDITY_SECS),
        ];
        if !entries.is_empty() {
            parts.push(der::seq(&entry_refs));
        }
        parts.push(der::explicit(0, &der::seq(&[&der::extension(oids::CRL_NUMBER, false, &der::uint(1))])));
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let tbs = der::seq(&refs);
        let sig = issuer_key.sign_der(&self.rng, &tbs)?;
        Ok(der::seq(&[&tbs, &alg, &der::bit_string(&sig)]))
    }

    /// The serial number (big-endian) of the PCK certificate, e.g. to revoke it with
    /// [`EmulatedTdx::collateral_json_revoking`].
    pub fn pck_serial(&self) -> Result<Vec<u8>, EmulateError> {
        cert_serial(&self.pck_der).ok_or_else(|| crypto("PCK certificate does not parse")).map(<[u8]>::to_vec)
    }

    /// Freshly signed collateral for this platform in dcap-qvl's `QuoteCollateralV3` JSON form.
    pub fn collateral_json(&self) -> Result<String, EmulateError> {
        self.collateral_json_revoking(&[])
    }

    /// Like [`EmulatedTdx::collateral_json`], with a PCK CRL revoking the given serial numbers.
    pub fn collateral_json_revoking(&self, revoked_pck_serials: &[Vec<u8>]) -> Result<String, EmulateError> {
        let now = unix_now();
        let issue_date = der::rfc3339(now - BACKDATE_SECS);
        let next_update = der::rfc3339(now + COLLATERAL_VALIDITY_SECS);
        let tcb_date = der::rfc3339(now - BACKDATE_SECS);
        let t = &self.tcb;
        let comps = |c: &[u8; 16]| c.iter().map(|svn| json!({ "svn": svn })).collect::<Vec<_>>();
        let tcb_info = json!({
            "id": "TDX",
            "version": 3,
            "issueDate": issue_date,
            "nextUpdate": next_update,
            "fmspc": hex::encode_upper(t.fmspc),
            "pceId": "0000",
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tdxModule": {
                "mrsigner": "00".repeat(48),
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
            },
            "tdxModuleIdentities": [],
            "tcbLevels": [{
                "tcb": {
                    "sgxtcbcomponents": comps(&t.sgx_components),
                    "pcesvn": t.pce_svn,
                    "tdxtcbcomponents": comps(&t.tee_tcb_svn),
                },
                "tcbDate": tcb_date,
                "tcbStatus": "UpToDate",
            }],
        })
        .to_string();
        let qe_identity = json!({
            "id": "TD_QE",
            "version": 2,
            "issueDate": issue_date,
            "nextUpdate": next_update,
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": hex::encode_upper(QE_ATTRIBUTES),
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": hex::encode_upper(self.qe_mr_signer),
            "isvprodid": TD_QE_PROD_ID,
            "tcbLevels": [{ "tcb": { "isvsvn": t.qe_svn }, "tcbDate": tcb_date, "tcbStatus": "UpToDate" }],
        })
        .to_string();
        let signer_chain =
            der::pem_encode("CERTIFICATE", &self.tcb_signing_der) + &der::pem_encode("CERTIFICATE", &self.root_der);
        let collateral = json!({
            "pck_crl_issuer_chain": der::pem_encode("CERTIFICATE", &self.pck_ca_der) + &der::pem_encode("CERTIFICATE", &self.root_der),
            "root_ca_crl": hex::encode(self.crl(&self.root_der, &self.root_key, &[])?),
            "pck_crl": hex::encode(self.crl(&self.pck_ca_der, &self.pck_ca_key, revoked_pck_serials)?),
            "tcb_info_issuer_chain": signer_chain,
            "tcb_info_signature": hex::encode(self.tcb_signing_key.sign_fixed(&self.rng, tcb_info.as_bytes())?),
            "tcb_info": tcb_info,
            "qe_identity_issuer_chain": signer_chain,
            "qe_identity_signature": hex::encode(self.tcb_signing_key.sign_fixed(&self.rng, qe_identity.as_bytes())?),
            "qe_identity": qe_identity,
        });
        Ok(collateral.to_string())
    }
}

fn quote_err(e: cloister_evidence::tdx::QuoteError) -> EmulateError {
    EmulateError::InvalidRequest(format!("quote does not serialise: {e}"))
}

/// Splits one DER TLV (our own certificates only): `(tag, content, rest)` with the whole element.
fn tlv(input: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (_, content, rest) = crate::der::split(input)?;
    Some((&input[..input.len() - rest.len()], content, rest))
}

/// The elements of a certificate's TBSCertificate, in order.
fn tbs_elements(cert: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let (_, body, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(body)?;
    let mut out = Vec::new();
    let mut rest = tbs;
    while !rest.is_empty() {
        let (whole, content, r) = tlv(rest)?;
        out.push((whole, content));
        rest = r;
    }
    Some(out)
}

/// The subject Name element (version, serial, signature, issuer, validity, subject).
fn cert_subject(cert: &[u8]) -> Option<&[u8]> {
    tbs_elements(cert)?.get(5).map(|(whole, _)| *whole)
}

/// The serial number's content bytes.
fn cert_serial(cert: &[u8]) -> Option<&[u8]> {
    tbs_elements(cert)?.get(1).map(|(_, content)| *content)
}
