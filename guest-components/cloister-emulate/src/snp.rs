//! Emulated AMD SEV-SNP: an AMD-shaped certificate chain generated locally and 1184-byte
//! ATTESTATION_REPORTs signed by its VCEK.
//!
//! > **WARNING — emulated evidence proves nothing about hardware** (see the crate documentation).
//!
//! **What it trusts:** nothing outside the process. [`EmulatedSnp::generate`] draws every key from
//! the operating system's RNG; [`EmulatedSnp::load`] reads a directory the caller controls and
//! checks that each private key matches its certificate and that the VCEK certifies the saved chip
//! id and TCB.
//!
//! # The chain
//!
//! Shaped exactly like AMD's, so that `cloister-verifier` checks it with the code it uses for real
//! chains:
//!
//! * **ARK** — RSA-4096, self-signed, RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48, trailer 1; the
//!   same parameter encoding as AMD's ARK), key usage keyCertSign+cRLSign, CA, 25 years.
//! * **ASK** — RSA-4096, signed by the ARK, CA with path length 0, 25 years.
//! * **VCEK** — ECDSA P-384 (`secp384r1`), signed by the ASK, 7 years, carrying the AMD extensions
//!   of arc 1.3.6.1.4.1.3704.1 in AMD's order: `.1` structVersion (INTEGER 1), `.2` productName
//!   (IA5String `Milan-B0`, `Genoa-B1`, `Turin`), `.3.1` blSPL, `.3.2` teeSPL, `.3.4`–`.3.7`
//!   spl_4–spl_7 (0; Turin has no `.3.4`, like AMD's Turin VCEKs), `.3.3` snpSPL, `.3.8` ucodeSPL,
//!   Turin `.3.9` fmcSPL (first), and `.4` hwID as raw bytes (64-byte chip id; Turin: its first 8
//!   bytes).
//!
//! Names follow AMD's attribute structure (OU, C, L, ST, O, CN; CN `ARK-<Product>`,
//! `SEV-<Product>`, `SEV-VCEK`) but the organisation is `Cloister emulated TEE (not AMD)`, so the
//! names never collide with AMD's: a verifier with only the built-in AMD roots reports the emulated
//! root as an unpinned root, not as a bad signature.
//!
//! # Reports
//!
//! [`EmulatedSnp::report`] builds a [`ReportFields`] (version 5 by default, 3 on request) with the
//! product's CPUID family/model/stepping, `REPORTED_TCB` = `CURRENT_TCB` = `COMMITTED_TCB` =
//! `LAUNCH_TCB` = the VCEK's TCB, `CHIP_ID` = the VCEK's hwID (Turin: zero-padded), KEY_INFO
//! "signed by the VCEK", `SIGNATURE_ALGO` 1, and signs bytes `0x000..0x2A0` with the VCEK
//! (ECDSA P-384/SHA-384, R and S stored little-endian), serialised with
//! [`cloister_evidence::snp`]'s own code.
//!
//! # Saved state
//!
//! [`EmulatedSnp::save`] writes (and [`EmulatedSnp::load`] reads) these files in one directory:
//!
//! ```text
//! snp-emulator.json   {"format": "cloister-emulate-snp/1", "product", "tcb", "chip_id", "report_id"}
//! ark.pem ask.pem vcek.pem             the certificates (PEM CERTIFICATE)
//! cert_chain.pem                       ASK then ARK (the layout AMD KDS serves)
//! ark-key.pem ask-key.pem vcek-key.pem the private keys, PKCS#8 PEM, mode 0600
//! ```
//!
//! # Cost
//!
//! [`EmulatedSnp::generate`] generates two RSA-4096 keys in pure Rust: about 8–13 seconds per
//! chain measured on a 2-core machine with the workspace's optimised dependencies (the prime search
//! varies; allow a minute), many times longer if dependencies are built without optimisation. Generate once and [`save`](EmulatedSnp::save)/[`load`](EmulatedSnp::load) (loading
//! takes milliseconds); tests should share one instance per product (e.g. a `OnceLock`). A report
//! costs one ECDSA P-384 signature with aws-lc-rs (ring took about half a millisecond on a 2-core
//! machine, the p384 crate twice that).

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use cloister_evidence::snp::{
    AttestationReport, ChipId, Cpuid, FamilyId, FirmwareVersion, GuestPolicy, HostData, ImageId, KeyDigest, KeyInfo,
    Measurement, PlatformInfo, Product, ReportData, ReportFields, ReportId, ReportSignature,
    SIG_ALGO_ECDSA_P384_SHA384, SIGNED_LEN, SigningKey, TcbLayout, TcbParts, TcbVersion,
};
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::pss::BlindedSigningKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};

