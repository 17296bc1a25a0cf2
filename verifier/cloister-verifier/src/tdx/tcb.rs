//! TCB appraisal: matching the platform (PCK certificate SVNs, TEE_TCB_SVN) against the levels of
//! a signature-checked TCB info, the TDX module identity, the QE identity, and combining the
//! statuses the way Intel's Quote Verification Library does.
//!
//! **What it trusts:** the TCB info and QE identity it is given have already been verified (signed
//! by the TCB signing chain, inside their validity window); the SVNs come from a verified PCK
//! certificate and a signature-checked quote.

use std::fmt;

use serde::{Serialize, Serializer};

use cloister_evidence::tdx::{EnclaveReport, TdReport10};

use super::cert::PckExtension;
use super::collateral::{QeIdentity, SvnLevel, TcbInfo, TcbLevel, TdxModule};
use super::error::TdxVerifyError;

/// The TCB status of a platform, QE, or the combination reported for a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcbStatus {
    /// The platform is patched to the latest TCB.
    UpToDate,
    /// Patched, but software hardening (e.g. against a side channel) is also needed.
    SwHardeningNeeded,
    /// Patched, but the platform configuration needs changes (e.g. a BIOS setting).
    ConfigurationNeeded,
    /// Both of the previous two.
    ConfigurationAndSwHardeningNeeded,
    /// The TCB is out of date: known vulnerabilities apply.
    OutOfDate,
    /// Out of date, and the configuration needs changes.
    OutOfDateConfigurationNeeded,
    /// The TCB is revoked: its keys are compromised. Never accepted.
    Revoked,
    /// TD 1.5: launched on an out-of-date TCB but now running on a current one; relaunch the TD.
    TdRelaunchAdvised,
    /// As `TdRelaunchAdvised`, and the configuration needs changes.
    TdRelaunchAdvisedConfigurationNeeded,
}

