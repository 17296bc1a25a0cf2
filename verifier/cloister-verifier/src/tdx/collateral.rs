//! DCAP collateral: the `QuoteCollateralV3` JSON form (as used by dcap-qvl and PCCS clients), and
//! the TCB info and QE identity documents parsed from the exact texts Intel signed.
//!
//! **What it trusts:** nothing by itself. [`TdxCollateral`] only carries bytes; the verifier checks
//! the signatures over `tcb_info` / `qe_identity` (over the text exactly as stored) before it
//! uses anything parsed from them. Parsing rejects duplicate JSON keys, wrong-length hex fields and
//! unknown TCB statuses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::der::parse_rfc3339;
use super::error::TdxVerifyError;
use super::tcb::TcbStatus;

/// The fields of DCAP collateral in dcap-qvl's `QuoteCollateralV3` JSON shape: byte fields are hex
/// strings, `tcb_info` / `qe_identity` the exact JSON texts Intel signed, issuer chains PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralParts {
    /// PCK CRL issuer chain (PEM: PCK Platform/Processor CA, root).
    pub pck_crl_issuer_chain: String,
    /// Intel SGX Root CA CRL (DER).
    #[serde(with = "hex_bytes")]
    pub root_ca_crl: Vec<u8>,
    /// PCK CRL (DER), issued by the PCK Platform or Processor CA.
    #[serde(with = "hex_bytes")]
    pub pck_crl: Vec<u8>,
    /// TCB info issuer chain (PEM: TCB Signing, root).
    pub tcb_info_issuer_chain: String,
    /// The `tcbInfo` JSON text exactly as signed.
    pub tcb_info: String,
    /// ECDSA P-256 signature `r ‖ s` over `tcb_info`.
    #[serde(with = "hex_bytes")]
    pub tcb_info_signature: Vec<u8>,
    /// QE identity issuer chain (PEM: TCB Signing, root).
    pub qe_identity_issuer_chain: String,
    /// The `enclaveIdentity` JSON text exactly as signed.
    pub qe_identity: String,
    /// ECDSA P-256 signature `r ‖ s` over `qe_identity`.
    #[serde(with = "hex_bytes")]
    pub qe_identity_signature: Vec<u8>,
    /// PCK certificate chain (PEM), used when the quote itself carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pck_certificate_chain: Option<String>,
}

/// DCAP collateral for one FMSPC, with a digest of its bytes (the verifier's cache key).
///
/// (De)serialises as the `QuoteCollateralV3` JSON object ([`CollateralParts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxCollateral {
    parts: CollateralParts,
    digest: [u8; 32],
}