use crate::EmulateError;
use crate::der::{self, oids};

/// Format tag of `snp-emulator.json`.
const STATE_FORMAT: &str = "cloister-emulate-snp/1";
/// Organisation name of every emulated certificate.
const ORGANISATION: &str = "Cloister emulated TEE (not AMD)";
/// RSA modulus size of the ARK and ASK, as AMD's.
const RSA_BITS: usize = 4096;
/// Certificates are dated from one day before generation (clock skew).
const BACKDATE_SECS: i64 = 86_400;
/// 25 years (ARK, ASK).
const CA_LIFETIME_SECS: i64 = 25 * 365 * 86_400 + 6 * 86_400;
/// 7 years (VCEK).
const VCEK_LIFETIME_SECS: i64 = 7 * 365 * 86_400 + 2 * 86_400;

/// The AMD VEK extension arc 1.3.6.1.4.1.3704.1 followed by `tail`.
fn amd_oid(tail: &[u64]) -> Vec<u64> {
    let mut arcs = vec![1, 3, 6, 1, 4, 1, 3704, 1];
    arcs.extend_from_slice(tail);
    arcs
}

/// What to put in an emulated report. `Default`: version 5, policy `0x30000` (SMT allowed, debug
/// off), VMPL 0, everything else zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpReportRequest {
    /// Report VERSION: 3 or 5 (5 adds the mitigation vectors, written as zero).
    pub version: u32,
    /// REPORT_DATA: what the guest binds to the report (e.g. a hash of its TEE public key).
    pub report_data: ReportData,
    /// MEASUREMENT: the launch digest to claim.
    pub measurement: Measurement,
    /// HOST_DATA (CoCo: the initdata digest).
    pub host_data: HostData,
    /// Guest POLICY.
    pub policy: GuestPolicy,
    /// VMPL of the requester, 0 to 3.
    pub vmpl: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// FAMILY_ID (from the ID block).
    pub family_id: FamilyId,
    /// IMAGE_ID (from the ID block).
    pub image_id: ImageId,
    /// ID_KEY_DIGEST (zero: no ID block).
    pub id_key_digest: KeyDigest,
    /// AUTHOR_KEY_DIGEST; non-zero sets KEY_INFO.AUTHOR_KEY_EN.
    pub author_key_digest: KeyDigest,
}

impl Default for SnpReportRequest {
    fn default() -> Self {
        Self {
            version: 5,
            report_data: ReportData::default(),
            measurement: Measurement::default(),
            host_data: HostData::default(),
            policy: GuestPolicy(GuestPolicy::SMT | GuestPolicy::RESERVED_MUST_BE_ONE),
            vmpl: 0,
            guest_svn: 0,
            family_id: FamilyId::default(),
            image_id: ImageId::default(),
            id_key_digest: KeyDigest::default(),
            author_key_digest: KeyDigest::default(),
        }
    }
}

impl SnpReportRequest {
    /// The default request with the given REPORT_DATA.
    pub fn new(report_data: [u8; 64]) -> Self {
        Self { report_data: ReportData(report_data), ..Self::default() }
    }

    /// Sets MEASUREMENT.
    pub fn with_measurement(mut self, measurement: [u8; 48]) -> Self {
        self.measurement = Measurement(measurement);
        self
    }

    /// Sets HOST_DATA.
    pub fn with_host_data(mut self, host_data: [u8; 32]) -> Self {
        self.host_data = HostData(host_data);
        self
    }

    /// Sets POLICY.
    pub fn with_policy(mut self, policy: u64) -> Self {
        self.policy = GuestPolicy(policy);
        self
    }
}

/// An emulated SEV-SNP platform: an AMD-shaped chain (ARK → ASK → VCEK) for one product, a chip
/// id and a TCB, able to sign attestation reports. See the module documentation.
pub struct EmulatedSnp {
    product: Product,
    tcb: TcbParts,
    chip_id: ChipId,
    report_id: ReportId,
    ark_key: RsaPrivateKey,
    ask_key: RsaPrivateKey,
    vcek_key: p384::ecdsa::SigningKey,
    /// The same VCEK key as an aws-lc-rs signing key: reports are signed with it (ECDSA
    /// P-384/SHA-384 with a fresh random nonce per signature; faster than `ring` and the p384
    /// crate).
    vcek_signer: EcdsaKeyPair,
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
}