impl TcbStatus {
    /// Intel's name of the status.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UpToDate => "UpToDate",
            Self::SwHardeningNeeded => "SWHardeningNeeded",
            Self::ConfigurationNeeded => "ConfigurationNeeded",
            Self::ConfigurationAndSwHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            Self::OutOfDate => "OutOfDate",
            Self::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            Self::Revoked => "Revoked",
            Self::TdRelaunchAdvised => "TDRelaunchAdvised",
            Self::TdRelaunchAdvisedConfigurationNeeded => "TDRelaunchAdvisedConfigurationNeeded",
        }
    }

    /// Parses a status as written in TCB info / QE identity documents.
    pub fn from_intel(s: &str) -> Option<Self> {
        Some(match s {
            "UpToDate" => Self::UpToDate,
            "SWHardeningNeeded" => Self::SwHardeningNeeded,
            "ConfigurationNeeded" => Self::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => Self::ConfigurationAndSwHardeningNeeded,
            "OutOfDate" => Self::OutOfDate,
            "OutOfDateConfigurationNeeded" => Self::OutOfDateConfigurationNeeded,
            "Revoked" => Self::Revoked,
            "TDRelaunchAdvised" => Self::TdRelaunchAdvised,
            "TDRelaunchAdvisedConfigurationNeeded" => Self::TdRelaunchAdvisedConfigurationNeeded,
            _ => return None,
        })
    }

    fn needs_configuration(self) -> bool {
        matches!(
            self,
            Self::ConfigurationNeeded
                | Self::ConfigurationAndSwHardeningNeeded
                | Self::OutOfDateConfigurationNeeded
                | Self::TdRelaunchAdvisedConfigurationNeeded
        )
    }

    /// The status of a platform after taking a component's (QE or TDX module) status into account:
    /// only a component that is out of date or revoked changes it.
    pub(crate) fn with_component(self, component: Self) -> Self {
        match (component, self) {
            (Self::Revoked, _) => Self::Revoked,
            (Self::OutOfDate, Self::UpToDate | Self::SwHardeningNeeded) => Self::OutOfDate,
            (Self::OutOfDate, Self::ConfigurationNeeded | Self::ConfigurationAndSwHardeningNeeded) => {
                Self::OutOfDateConfigurationNeeded
            }
            _ => self,
        }
    }

    /// TD 1.5: the launch status given the status of the TCB the TD runs on now.
    pub(crate) fn with_current(self, current: Self) -> Self {
        let launch_out_of_date = matches!(self, Self::OutOfDate | Self::OutOfDateConfigurationNeeded);
        let current_fine = matches!(
            current,
            Self::UpToDate
                | Self::SwHardeningNeeded
                | Self::ConfigurationNeeded
                | Self::ConfigurationAndSwHardeningNeeded
        );
        if !(launch_out_of_date && current_fine) {
            return self;
        }
        if self.needs_configuration() || current.needs_configuration() {
            Self::TdRelaunchAdvisedConfigurationNeeded
        } else {
            Self::TdRelaunchAdvised
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TcbStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

const PLATFORM_STATUSES: &[TcbStatus] = &[
    TcbStatus::UpToDate,
    TcbStatus::SwHardeningNeeded,
    TcbStatus::ConfigurationNeeded,
    TcbStatus::ConfigurationAndSwHardeningNeeded,
    TcbStatus::OutOfDate,
    TcbStatus::OutOfDateConfigurationNeeded,
    TcbStatus::Revoked,
];
const MODULE_STATUSES: &[TcbStatus] = &[TcbStatus::UpToDate, TcbStatus::OutOfDate, TcbStatus::Revoked];
const QE_STATUSES: &[TcbStatus] = &[
    TcbStatus::UpToDate,
    TcbStatus::OutOfDate,
    TcbStatus::ConfigurationNeeded,
    TcbStatus::OutOfDateConfigurationNeeded,
    TcbStatus::Revoked,
];

fn allowed(status: TcbStatus, set: &[TcbStatus], structure: &'static str) -> Result<TcbStatus, TdxVerifyError> {
    if set.contains(&status) { Ok(status) } else { Err(TdxVerifyError::TcbStatusInvalid { status, structure }) }
}

/// A status with its advisories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appraisal {
    pub status: TcbStatus,
    pub advisory_ids: Vec<String>,
    pub tcb_date: String,
}

impl Appraisal {
    fn from_level(status: TcbStatus, advisory_ids: &[String], tcb_date: &str) -> Self {
        Self { status, advisory_ids: advisory_ids.to_vec(), tcb_date: tcb_date.to_string() }
    }

    /// Folds a component (QE, TDX module) into this appraisal.
    pub fn with_component(mut self, status: TcbStatus, advisory_ids: &[String]) -> Self {
        self.status = self.status.with_component(status);
        for a in advisory_ids {
            if !self.advisory_ids.contains(a) {
                self.advisory_ids.push(a.clone());
            }
        }
        self
    }
}

/// The first (newest) level the platform meets. For TDX, TDX components 0 and 1 are left to the
/// TDX module identity when the module version (`TEE_TCB_SVN[1]`) is non-zero.
fn platform_level<'a>(
    info: &'a TcbInfo,
    pck: &PckExtension,
    tee_tcb_svn: Option<&[u8; 16]>,
) -> Result<&'a TcbLevel, TdxVerifyError> {
    let meets = |level: &TcbLevel| -> bool {
        let sgx_ok = pck.tcb_components.iter().zip(&level.sgx).all(|(have, need)| have >= need);
        let tdx_ok = match (tee_tcb_svn, &level.tdx) {
            (None, _) => true,
            (Some(svn), Some(need)) => {
                let skip = if svn[1] > 0 { 2 } else { 0 };
                svn.iter().zip(need).skip(skip).all(|(have, need)| have >= need)
            }
            (Some(_), None) => false,
        };
        sgx_ok && pck.pce_svn >= level.pce_svn && tdx_ok
    };
    info.levels.iter().find(|l| meets(l)).ok_or(TdxVerifyError::TcbLevelNotSupported)
}