impl TdxCollateral {
    /// Wraps collateral parts, computing their digest.
    pub fn new(parts: CollateralParts) -> Self {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        let mut field = |tag: u8, b: &[u8]| {
            h.update(&[tag]);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(1, parts.pck_crl_issuer_chain.as_bytes());
        field(2, &parts.root_ca_crl);
        field(3, &parts.pck_crl);
        field(4, parts.tcb_info_issuer_chain.as_bytes());
        field(5, parts.tcb_info.as_bytes());
        field(6, &parts.tcb_info_signature);
        field(7, parts.qe_identity_issuer_chain.as_bytes());
        field(8, parts.qe_identity.as_bytes());
        field(9, &parts.qe_identity_signature);
        if let Some(chain) = &parts.pck_certificate_chain {
            field(10, chain.as_bytes());
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(h.finish().as_ref());
        Self { parts, digest }
    }

    /// Parses the `QuoteCollateralV3` JSON form.
    pub fn from_json(json: &[u8]) -> Result<Self, TdxVerifyError> {
        let parts: CollateralParts = serde_json::from_slice(json)
            .map_err(|e| TdxVerifyError::CollateralMalformed(format!("collateral JSON: {e}")))?;
        Ok(Self::new(parts))
    }

    /// Serialises to the `QuoteCollateralV3` JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.parts).unwrap_or_default()
    }

    /// The parts.
    pub fn parts(&self) -> &CollateralParts {
        &self.parts
    }

    /// Consumes the collateral, returning its parts.
    pub fn into_parts(self) -> CollateralParts {
        self.parts
    }

    /// SHA-256 over all fields (length-prefixed); identifies the collateral in the verifier cache.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

impl Serialize for TdxCollateral {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.parts.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TdxCollateral {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CollateralParts::deserialize(d).map(Self::new)
    }
}

/// Splits an Intel PCS response body `{"<key>":{…},"signature":"<hex>"}` into the exact signed
/// text of the `<key>` value and the decoded signature (what [`CollateralParts`] stores), e.g.
/// `pcs_signed_body(body, "tcbInfo")` or `pcs_signed_body(body, "enclaveIdentity")`.
pub fn pcs_signed_body<'a>(body: &'a str, key: &str) -> Result<(&'a str, Vec<u8>), TdxVerifyError> {
    let bad = |what: &str| TdxVerifyError::CollateralMalformed(format!("PCS {key} response: {what}"));
    let body = body.trim();
    let prefix = format!("{{\"{key}\":");
    let rest = body.strip_prefix(prefix.as_str()).ok_or_else(|| bad("does not start with the expected key"))?;
    const SIG: &str = ",\"signature\":\"";
    let at = rest.rfind(SIG).ok_or_else(|| bad("no signature field"))?;
    let signed = &rest[..at];
    let sig_hex = rest[at + SIG.len()..].strip_suffix("\"}").ok_or_else(|| bad("signature is not the last field"))?;
    let sig = hex::decode(sig_hex).map_err(|_| bad("signature is not hex"))?;
    // The signed text must itself be one JSON value.
    serde_json::from_str::<serde::de::IgnoredAny>(signed).map_err(|_| bad("signed part is not JSON"))?;
    Ok((signed, sig))
}

/// Which TEE a TCB info / QE identity document is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TeeKind {
    Sgx,
    Tdx,
}

/// One platform TCB level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcbLevel {
    pub sgx: [u8; 16],
    pub pce_svn: u16,
    /// TDX TCB components (TDX TCB info only).
    pub tdx: Option<[u8; 16]>,
    pub status: TcbStatus,
    pub advisory_ids: Vec<String>,
    pub tcb_date: String,
}

/// Expected TDX module signer and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TdxModule {
    pub mrsigner: [u8; 48],
    pub attributes: [u8; 8],
    pub attributes_mask: [u8; 8],
}

/// A TCB level of a TDX module identity, or of the QE identity (ISVSVN only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SvnLevel {
    pub isv_svn: u16,
    pub status: TcbStatus,
    pub advisory_ids: Vec<String>,
    pub tcb_date: String,
}

/// A TDX module identity (`TDX_01`, `TDX_03`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TdxModuleIdentity {
    pub id: String,
    pub module: TdxModule,
    pub levels: Vec<SvnLevel>,
}

/// A parsed, signature-checked TCB info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcbInfo {
    pub kind: TeeKind,
    pub id: String,
    pub version: u32,
    pub issue_date: u64,
    pub next_update: u64,
    pub fmspc: [u8; 6],
    pub pce_id: [u8; 2],
    pub evaluation_data_number: u32,
    pub tdx_module: Option<TdxModule>,
    pub tdx_module_identities: Vec<TdxModuleIdentity>,
    /// Sorted newest first (by SGX components, PCESVN, then TDX components, all descending).
    pub levels: Vec<TcbLevel>,
}