impl fmt::Debug for EmulatedSnp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedSnp")
            .field("product", &self.product)
            .field("tcb", &self.tcb)
            .field("chip_id", &self.chip_id)
            .field("ark_sha256", &self.ark_sha256_hex())
            .finish_non_exhaustive()
    }
}

/// A plausible TCB for each product (the values of recent AMD firmware), used by
/// [`EmulatedSnp::generate`].
pub fn default_tcb(product: Product) -> TcbParts {
    match product {
        Product::Milan => TcbParts { fmc: None, bootloader: 4, tee: 0, snp: 22, microcode: 213 },
        Product::Genoa => TcbParts { fmc: None, bootloader: 9, tee: 0, snp: 23, microcode: 72 },
        Product::Turin => TcbParts { fmc: Some(1), bootloader: 1, tee: 1, snp: 3, microcode: 9 },
    }
}

/// CPUID family, model and stepping the emulated processor reports.
fn cpuid(product: Product) -> Cpuid {
    match product {
        Product::Milan => Cpuid { family: 0x19, model: 0x01, stepping: 0x01 },
        Product::Genoa => Cpuid { family: 0x19, model: 0x11, stepping: 0x01 },
        Product::Turin => Cpuid { family: 0x1a, model: 0x02, stepping: 0x01 },
    }
}

/// productName of the VCEK, as AMD writes it.
fn product_name(product: Product) -> &'static str {
    match product {
        Product::Milan => "Milan-B0",
        Product::Genoa => "Genoa-B1",
        Product::Turin => "Turin",
    }
}

/// Length of the hwID the VCEK carries.
fn hw_id_len(product: Product) -> usize {
    match product {
        Product::Turin => 8,
        Product::Milan | Product::Genoa => 64,
    }
}

fn crypto(e: impl fmt::Display) -> EmulateError {
    EmulateError::Crypto(e.to_string())
}

/// `key` as an aws-lc-rs ECDSA P-384 signing key (through its PKCS#8 encoding, which carries the
/// public key; aws-lc-rs checks that it matches the private key).
fn report_signer(key: &p384::ecdsa::SigningKey) -> Result<EcdsaKeyPair, EmulateError> {
    let der = key.to_pkcs8_der().map_err(crypto)?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der.as_bytes()).map_err(crypto)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// A positive random 16-byte serial number.
fn random_serial() -> [u8; 16] {
    let mut s = random_bytes::<16>();
    s[0] = (s[0] & 0x7f) | 0x01;
    s
}

/// AMD's RSASSA-PSS AlgorithmIdentifier: SHA-384, MGF1-SHA-384, salt 48, trailer 1 (explicit,
/// with NULL hash parameters, byte for byte as in AMD's ARK).
fn pss_algorithm() -> Vec<u8> {
    let sha384 = der::seq(&[&der::oid(oids::SHA384), &der::null()]);
    let params = der::seq(&[
        &der::explicit(0, &sha384),
        &der::explicit(1, &der::seq(&[&der::oid(oids::MGF1), &sha384])),
        &der::explicit(2, &der::uint(48)),
        &der::explicit(3, &der::uint(1)),
    ]);
    der::seq(&[&der::oid(oids::RSASSA_PSS), &params])
}

/// A Name with AMD's attribute structure and the emulator's organisation.
fn amd_like_name(cn: &str) -> Vec<u8> {
    der::name(&[
        (oids::OU, der::utf8("Engineering")),
        (oids::C, der::printable("US")),
        (oids::L, der::utf8("Emulated")),
        (oids::ST, der::utf8("Emulated")),
        (oids::O, der::utf8(ORGANISATION)),
        (oids::CN, der::utf8(cn)),
    ])
}

fn rsa_spki(key: &RsaPrivateKey) -> Result<Vec<u8>, EmulateError> {
    let pkcs1 = RsaPublicKey::from(key).to_pkcs1_der().map_err(crypto)?;
    Ok(der::seq(&[&der::seq(&[&der::oid(oids::RSA_ENCRYPTION), &der::null()]), &der::bit_string(pkcs1.as_bytes())]))
}

fn p384_spki(key: &p384::ecdsa::SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    der::seq(&[
        &der::seq(&[&der::oid(oids::EC_PUBLIC_KEY), &der::oid(oids::SECP384R1)]),
        &der::bit_string(point.as_bytes()),
    ])
}