/// The module identity for a non-zero module version (`TEE_TCB_SVN[1]`).
fn module_identity<'a>(
    info: &'a TcbInfo,
    tee_tcb_svn: &[u8; 16],
) -> Result<Option<&'a super::collateral::TdxModuleIdentity>, TdxVerifyError> {
    let version = tee_tcb_svn[1];
    if version == 0 {
        return Ok(None);
    }
    let id = format!("TDX_{version:02X}");
    info.tdx_module_identities
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(&id))
        .map(Some)
        .ok_or(TdxVerifyError::TdxModuleUnknown { id })
}

/// Appraises one TEE_TCB_SVN: platform level folded with the TDX module level.
fn appraise_tdx_svn(info: &TcbInfo, pck: &PckExtension, svn: &[u8; 16]) -> Result<Appraisal, TdxVerifyError> {
    let level = platform_level(info, pck, Some(svn))?;
    let status = allowed(level.status, PLATFORM_STATUSES, "TCB info")?;
    let mut appraisal = Appraisal::from_level(status, &level.advisory_ids, &level.tcb_date);
    if let Some(identity) = module_identity(info, svn)? {
        let module_level = identity
            .levels
            .iter()
            .find(|l| u16::from(svn[0]) >= l.isv_svn)
            .ok_or(TdxVerifyError::TdxModuleTcbNotSupported { isv_svn: svn[0] })?;
        let module_status = allowed(module_level.status, MODULE_STATUSES, "TDX module identity")?;
        appraisal = appraisal.with_component(module_status, &module_level.advisory_ids);
        if module_level.tcb_date < appraisal.tcb_date {
            appraisal.tcb_date = module_level.tcb_date.clone();
        }
    }
    Ok(appraisal)
}

/// MRSIGNERSEAM and SEAMATTRIBUTES against the module identity (or the base `tdxModule`).
fn check_module(info: &TcbInfo, td: &TdReport10) -> Result<(), TdxVerifyError> {
    let base: Option<&TdxModule> = info.tdx_module.as_ref();
    let module = match module_identity(info, &td.tee_tcb_svn.0)? {
        Some(identity) => &identity.module,
        None => base.ok_or(TdxVerifyError::TdxModuleMismatch { field: "tdxModule" })?,
    };
    if td.mr_signer_seam.0 != module.mrsigner {
        return Err(TdxVerifyError::TdxModuleMismatch { field: "MRSIGNERSEAM" });
    }
    let attrs = td.seam_attributes.0;
    let masked_ok = attrs.iter().zip(&module.attributes).zip(&module.attributes_mask).all(|((a, e), m)| a & m == e & m);
    let outside_zero = attrs.iter().zip(&module.attributes_mask).all(|(a, m)| a & !m == 0);
    if !masked_ok || !outside_zero {
        return Err(TdxVerifyError::TdxModuleMismatch { field: "SEAMATTRIBUTES" });
    }
    Ok(())
}

/// Platform appraisal of a TDX quote: the launch TCB (`TEE_TCB_SVN`) and, for TD 1.5, the current
/// TCB (`TEE_TCB_SVN2`), which must be appraisable too. Returns (launch, current).
pub(crate) fn appraise_tdx_platform(
    info: &TcbInfo,
    pck: &PckExtension,
    td: &TdReport10,
    tee_tcb_svn2: Option<&[u8; 16]>,
) -> Result<(Appraisal, Option<Appraisal>), TdxVerifyError> {
    let launch = appraise_tdx_svn(info, pck, &td.tee_tcb_svn.0)?;
    check_module(info, td)?;
    let current = tee_tcb_svn2.map(|svn2| appraise_tdx_svn(info, pck, svn2)).transpose()?;
    Ok((launch, current))
}

