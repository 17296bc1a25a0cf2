//! The SNP report as the `sev` crate (virtio/sev ≥ 6) serialises it with serde — the shape CoCo's
//! guest-components put in trustee's SNP evidence (`{"attestation_report": {…}, "cert_chain": […]}`).
//! Byte arrays are JSON arrays of numbers, TCB versions objects `{fmc?, bootloader, tee, snp,
//! microcode}`, policy / platform info / key info plain numbers, the signature `{r, s}`.
//!
//! The conversion rebuilds the 1184 raw bytes (reserved bytes zero), so the signature is still
//! checked over bytes, not over a re-interpretation; any field that does not fit makes it fail.

use serde_json::Value;

use super::types::{
    ChipId, Cpuid, FamilyId, FirmwareVersion, GuestPolicy, HostData, ImageId, KeyDigest, KeyInfo, Measurement,
    PlatformInfo, ReportData, ReportId, ReportSignature, TcbLayout, TcbParts, TcbVersion,
};
use super::{REPORT_SIZE, ReportFields};

/// Why a `sev`-crate JSON report could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sev-crate report JSON: field {field}: {problem}")]
pub struct SevJsonError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> SevJsonError {
    SevJsonError { field, problem: problem.into() }
}

fn get<'a>(v: &'a Value, field: &'static str) -> Result<&'a Value, SevJsonError> {
    v.get(field).ok_or_else(|| err(field, "missing"))
}

fn uint(v: &Value, field: &'static str, max: u64) -> Result<u64, SevJsonError> {
    let n = get(v, field)?.as_u64().ok_or_else(|| err(field, "not an unsigned integer"))?;
    if n > max {
        return Err(err(field, format!("{n} is out of range")));
    }
    Ok(n)
}

fn opt_uint(v: &Value, field: &'static str, max: u64) -> Result<Option<u64>, SevJsonError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => uint(v, field, max).map(Some),
    }
}

fn bytes<const N: usize>(v: &Value, field: &'static str) -> Result<[u8; N], SevJsonError> {
    let a = get(v, field)?.as_array().ok_or_else(|| err(field, "not an array of bytes"))?;
    if a.len() != N {
        return Err(err(field, format!("{} bytes, not {N}", a.len())));
    }
    let mut out = [0u8; N];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x.as_u64().and_then(|b| u8::try_from(b).ok()).ok_or_else(|| err(field, "element is not a byte"))?;
    }
    Ok(out)
}

fn tcb_parts(v: &Value, field: &'static str) -> Result<TcbParts, SevJsonError> {
    let t = get(v, field)?;
    let b = |f: &'static str| -> Result<u8, SevJsonError> {
        t.get(f)
            .and_then(Value::as_u64)
            .and_then(|x| u8::try_from(x).ok())
            .ok_or_else(|| err(field, format!("{f} is not a byte")))
    };
    let fmc = match t.get("fmc") {
        None | Some(Value::Null) => None,
        Some(x) => Some(x.as_u64().and_then(|x| u8::try_from(x).ok()).ok_or_else(|| err(field, "fmc is not a byte"))?),
    };
    Ok(TcbParts { fmc, bootloader: b("bootloader")?, tee: b("tee")?, snp: b("snp")?, microcode: b("microcode")? })
}

fn version(v: &Value, field: &'static str) -> Result<FirmwareVersion, SevJsonError> {
    let t = get(v, field)?;
    let b = |f: &'static str| -> Result<u8, SevJsonError> {
        t.get(f)
            .and_then(Value::as_u64)
            .and_then(|x| u8::try_from(x).ok())
            .ok_or_else(|| err(field, format!("{f} is not a byte")))
    };
    Ok(FirmwareVersion { major: b("major")?, minor: b("minor")?, build: b("build")? })
}

/// Rebuilds the raw report from the `sev` crate's serde JSON.
pub fn report_from_sev_json(v: &Value) -> Result<[u8; REPORT_SIZE], SevJsonError> {
    let tcbs = ["current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"].map(|f| tcb_parts(v, f));
    let [current, reported, committed, launch] = tcbs;
    let (current, reported, committed, launch) = (current?, reported?, committed?, launch?);
    let family = opt_uint(v, "cpuid_fam_id", 0xff)?;
    // Turin and later carry an FMC SVN; the TCB layout follows the product.
    let layout = if family.is_some_and(|f| f >= 0x1a) || reported.fmc.is_some() {
        TcbLayout::Turin
    } else {
        TcbLayout::MilanGenoa
    };
    let cpuid = match (family, opt_uint(v, "cpuid_mod_id", 0xff)?, opt_uint(v, "cpuid_step", 0xff)?) {
        (Some(f), Some(m), Some(s)) => Some(Cpuid { family: f as u8, model: m as u8, stepping: s as u8 }),
        (None, None, None) => None,
        _ => return Err(err("cpuid_fam_id", "CPUID fields must be all present or all absent")),
    };
    let sig = get(v, "signature")?;
    let fields = ReportFields {
        version: uint(v, "version", u64::from(u32::MAX))? as u32,
        guest_svn: uint(v, "guest_svn", u64::from(u32::MAX))? as u32,
        policy: GuestPolicy(uint(v, "policy", u64::MAX)?),
        family_id: FamilyId(bytes(v, "family_id")?),
        image_id: ImageId(bytes(v, "image_id")?),
        vmpl: uint(v, "vmpl", u64::from(u32::MAX))? as u32,
        signature_algo: uint(v, "sig_algo", u64::from(u32::MAX))? as u32,
        current_tcb: TcbVersion::from_parts(layout, current),
        platform_info: PlatformInfo(uint(v, "plat_info", u64::MAX)?),
        key_info: KeyInfo(uint(v, "key_info", u64::from(u32::MAX))? as u32),
        report_data: ReportData(bytes(v, "report_data")?),
        measurement: Measurement(bytes(v, "measurement")?),
        host_data: HostData(bytes(v, "host_data")?),
        id_key_digest: KeyDigest(bytes(v, "id_key_digest")?),
        author_key_digest: KeyDigest(bytes(v, "author_key_digest")?),
        report_id: ReportId(bytes(v, "report_id")?),
        report_id_ma: ReportId(bytes(v, "report_id_ma")?),
        reported_tcb: TcbVersion::from_parts(layout, reported),
        cpuid,
        chip_id: ChipId(bytes(v, "chip_id")?),
        committed_tcb: TcbVersion::from_parts(layout, committed),
        current_version: version(v, "current")?,
        committed_version: version(v, "committed")?,
        launch_tcb: TcbVersion::from_parts(layout, launch),
        launch_mit_vector: opt_uint(v, "launch_mit_vector", u64::MAX)?,
        current_mit_vector: opt_uint(v, "current_mit_vector", u64::MAX)?,
        signature: ReportSignature { r: bytes(sig, "r")?, s: bytes(sig, "s")? },
    };
    Ok(fields.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_shapes() {
        assert_eq!(report_from_sev_json(&serde_json::json!({})).unwrap_err().field, "current_tcb");
        let mut v = serde_json::json!({"current_tcb": {"bootloader": 1, "tee": 0, "snp": 0, "microcode": 0}});
        for f in ["reported_tcb", "committed_tcb", "launch_tcb"] {
            v[f] = v["current_tcb"].clone();
        }
        assert_eq!(report_from_sev_json(&v).unwrap_err().field, "signature");
        v["current_tcb"]["tee"] = serde_json::json!(300);
        assert_eq!(report_from_sev_json(&v).unwrap_err().field, "current_tcb");
    }
}