/// Subject key identifier: the first 20 bytes of SHA-256 over the SPKI.
fn key_id(spki: &[u8]) -> Vec<u8> {
    Sha256::digest(spki)[..20].to_vec()
}

/// RSASSA-PSS (SHA-384, salt 48) signature of `msg`.
fn sign_pss(key: &RsaPrivateKey, msg: &[u8]) -> Result<Vec<u8>, EmulateError> {
    let signer = BlindedSigningKey::<Sha384>::new(key.clone());
    let sig = signer.try_sign_with_rng(&mut OsRng, msg).map_err(crypto)?;
    Ok(sig.to_vec())
}

/// The pieces of one certificate to issue.
struct CertSpec<'a> {
    issuer: &'a [u8],
    subject: &'a [u8],
    spki: &'a [u8],
    not_before: i64,
    not_after: i64,
    extensions: &'a [Vec<u8>],
}

/// Issues a certificate signed by `issuer_key` with AMD's PSS profile.
fn issue(spec: &CertSpec<'_>, issuer_key: &RsaPrivateKey) -> Result<Vec<u8>, EmulateError> {
    let alg = pss_algorithm();
    let exts: Vec<&[u8]> = spec.extensions.iter().map(Vec::as_slice).collect();
    let tbs = der::seq(&[
        &der::explicit(0, &der::uint(2)),
        &der::uint_bytes(&random_serial()),
        &alg,
        spec.issuer,
        &der::seq(&[&der::time(spec.not_before), &der::time(spec.not_after)]),
        spec.subject,
        spec.spki,
        &der::explicit(3, &der::seq(&exts)),
    ]);
    let sig = sign_pss(issuer_key, &tbs)?;
    Ok(der::seq(&[&tbs, &alg, &der::bit_string(&sig)]))
}

/// The AMD VCEK extensions for a product, TCB and chip id, in AMD's order.
fn vcek_extensions(product: Product, tcb: TcbParts, chip_id: &ChipId) -> Vec<Vec<u8>> {
    let int = |tail: &[u64], v: u64| der::extension(&amd_oid(tail), false, &der::uint(v));
    let mut exts = vec![int(&[1], 1), der::extension(&amd_oid(&[2]), false, &der::ia5(product_name(product)))];
    match product {
        Product::Turin => {
            exts.push(int(&[3, 9], u64::from(tcb.fmc.unwrap_or(0))));
            exts.push(int(&[3, 1], u64::from(tcb.bootloader)));
            exts.push(int(&[3, 2], u64::from(tcb.tee)));
            exts.push(int(&[3, 3], u64::from(tcb.snp)));
            for spl in 5..=7 {
                exts.push(int(&[3, spl], 0));
            }
        }
        Product::Milan | Product::Genoa => {
            exts.push(int(&[3, 1], u64::from(tcb.bootloader)));
            exts.push(int(&[3, 2], u64::from(tcb.tee)));
            for spl in 4..=7 {
                exts.push(int(&[3, spl], 0));
            }
            exts.push(int(&[3, 3], u64::from(tcb.snp)));
        }
    }
    exts.push(int(&[3, 8], u64::from(tcb.microcode)));
    exts.push(der::extension(&amd_oid(&[4]), false, &chip_id.0[..hw_id_len(product)]));
    exts
}

/// Normalises a requested TCB for a product's layout (Milan/Genoa: no FMC; Turin: FMC 0 if absent).
fn normalise_tcb(product: Product, tcb: TcbParts) -> TcbParts {
    let fmc = match product.tcb_layout() {
        TcbLayout::MilanGenoa => None,
        TcbLayout::Turin => Some(tcb.fmc.unwrap_or(0)),
    };
    TcbParts { fmc, ..tcb }
}

/// A random chip id: 64 bytes, or for Turin 8 random bytes followed by zeros.
fn random_chip_id(product: Product) -> ChipId {
    let mut id = random_bytes::<64>();
    for b in &mut id[hw_id_len(product)..] {
        *b = 0;
    }
    // A chip id of all zeros means "masked" to verifiers.
    id[0] |= 1;
    ChipId(id)
}