/// Platform appraisal of an SGX quote.
pub(crate) fn appraise_sgx_platform(info: &TcbInfo, pck: &PckExtension) -> Result<Appraisal, TdxVerifyError> {
    let level = platform_level(info, pck, None)?;
    let status = allowed(level.status, PLATFORM_STATUSES, "TCB info")?;
    Ok(Appraisal::from_level(status, &level.advisory_ids, &level.tcb_date))
}

/// Matches the QE report against the QE identity; returns the QE's TCB level.
pub(crate) fn appraise_qe<'a>(identity: &'a QeIdentity, qe: &EnclaveReport) -> Result<&'a SvnLevel, TdxVerifyError> {
    let mismatch = |field: &'static str| TdxVerifyError::QeIdentityMismatch { field };
    if qe.mr_signer.0 != identity.mrsigner {
        return Err(mismatch("MRSIGNER"));
    }
    if qe.debug() {
        return Err(mismatch("ATTRIBUTES.DEBUG"));
    }
    if qe.isv_prod_id != identity.isv_prod_id {
        return Err(mismatch("ISVPRODID"));
    }
    if qe.misc_select & identity.miscselect_mask != identity.miscselect & identity.miscselect_mask {
        return Err(mismatch("MISCSELECT"));
    }
    let attrs_ok = qe
        .attributes
        .0
        .iter()
        .zip(&identity.attributes)
        .zip(&identity.attributes_mask)
        .all(|((a, e), m)| a & m == e & m);
    if !attrs_ok {
        return Err(mismatch("ATTRIBUTES"));
    }
    let level = identity
        .levels
        .iter()
        .find(|l| qe.isv_svn >= l.isv_svn)
        .ok_or(TdxVerifyError::QeTcbNotSupported { isv_svn: qe.isv_svn })?;
    allowed(level.status, QE_STATUSES, "QE identity")?;
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::TcbStatus::*;
    use super::*;
    use crate::tdx::collateral::TeeKind;

    #[test]
    fn component_convergence() {
        for (platform, component, expected) in [
            (UpToDate, OutOfDate, OutOfDate),
            (SwHardeningNeeded, OutOfDate, OutOfDate),
            (ConfigurationNeeded, OutOfDate, OutOfDateConfigurationNeeded),
            (ConfigurationAndSwHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded),
            (OutOfDateConfigurationNeeded, OutOfDate, OutOfDateConfigurationNeeded),
            (ConfigurationNeeded, Revoked, Revoked),
            (UpToDate, ConfigurationNeeded, UpToDate),
            (SwHardeningNeeded, UpToDate, SwHardeningNeeded),
        ] {
            assert_eq!(platform.with_component(component), expected, "{platform} + {component}");
        }
    }

    #[test]
    fn relaunch() {
        for (launch, current, expected) in [
            (OutOfDate, UpToDate, TdRelaunchAdvised),
            (OutOfDate, SwHardeningNeeded, TdRelaunchAdvised),
            (OutOfDate, ConfigurationNeeded, TdRelaunchAdvisedConfigurationNeeded),
            (OutOfDateConfigurationNeeded, UpToDate, TdRelaunchAdvisedConfigurationNeeded),
            (OutOfDate, OutOfDate, OutOfDate),
            (UpToDate, UpToDate, UpToDate),
            (ConfigurationNeeded, UpToDate, ConfigurationNeeded),
        ] {
            assert_eq!(launch.with_current(current), expected, "{launch} / {current}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            UpToDate,
            SwHardeningNeeded,
            ConfigurationNeeded,
            ConfigurationAndSwHardeningNeeded,
            OutOfDate,
            OutOfDateConfigurationNeeded,
            Revoked,
            TdRelaunchAdvised,
            TdRelaunchAdvisedConfigurationNeeded,
        ] {
            assert_eq!(TcbStatus::from_intel(s.as_str()), Some(s));
        }
        assert_eq!(TcbStatus::from_intel("uptodate"), None);
    }

    fn level(sgx: u8, pce: u16, tdx: u8, status: TcbStatus) -> TcbLevel {
        let mut t = [0u8; 16];
        t[2] = tdx;
        TcbLevel {
            sgx: [sgx; 16],
            pce_svn: pce,
            tdx: Some(t),
            status,
            advisory_ids: vec![format!("SA-{sgx}")],
            tcb_date: String::new(),
        }
    }

    fn info(levels: Vec<TcbLevel>) -> TcbInfo {
        TcbInfo {
            kind: TeeKind::Tdx,
            id: "TDX".into(),
            version: 3,
            issue_date: 0,
            next_update: 0,
            fmspc: [0; 6],
            pce_id: [0; 2],
            evaluation_data_number: 1,
            tdx_module: Some(TdxModule { mrsigner: [0; 48], attributes: [0; 8], attributes_mask: [0xff; 8] }),
            tdx_module_identities: vec![],
            levels,
        }
    }

    fn pck(sgx: u8, pce: u16) -> PckExtension {
        PckExtension { fmspc: [0; 6], pce_id: [0; 2], tcb_components: [sgx; 16], pce_svn: pce, cpu_svn: [sgx; 16] }
    }

    #[test]
    fn first_met_level_wins() {
        let i = info(vec![level(5, 13, 3, UpToDate), level(3, 11, 2, OutOfDate), level(1, 1, 0, Revoked)]);
        let svn = |b2: u8| {
            let mut s = [0u8; 16];
            s[2] = b2;
            s
        };
        let appraise = |p: &PckExtension, s: [u8; 16]| appraise_tdx_svn(&i, p, &s).map(|a| a.status);
        assert_eq!(appraise(&pck(5, 13), svn(3)), Ok(UpToDate));
        assert_eq!(appraise(&pck(5, 13), svn(2)), Ok(OutOfDate), "TDX component below the newest level");
        assert_eq!(appraise(&pck(5, 12), svn(3)), Ok(OutOfDate), "PCESVN below the newest level");
        assert_eq!(appraise(&pck(2, 13), svn(9)), Ok(Revoked));
        assert_eq!(appraise(&pck(0, 13), svn(9)), Err(TdxVerifyError::TcbLevelNotSupported));
    }

    #[test]
    fn module_identity_levels() {
        let mut i = info(vec![level(1, 1, 0, UpToDate)]);
        i.tdx_module_identities.push(super::super::collateral::TdxModuleIdentity {
            id: "TDX_01".into(),
            module: TdxModule { mrsigner: [0; 48], attributes: [0; 8], attributes_mask: [0xff; 8] },
            levels: vec![
                SvnLevel { isv_svn: 4, status: UpToDate, advisory_ids: vec![], tcb_date: String::new() },
                SvnLevel { isv_svn: 2, status: OutOfDate, advisory_ids: vec!["M".into()], tcb_date: String::new() },
            ],
        });
        let mut svn = [0u8; 16];
        svn[1] = 1;
        svn[0] = 4;
        assert_eq!(appraise_tdx_svn(&i, &pck(1, 1), &svn).map(|a| a.status), Ok(UpToDate));
        svn[0] = 3;
        let a = appraise_tdx_svn(&i, &pck(1, 1), &svn).unwrap();
        assert_eq!((a.status, a.advisory_ids), (OutOfDate, vec!["SA-1".to_string(), "M".to_string()]));
        svn[0] = 1;
        assert_eq!(
            appraise_tdx_svn(&i, &pck(1, 1), &svn),
            Err(TdxVerifyError::TdxModuleTcbNotSupported { isv_svn: 1 })
        );
        svn[1] = 3;
        assert_eq!(
            appraise_tdx_svn(&i, &pck(1, 1), &svn),
            Err(TdxVerifyError::TdxModuleUnknown { id: "TDX_03".into() })
        );
    }
}