/// A parsed, signature-checked QE identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QeIdentity {
    pub id: String,
    pub version: u32,
    pub issue_date: u64,
    pub next_update: u64,
    pub miscselect: u32,
    pub miscselect_mask: u32,
    pub attributes: [u8; 16],
    pub attributes_mask: [u8; 16],
    pub mrsigner: [u8; 32],
    pub isv_prod_id: u16,
    /// Sorted by ISVSVN, highest first.
    pub levels: Vec<SvnLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfoJson {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tcb_evaluation_data_number: u32,
    #[serde(default)]
    tdx_module: Option<TdxModuleJson>,
    #[serde(default)]
    tdx_module_identities: Vec<TdxModuleIdentityJson>,
    tcb_levels: Vec<TcbLevelJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TdxModuleJson {
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TdxModuleIdentityJson {
    id: String,
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
    tcb_levels: Vec<SvnLevelJson>,
}

#[derive(Deserialize)]
struct IsvSvnJson {
    isvsvn: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SvnLevelJson {
    tcb: IsvSvnJson,
    tcb_date: String,
    tcb_status: String,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbLevelJson {
    tcb: TcbJson,
    tcb_date: String,
    tcb_status: String,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
struct TcbJson {
    sgxtcbcomponents: Vec<ComponentJson>,
    pcesvn: u16,
    #[serde(default)]
    tdxtcbcomponents: Option<Vec<ComponentJson>>,
}

#[derive(Deserialize)]
struct ComponentJson {
    svn: u8,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentityJson {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<SvnLevelJson>,
}

fn malformed(doc: &str, what: impl std::fmt::Display) -> TdxVerifyError {
    TdxVerifyError::CollateralMalformed(format!("{doc}: {what}"))
}

fn hex_array<const N: usize>(doc: &str, field: &str, s: &str) -> Result<[u8; N], TdxVerifyError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| malformed(doc, format!("{field} is not {N} bytes of hex")))?;
    Ok(out)
}

fn date(doc: &str, field: &str, s: &str) -> Result<u64, TdxVerifyError> {
    parse_rfc3339(s).ok_or_else(|| malformed(doc, format!("{field} {s:?} is not an RFC 3339 time")))
}

fn status(doc: &str, s: &str) -> Result<TcbStatus, TdxVerifyError> {
    TcbStatus::from_intel(s).ok_or_else(|| malformed(doc, format!("unknown TCB status {s:?}")))
}

fn components(doc: &str, c: &[ComponentJson]) -> Result<[u8; 16], TdxVerifyError> {
    if c.len() != 16 {
        return Err(malformed(doc, format!("a TCB level has {} components, expected 16", c.len())));
    }
    let mut out = [0u8; 16];
    for (o, c) in out.iter_mut().zip(c) {
        *o = c.svn;
    }
    Ok(out)
}

fn svn_levels(doc: &str, levels: Vec<SvnLevelJson>) -> Result<Vec<SvnLevel>, TdxVerifyError> {
    let mut out = levels
        .into_iter()
        .map(|l| {
            Ok(SvnLevel {
                isv_svn: l.tcb.isvsvn,
                status: status(doc, &l.tcb_status)?,
                advisory_ids: l.advisory_ids,
                tcb_date: l.tcb_date,
            })
        })
        .collect::<Result<Vec<_>, TdxVerifyError>>()?;
    out.sort_by_key(|l| std::cmp::Reverse(l.isv_svn));
    Ok(out)
}

impl TcbInfo {
    pub fn parse(text: &str) -> Result<Self, TdxVerifyError> {
        const DOC: &str = "TCB info";
        let j: TcbInfoJson = serde_json::from_str(text).map_err(|e| malformed(DOC, e))?;
        let kind = match j.id.as_str() {
            "TDX" => TeeKind::Tdx,
            "SGX" => TeeKind::Sgx,
            other => return Err(malformed(DOC, format!("unknown id {other:?}"))),
        };
        if j.version != 3 {
            return Err(malformed(DOC, format!("version {} is not supported (expected 3)", j.version)));
        }
        let module = |m: &TdxModuleJson| -> Result<TdxModule, TdxVerifyError> {
            Ok(TdxModule {
                mrsigner: hex_array(DOC, "tdxModule.mrsigner", &m.mrsigner)?,
                attributes: hex_array(DOC, "tdxModule.attributes", &m.attributes)?,
                attributes_mask: hex_array(DOC, "tdxModule.attributesMask", &m.attributes_mask)?,
            })
        };
        let tdx_module = j.tdx_module.as_ref().map(module).transpose()?;
        let mut tdx_module_identities = Vec::with_capacity(j.tdx_module_identities.len());
        for m in j.tdx_module_identities {
            let module = TdxModule {
                mrsigner: hex_array(DOC, "tdxModuleIdentities.mrsigner", &m.mrsigner)?,
                attributes: hex_array(DOC, "tdxModuleIdentities.attributes", &m.attributes)?,
                attributes_mask: hex_array(DOC, "tdxModuleIdentities.attributesMask", &m.attributes_mask)?,
            };
            tdx_module_identities.push(TdxModuleIdentity { id: m.id, module, levels: svn_levels(DOC, m.tcb_levels)? });
        }
        if kind == TeeKind::Tdx && tdx_module.is_none() {
            return Err(malformed(DOC, "TDX TCB info without tdxModule"));
        }
        let mut levels = Vec::with_capacity(j.tcb_levels.len());
        for l in j.tcb_levels {
            let tdx = match (kind, &l.tcb.tdxtcbcomponents) {
                (TeeKind::Tdx, Some(c)) => Some(components(DOC, c)?),
                (TeeKind::Tdx, None) => return Err(malformed(DOC, "a TDX TCB level has no tdxtcbcomponents")),
                (TeeKind::Sgx, _) => None,
            };
            levels.push(TcbLevel {
                sgx: components(DOC, &l.tcb.sgxtcbcomponents)?,
                pce_svn: l.tcb.pcesvn,
                tdx,
                status: status(DOC, &l.tcb_status)?,
                advisory_ids: l.advisory_ids,
                tcb_date: l.tcb_date,
            });
        }
        // Newest first, independent of the JSON order (as Intel's QVL orders them).
        levels.sort_by(|a, b| b.sgx.cmp(&a.sgx).then(b.pce_svn.cmp(&a.pce_svn)).then(b.tdx.cmp(&a.tdx)));
        Ok(Self {
            kind,
            issue_date: date(DOC, "issueDate", &j.issue_date)?,
            next_update: date(DOC, "nextUpdate", &j.next_update)?,
            fmspc: hex_array(DOC, "fmspc", &j.fmspc)?,
            pce_id: hex_array(DOC, "pceId", &j.pce_id)?,
            id: j.id,
            version: j.version,
            evaluation_data_number: j.tcb_evaluation_data_number,
            tdx_module,
            tdx_module_identities,
            levels,
        })
    }
}

impl QeIdentity {
    pub fn parse(text: &str) -> Result<Self, TdxVerifyError> {
        const DOC: &str = "QE identity";
        let j: QeIdentityJson = serde_json::from_str(text).map_err(|e| malformed(DOC, e))?;
        let u32_hex = |field: &str, s: &str| -> Result<u32, TdxVerifyError> {
            Ok(u32::from_be_bytes(hex_array::<4>(DOC, field, s)?))
        };
        Ok(Self {
            issue_date: date(DOC, "issueDate", &j.issue_date)?,
            next_update: date(DOC, "nextUpdate", &j.next_update)?,
            miscselect: u32_hex("miscselect", &j.miscselect)?,
            miscselect_mask: u32_hex("miscselectMask", &j.miscselect_mask)?,
            attributes: hex_array(DOC, "attributes", &j.attributes)?,
            attributes_mask: hex_array(DOC, "attributesMask", &j.attributes_mask)?,
            mrsigner: hex_array(DOC, "mrsigner", &j.mrsigner)?,
            isv_prod_id: j.isvprodid,
            levels: svn_levels(DOC, j.tcb_levels)?,
            id: j.id,
            version: j.version,
        })
    }
}

/// Serde helper: `Vec<u8>` as a hex string (either case accepted).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s.trim()).map_err(serde::de::Error::custom)
    }
}