fn vcek_cert(
    product: Product,
    tcb: TcbParts,
    chip_id: &ChipId,
    vcek_key: &p384::ecdsa::SigningKey,
    ask_key: &RsaPrivateKey,
    not_before: i64,
) -> Result<Vec<u8>, EmulateError> {
    issue(
        &CertSpec {
            issuer: &amd_like_name(&format!("SEV-{}", product.name())),
            subject: &amd_like_name("SEV-VCEK"),
            spki: &p384_spki(vcek_key),
            not_before,
            not_after: not_before + VCEK_LIFETIME_SECS,
            extensions: &vcek_extensions(product, tcb, chip_id),
        },
        ask_key,
    )
}

impl EmulatedSnp {
    /// Generates a new chain for `product` with [`default_tcb`] and a random chip id. Slow: two
    /// RSA-4096 key generations (see the module documentation for timings).
    pub fn generate(product: Product) -> Result<Self, EmulateError> {
        Self::generate_with_tcb(product, default_tcb(product))
    }

    /// Generates a new chain for `product` whose VCEK certifies `tcb` (for Milan/Genoa the FMC is
    /// ignored; for Turin an absent FMC is 0).
    pub fn generate_with_tcb(product: Product, tcb: TcbParts) -> Result<Self, EmulateError> {
        let tcb = normalise_tcb(product, tcb);
        let ark_key = RsaPrivateKey::new(&mut OsRng, RSA_BITS).map_err(crypto)?;
        let ask_key = RsaPrivateKey::new(&mut OsRng, RSA_BITS).map_err(crypto)?;
        let vcek_key = p384::ecdsa::SigningKey::random(&mut OsRng);
        let not_before = unix_now() - BACKDATE_SECS;

        let ark_name = amd_like_name(&format!("ARK-{}", product.name()));
        let ask_name = amd_like_name(&format!("SEV-{}", product.name()));
        let ark_spki = rsa_spki(&ark_key)?;
        let ask_spki = rsa_spki(&ask_key)?;
        let ark_id = key_id(&ark_spki);
        let ask_id = key_id(&ask_spki);
        let aki = |id: &[u8]| der::seq(&[&der::tlv(0x80, id)]);

        let ark_der = issue(
            &CertSpec {
                issuer: &ark_name,
                subject: &ark_name,
                spki: &ark_spki,
                not_before,
                not_after: not_before + CA_LIFETIME_SECS,
                extensions: &[
                    der::extension(oids::KEY_USAGE, true, &der::tlv(0x03, &[0x01, 0x06])),
                    der::extension(oids::SKI, false, &der::octet_string(&ark_id)),
                    der::extension(oids::BASIC_CONSTRAINTS, true, &der::seq(&[&der::boolean(true)])),
                ],
            },
            &ark_key,
        )?;
        let ask_der = issue(
            &CertSpec {
                issuer: &ark_name,
                subject: &ask_name,
                spki: &ask_spki,
                not_before,
                not_after: not_before + CA_LIFETIME_SECS,
                extensions: &[
                    der::extension(oids::SKI, false, &der::octet_string(&ask_id)),
                    der::extension(oids::AKI, false, &aki(&ark_id)),
                    der::extension(oids::BASIC_CONSTRAINTS, true, &der::seq(&[&der::boolean(true), &der::uint(0)])),
                    der::extension(oids::KEY_USAGE, true, &der::tlv(0x03, &[0x02, 0x04])),
                ],
            },
            &ark_key,
        )?;
        let chip_id = random_chip_id(product);
        let vcek_der = vcek_cert(product, tcb, &chip_id, &vcek_key, &ask_key, not_before)?;
        Ok(Self {
            product,
            tcb,
            chip_id,
            report_id: ReportId(random_bytes()),
            ark_key,
            ask_key,
            vcek_signer: report_signer(&vcek_key)?,
            vcek_key,
            ark_der,
            ask_der,
            vcek_der,
        })
    }

    /// Issues a new VCEK (new key, same chip id) for another TCB, e.g. to emulate a firmware
    /// update. Fast: no RSA key generation.
    pub fn with_tcb(&self, tcb: TcbParts) -> Result<Self, EmulateError> {
        let tcb = normalise_tcb(self.product, tcb);
        let vcek_key = p384::ecdsa::SigningKey::random(&mut OsRng);
        let vcek_der =
            vcek_cert(self.product, tcb, &self.chip_id, &vcek_key, &self.ask_key, unix_now() - BACKDATE_SECS)?;
        Ok(Self {
            product: self.product,
            tcb,
            chip_id: self.chip_id,
            report_id: self.report_id,
            ark_key: self.ark_key.clone(),
            ask_key: self.ask_key.clone(),
            vcek_signer: report_signer(&vcek_key)?,
            vcek_key,
            ark_der: self.ark_der.clone(),
            ask_der: self.ask_der.clone(),
            vcek_der,
        })
    }

    /// The product whose chain this emulates.
    pub fn product(&self) -> Product {
        self.product
    }

    /// CHIP_ID as reports carry it (64 bytes; Turin: the 8-byte hwID followed by zeros).
    pub fn chip_id(&self) -> ChipId {
        self.chip_id
    }

    /// The TCB the VCEK certifies (and every report carries).
    pub fn tcb(&self) -> TcbParts {
        self.tcb
    }

    /// The TCB as the 8-byte TCB_VERSION of this product's layout.
    pub fn tcb_version(&self) -> TcbVersion {
        TcbVersion::from_parts(self.product.tcb_layout(), self.tcb)
    }

    /// The ARK (root) certificate, DER.
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }

    /// The ASK certificate, DER.
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }

    /// The VCEK certificate, DER.
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// SHA-256 of the ARK's DER, lowercase hex: what a verifier pins.
    pub fn ark_sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.ark_der))
    }

    /// ASK then ARK as PEM (the layout of AMD KDS `cert_chain`).
    pub fn cert_chain_pem(&self) -> String {
        der::pem_encode("CERTIFICATE", &self.ask_der) + &der::pem_encode("CERTIFICATE", &self.ark_der)
    }

    /// The extended-report certificate table (what the host hands the guest with an extended
    /// report, configfs-tsm `auxblob`): 24-byte entries `{GUID, u32 offset, u32 length}` for the
    /// VCEK, ASK and ARK, an all-zero terminator, then the DER certificates; offsets are relative to
    /// the start of the table.
    pub fn cert_table(&self) -> Vec<u8> {
        use cloister_evidence::snp::cert_table::{GUID_ARK, GUID_ASK, GUID_VCEK, build};
        build(&[(GUID_VCEK, &self.vcek_der), (GUID_ASK, &self.ask_der), (GUID_ARK, &self.ark_der)])
    }

    /// An ARK-signed CRL (DER) revoking `revoked_serials` (big-endian serial numbers; empty: a
    /// CRL revoking nothing), valid from one day ago for `valid_secs` seconds. AMD's CRLs revoke
    /// intermediates: pass [`EmulatedSnp::ask_serial`] to emulate a revoked ASK.
    pub fn crl_der(&self, revoked_serials: &[Vec<u8>], valid_secs: i64) -> Result<Vec<u8>, EmulateError> {
        let alg = pss_algorithm();
        let now = unix_now();
        let this_update = now - BACKDATE_SECS;
        let revoked: Vec<Vec<u8>> =
            revoked_serials.iter().map(|s| der::seq(&[&der::uint_bytes(s), &der::time(this_update)])).collect();
        let revoked_refs: Vec<&[u8]> = revoked.iter().map(Vec::as_slice).collect();
        let ark_name = amd_like_name(&format!("ARK-{}", self.product.name()));
        let mut parts: Vec<Vec<u8>> =
            vec![der::uint(1), alg.clone(), ark_name, der::time(this_update), der::time(now + valid_secs)];
        if !revoked.is_empty() {
            parts.push(der::seq(&revoked_refs));
        }
        parts.push(der::explicit(0, &der::seq(&[&der::extension(oids::CRL_NUMBER, false, &der::uint(1))])));
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let tbs = der::seq(&refs);
        let sig = sign_pss(&self.ark_key, &tbs)?;
        Ok(der::seq(&[&tbs, &alg, &der::bit_string(&sig)]))
    }

    /// The ASK's serial number (big-endian), for [`EmulatedSnp::crl_der`].
    pub fn ask_serial(&self) -> Result<Vec<u8>, EmulateError> {
        let tbs = cert_tbs(&self.ask_der).ok_or_else(|| crypto("ASK certificate does not parse"))?;
        let (_, _, rest) = der::split(tbs).ok_or_else(|| crypto("ASK certificate has no version"))?;
        let (_, serial, _) = der::split(rest).ok_or_else(|| crypto("ASK certificate has no serial"))?;
        Ok(serial.to_vec())
    }

    /// Produces a signed 1184-byte ATTESTATION_REPORT with the requested fields.
    pub fn report(&self, req: &SnpReportRequest) -> Result<Vec<u8>, EmulateError> {
        if !matches!(req.version, 3 | 5) {
            return Err(EmulateError::InvalidRequest(format!("report version {} (3 or 5 supported)", req.version)));
        }
        if req.vmpl > 3 {
            return Err(EmulateError::InvalidRequest(format!("VMPL {} (0 to 3)", req.vmpl)));
        }
        let tcb = self.tcb_version();
        let firmware = FirmwareVersion { major: 1, minor: 55, build: self.tcb.snp };
        let v5 = req.version >= 5;
        let mut fields = ReportFields {
            version: req.version,
            guest_svn: req.guest_svn,
            policy: req.policy,
            family_id: req.family_id,
            image_id: req.image_id,
            vmpl: req.vmpl,
            signature_algo: SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb: tcb,
            // SMT enabled.
            platform_info: PlatformInfo(1),
            key_info: KeyInfo::new(!req.author_key_digest.is_zero(), false, SigningKey::Vcek),
            report_data: req.report_data,
            measurement: req.measurement,
            host_data: req.host_data,
            id_key_digest: req.id_key_digest,
            author_key_digest: req.author_key_digest,
            report_id: self.report_id,
            // No migration agent.
            report_id_ma: ReportId([0xff; 32]),
            reported_tcb: tcb,
            cpuid: Some(cpuid(self.product)),
            chip_id: self.chip_id,
            committed_tcb: tcb,
            current_version: firmware,
            committed_version: firmware,
            launch_tcb: tcb,
            launch_mit_vector: v5.then_some(0),
            current_mit_vector: v5.then_some(0),
            signature: ReportSignature::default(),
        };
        let unsigned = fields.to_bytes();
        let sig = self.vcek_signer.sign(&SystemRandom::new(), &unsigned[..SIGNED_LEN]).map_err(crypto)?;
        let fixed: [u8; 96] = sig.as_ref().try_into().map_err(crypto)?;
        fields.signature = ReportSignature::from_p384_fixed(&fixed);
        let report = AttestationReport::from_fields(&fields)?;
        Ok(report.raw().to_vec())
    }

    /// Writes the chain, keys and metadata into `dir` (created if missing); see the module
    /// documentation for the file names. Private keys are written with mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), EmulateError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let state = SavedState {
            format: STATE_FORMAT.to_string(),
            product: self.product,
            tcb: self.tcb,
            chip_id: self.chip_id,
            report_id: self.report_id,
        };
        let json = serde_json::to_string_pretty(&state).map_err(|e| EmulateError::InvalidState {
            path: dir.join(STATE_FILE).display().to_string(),
            reason: e.to_string(),
        })?;
        write_file(&dir.join(STATE_FILE), json.as_bytes(), false)?;
        write_file(&dir.join("ark.pem"), der::pem_encode("CERTIFICATE", &self.ark_der).as_bytes(), false)?;
        write_file(&dir.join("ask.pem"), der::pem_encode("CERTIFICATE", &self.ask_der).as_bytes(), false)?;
        write_file(&dir.join("vcek.pem"), der::pem_encode("CERTIFICATE", &self.vcek_der).as_bytes(), false)?;
        write_file(&dir.join("cert_chain.pem"), self.cert_chain_pem().as_bytes(), false)?;
        let ark = self.ark_key.to_pkcs8_pem(LineEnding::LF).map_err(crypto)?;
        write_file(&dir.join("ark-key.pem"), ark.as_bytes(), true)?;
        let ask = self.ask_key.to_pkcs8_pem(LineEnding::LF).map_err(crypto)?;
        write_file(&dir.join("ask-key.pem"), ask.as_bytes(), true)?;
        let vcek = self.vcek_key.to_pkcs8_pem(LineEnding::LF).map_err(crypto)?;
        write_file(&dir.join("vcek-key.pem"), vcek.as_bytes(), true)?;
        Ok(())
    }

    /// Reads a directory written by [`EmulatedSnp::save`], checking that every private key matches
    /// its certificate and that the VCEK certifies the saved product, TCB and chip id.
    pub fn load(dir: &Path) -> Result<Self, EmulateError> {
        let state_path = dir.join(STATE_FILE);
        let state: SavedState = serde_json::from_slice(&read_file(&state_path)?)
            .map_err(|e| invalid(&state_path, format!("not valid emulator state: {e}")))?;
        if state.format != STATE_FORMAT {
            return Err(invalid(&state_path, format!("format {:?}, expected {STATE_FORMAT:?}", state.format)));
        }
        let product = state.product;
        let tcb = normalise_tcb(product, state.tcb);
        let cert = |name: &str| -> Result<Vec<u8>, EmulateError> {
            let path = dir.join(name);
            let text = String::from_utf8(read_file(&path)?).map_err(|_| invalid(&path, "not UTF-8 PEM"))?;
            let mut ders = der::pem_decode_all(&text, "CERTIFICATE")?;
            match (ders.pop(), ders.is_empty()) {
                (Some(d), true) => Ok(d),
                _ => Err(invalid(&path, "expected exactly one CERTIFICATE block")),
            }
        };
        let key_text = |name: &str| -> Result<(String, std::path::PathBuf), EmulateError> {
            let path = dir.join(name);
            let text = String::from_utf8(read_file(&path)?).map_err(|_| invalid(&path, "not UTF-8 PEM"))?;
            Ok((text, path))
        };
        let (ark_der, ask_der, vcek_der) = (cert("ark.pem")?, cert("ask.pem")?, cert("vcek.pem")?);
        let (text, path) = key_text("ark-key.pem")?;
        let ark_key = RsaPrivateKey::from_pkcs8_pem(&text).map_err(|e| invalid(&path, e.to_string()))?;
        let (text, path) = key_text("ask-key.pem")?;
        let ask_key = RsaPrivateKey::from_pkcs8_pem(&text).map_err(|e| invalid(&path, e.to_string()))?;
        let (text, path) = key_text("vcek-key.pem")?;
        let vcek_key = p384::ecdsa::SigningKey::from_pkcs8_pem(&text).map_err(|e| invalid(&path, e.to_string()))?;

        let check_key = |name: &str, der: &[u8], spki: &[u8]| -> Result<(), EmulateError> {
            if cert_spki(der) == Some(spki) {
                Ok(())
            } else {
                Err(invalid(&dir.join(name), "the certificate's public key does not match the saved private key"))
            }
        };
        check_key("ark.pem", &ark_der, &rsa_spki(&ark_key)?)?;
        check_key("ask.pem", &ask_der, &rsa_spki(&ask_key)?)?;
        check_key("vcek.pem", &vcek_der, &p384_spki(&vcek_key))?;
        let exts = vcek_extensions(product, tcb, &state.chip_id);
        let refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
        let expected = der::explicit(3, &der::seq(&refs));
        if !vcek_der.windows(expected.len()).any(|w| w == expected) {
            return Err(invalid(&dir.join("vcek.pem"), "the VCEK does not certify the saved product, TCB and chip id"));
        }
        Ok(Self {
            product,
            tcb,
            chip_id: state.chip_id,
            report_id: state.report_id,
            ark_key,
            ask_key,
            vcek_signer: report_signer(&vcek_key)?,
            vcek_key,
            ark_der,
            ask_der,
            vcek_der,
        })
    }
}

/// Name of the metadata file in a saved directory.
const STATE_FILE: &str = "snp-emulator.json";

#[derive(Serialize, Deserialize)]
struct SavedState {
    format: String,
    product: Product,
    tcb: TcbParts,
    chip_id: ChipId,
    report_id: ReportId,
}

/// The content of a certificate's TBSCertificate.
fn cert_tbs(cert: &[u8]) -> Option<&[u8]> {
    let (_, body, _) = der::split(cert)?;
    let (_, tbs, _) = der::split(body)?;
    Some(tbs)
}

/// The whole SubjectPublicKeyInfo element of a certificate.
pub(crate) fn cert_spki(cert: &[u8]) -> Option<&[u8]> {
    let mut rest = cert_tbs(cert)?;
    // version, serial, signature, issuer, validity, subject, then the SPKI.
    for _ in 0..6 {
        rest = der::split(rest)?.2;
    }
    let (_, _, after) = der::split(rest)?;
    Some(&rest[..rest.len() - after.len()])
}

fn io_err(path: &Path, source: std::io::Error) -> EmulateError {
    EmulateError::Io { path: path.display().to_string(), source }
}

pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> EmulateError {
    EmulateError::InvalidState { path: path.display().to_string(), reason: reason.into() }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, EmulateError> {
    std::fs::read(path).map_err(|e| io_err(path, e))
}

/// Writes `data` to `path`, replacing it; `secret` files get mode 0600 (Unix).
pub(crate) fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<(), EmulateError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| io_err(path, e))?;
    #[cfg(unix)]
    if secret {
        // The file may have existed with wider permissions.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| io_err(path, e))?;
    }
    f.write_all(data).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}
