//! SEV-SNP launch digest (and the VMSA pages shared with SEV-ES).
//!
//! The digest is a chain: every measured page updates `LD = SHA-384(PAGE_INFO)` where PAGE_INFO
//! holds the previous LD, the page's contents digest, its type and gpa. Pages are measured in the
//! order QEMU/KVM issues `SNP_LAUNCH_UPDATE`: firmware, SEV metadata sections in file order, then one
//! VMSA per vCPU. Bit-exact with sev-snp-measure 0.0.13, including its quirks (EC2's deferred CPUID
//! page and RDX = 0x600, GCE's unmeasured pages, the SVSM VMSA's zero x87 FCW).
//!
//! Firmware pages are hashed in parallel (they are independent), then chained; the chain itself is
//! the only serial part.

use crate::digest::{Sha384Digest, sha384, sha384_pages};
use crate::error::Error;
use crate::hashes::KernelHashes;
use crate::ovmf::{FirmwareImage, SevSectionType};

const PAGE: usize = 4096;
/// The gpa recorded for VMSA pages: −1, page-aligned, bits above 51 cleared.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// The BSP's reset EIP.
pub const BSP_EIP: u32 = 0xffff_fff0;

/// SNP page types used in PAGE_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Measured contents.
    Normal = 1,
    /// A vCPU save area.
    Vmsa = 2,
    /// Zero page.
    Zero = 3,
    /// Unmeasured page (GCE's SNP_SEC_MEM).
    Unmeasured = 4,
    /// The secrets page.
    Secrets = 5,
    /// The CPUID page.
    Cpuid = 6,
}

/// The hypervisor whose initial vCPU state is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmType {
    /// QEMU/KVM.
    Qemu,
    /// Amazon EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl VmmType {
    /// Parses the sev-snp-measure spelling (`QEMU`, `ec2`, `gce`).
    pub fn from_name(s: &str) -> Result<Self, Error> {
        match s {
            "QEMU" => Ok(Self::Qemu),
            "ec2" => Ok(Self::Ec2),
            "gce" => Ok(Self::Gce),
            _ => Err(Error::UnknownVmmType(s.to_owned())),
        }
    }

    /// The sev-snp-measure spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "QEMU",
            Self::Ec2 => "ec2",
            Self::Gce => "gce",
        }
    }
}

/// CPUID leaf 1 EAX for a family/model/stepping (AMD CPUID specification #25481).
pub const fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf { (0xf, (family - 0xf) & 0xff) } else { (family, 0) };
    (family_high << 20) | (((model >> 4) & 0xf) << 16) | (family_low << 8) | ((model & 0xf) << 4) | (stepping & 0xf)
}

/// QEMU CPU models (the `builtin_x86_defs` EPYC family) and their signatures. The first 16 names
/// are those sev-snp-measure 0.0.13 knows; the Turin versions after them are QEMU aliases.
const VCPU_TYPES: &[(&str, u32)] = &[
    ("EPYC", cpu_sig(23, 1, 2)),
    ("EPYC-v1", cpu_sig(23, 1, 2)),
    ("EPYC-v2", cpu_sig(23, 1, 2)),
    ("EPYC-IBPB", cpu_sig(23, 1, 2)),
    ("EPYC-v3", cpu_sig(23, 1, 2)),
    ("EPYC-v4", cpu_sig(23, 1, 2)),
    ("EPYC-Rome", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v1", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v2", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v3", cpu_sig(23, 49, 0)),
    ("EPYC-Milan", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v1", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v2", cpu_sig(25, 1, 1)),
    ("EPYC-Genoa", cpu_sig(25, 17, 0)),
    ("EPYC-Genoa-v1", cpu_sig(25, 17, 0)),
    ("EPYC-Turin", cpu_sig(26, 0, 0)),
    ("EPYC-Turin-v1", cpu_sig(26, 0, 0)),
    ("EPYC-Turin-v2", cpu_sig(26, 0, 0)),
];

/// Signature of a named QEMU CPU model.
pub fn vcpu_type_sig(name: &str) -> Result<u32, Error> {
    VCPU_TYPES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).ok_or_else(|| Error::UnknownVcpuType(name.to_owned()))
}

/// Names of the QEMU CPU models whose signature is known.
pub fn vcpu_type_names() -> Vec<&'static str> {
    VCPU_TYPES.iter().map(|(n, _)| *n).collect()
}

/// How the user named the guest vCPU: the precedence of sev-snp-measure 0.0.13 is
/// family/model/stepping, then the raw signature, then the QEMU model name; a zero family or
/// signature counts as not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VcpuSpec {
    /// CPU family (with model and stepping).
    pub family: Option<u32>,
    /// CPU model.
    pub model: Option<u32>,
    /// CPU stepping.
    pub stepping: Option<u32>,
    /// CPUID leaf 1 EAX.
    pub sig: Option<u64>,
    /// QEMU CPU model name.
    pub type_name: Option<String>,
}

impl VcpuSpec {
    /// The signature, or `None` if nothing was given.
    pub fn resolve(&self) -> Result<Option<u64>, Error> {
        if let Some(f) = self.family.filter(|f| *f != 0) {
            let (Some(m), Some(s)) = (self.model, self.stepping) else {
                return Err(Error::IncompleteVcpuModel);
            };
            return Ok(Some(u64::from(cpu_sig(f, m, s))));
        }
        if let Some(s) = self.sig.filter(|s| *s != 0) {
            return Ok(Some(s));
        }
        match &self.type_name {
            Some(n) => vcpu_type_sig(n).map(|s| Some(u64::from(s))),
            None => Ok(None),
        }
    }
}

/// A running SNP launch digest (the guest context's LD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDigest(Sha384Digest);

impl Default for LaunchDigest {
    fn default() -> Self {
        LaunchDigest(Sha384Digest::ZERO)
    }
}

impl LaunchDigest {
    /// Starts from a given value (an "OVMF hash" seed).
    pub fn from_seed(seed: Sha384Digest) -> Self {
        LaunchDigest(seed)
    }

    /// The current value.
    pub fn value(&self) -> Sha384Digest {
        self.0
    }

    /// One PAGE_INFO update.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: &Sha384Digest) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(self.0.as_bytes());
        info[48..96].copy_from_slice(contents.as_bytes());
        info[0x60..0x62].copy_from_slice(&0x70u16.to_le_bytes());
        info[0x62] = page_type as u8;
        // is_imi, VMPL3..1 permissions and the reserved byte stay 0.
        info[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
        self.0 = sha384(&info);
    }

    /// Measures `data` (named `what` in errors) as NORMAL pages from `gpa` upwards, hashing pages
    /// on up to `threads` threads.
    pub fn update_normal_pages(
        &mut self,
        what: &'static str,
        gpa: u64,
        data: &[u8],
        threads: usize,
    ) -> Result<(), Error> {
        if !data.len().is_multiple_of(PAGE) {
            return Err(Error::NotPageMultiple { what, len: data.len() });
        }
        for (i, d) in sha384_pages(data, threads).iter().enumerate() {
            self.update(PageType::Normal, gpa.wrapping_add((i * PAGE) as u64), d);
        }
        Ok(())
    }

    /// Measures `len` bytes from `gpa` as pages of a contents-less type (zero, unmeasured).
    pub fn update_empty_pages(&mut self, page_type: PageType, gpa: u64, len: u64) -> Result<(), Error> {
        if !len.is_multiple_of(PAGE as u64) {
            return Err(Error::NotPageMultiple { what: "metadata section", len: len as usize });
        }
        let mut off = 0u64;
        while off < len {
            self.update(page_type, gpa.wrapping_add(off), &Sha384Digest::ZERO);
            off += PAGE as u64;
        }
        Ok(())
    }

    /// Measures one VMSA page.
    pub fn update_vmsa(&mut self, vmsa: &[u8; PAGE]) {
        self.update(PageType::Vmsa, VMSA_GPA, &sha384(vmsa));
    }
}

/// A VMCB segment register: selector, attributes, limit, base.
#[derive(Debug, Clone, Copy)]
struct Seg(u16, u16, u32, u64);

/// Builder of a 4 KiB VMSA page (AMD APM vol. 2, "VMSA layout"; Linux `struct sev_es_save_area`).
struct VmsaPage([u8; PAGE]);

impl VmsaPage {
    fn new() -> Self {
        VmsaPage([0u8; PAGE])
    }
    fn seg(&mut self, off: usize, s: Seg) {
        self.0[off..off + 2].copy_from_slice(&s.0.to_le_bytes());
        self.0[off + 2..off + 4].copy_from_slice(&s.1.to_le_bytes());
        self.0[off + 4..off + 8].copy_from_slice(&s.2.to_le_bytes());
        self.0[off + 8..off + 16].copy_from_slice(&s.3.to_le_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
}

mod off {
    pub const ES: usize = 0x000;
    pub const CS: usize = 0x010;
    pub const SS: usize = 0x020;
    pub const DS: usize = 0x030;
    pub const FS: usize = 0x040;
    pub const GS: usize = 0x050;
    pub const GDTR: usize = 0x060;
    pub const LDTR: usize = 0x070;
    pub const IDTR: usize = 0x080;
    pub const TR: usize = 0x090;
    pub const EFER: usize = 0x0d0;
    pub const CR4: usize = 0x148;
    pub const CR0: usize = 0x158;
    pub const DR7: usize = 0x160;
    pub const DR6: usize = 0x168;
    pub const RFLAGS: usize = 0x170;
    pub const RIP: usize = 0x178;
    pub const G_PAT: usize = 0x268;
    pub const RDX: usize = 0x310;
    pub const SEV_FEATURES: usize = 0x3b0;
    pub const XCR0: usize = 0x3e8;
    pub const MXCSR: usize = 0x408;
    pub const X87_FCW: usize = 0x410;
}

const DEFAULT_G_PAT: u64 = 0x0007_0406_0007_0406;

/// The initial save area of a vCPU starting at `eip`, as the given hypervisor sets it up.
/// `vcpu_sig` is ignored for EC2 and GCE (which load a fixed RDX).
pub fn vmsa_page(eip: u32, sev_features: u64, vcpu_sig: u64, vmm: VmmType) -> [u8; PAGE] {
    let (cs_attr, ss_attr, tr_attr, rdx, mxcsr, fcw, g_pat) = match vmm {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, vcpu_sig, 0x1f80, 0x37f, DEFAULT_G_PAT),
        VmmType::Ec2 => (if eip == BSP_EIP { 0x9a } else { 0x9b }, 0x92, 0x83, 0x600, 0, 0, DEFAULT_G_PAT),
        VmmType::Gce => (0x9b, 0x93, 0x8b, 0x600, 0, 0, 0x0007_0106),
    };
    let mut p = VmsaPage::new();
    p.seg(off::ES, Seg(0, 0x93, 0xffff, 0));
    p.seg(off::CS, Seg(0xf000, cs_attr, 0xffff, u64::from(eip & 0xffff_0000)));
    p.seg(off::SS, Seg(0, ss_attr, 0xffff, 0));
    p.seg(off::DS, Seg(0, 0x93, 0xffff, 0));
    p.seg(off::FS, Seg(0, 0x93, 0xffff, 0));
    p.seg(off::GS, Seg(0, 0x93, 0xffff, 0));
    p.seg(off::GDTR, Seg(0, 0, 0xffff, 0));
    p.seg(off::IDTR, Seg(0, 0, 0xffff, 0));
    p.seg(off::LDTR, Seg(0, 0x82, 0xffff, 0));
    p.seg(off::TR, Seg(0, tr_attr, 0xffff, 0));
    p.u64(off::EFER, 0x1000);
    p.u64(off::CR4, 0x40);
    p.u64(off::CR0, 0x10);
    p.u64(off::DR7, 0x400);
    p.u64(off::DR6, 0xffff_0ff0);
    p.u64(off::RFLAGS, 0x2);
    p.u64(off::RIP, u64::from(eip & 0xffff));
    p.u64(off::G_PAT, g_pat);
    p.u64(off::RDX, rdx);
    p.u64(off::SEV_FEATURES, sev_features);
    p.u64(off::XCR0, 0x1);
    p.u32(off::MXCSR, mxcsr);
    p.u16(off::X87_FCW, fcw);
    p.0
}

/// The save area every vCPU starts with under a Coconut-SVSM (flat 32-bit segments, entry at the
/// SVSM's start address). SEV_FEATURES is always SNPActive; X87_FCW stays 0 (a quirk of
/// sev-snp-measure 0.0.13 that its published vectors include).
pub fn svsm_vmsa_page(eip: u64, vcpu_sig: u64) -> [u8; PAGE] {
    let mut p = VmsaPage::new();
    let data = Seg(16, 0xc93, 0xffff_ffff, 0);
    p.seg(off::ES, data);
    p.seg(off::CS, Seg(8, 0xc9b, 0xffff_ffff, 0));
    p.seg(off::SS, data);
    p.seg(off::DS, data);
    p.seg(off::FS, data);
    p.seg(off::GS, Seg(0, 0x93, 0xffff, 0));
    p.seg(off::GDTR, Seg(0, 0, 0xffff, 0));
    p.seg(off::IDTR, Seg(0, 0, 0xffff, 0));
    p.seg(off::LDTR, Seg(0, 0x82, 0xffff, 0));
    p.seg(off::TR, Seg(0, 0x8b, 0xffff, 0));
    p.u64(off::EFER, 0x1000);
    p.u64(off::CR4, 0x40);
    p.u64(off::CR0, 0x11);
    p.u64(off::DR7, 0x400);
    p.u64(off::DR6, 0xffff_0ff0);
    p.u64(off::RFLAGS, 0x2);
    p.u64(off::RIP, eip);
    p.u64(off::G_PAT, DEFAULT_G_PAT);
    p.u64(off::RDX, vcpu_sig);
    p.u64(off::SEV_FEATURES, 0x1);
    p.u64(off::XCR0, 0x1);
    p.u32(off::MXCSR, 0x1f80);
    p.0
}

/// The VMSA pages of a launch with `vcpus` vCPUs (BSP first, then identical APs).
/// `sev_features` is 0 for SEV-ES. Without an AP reset EIP only the BSP page exists.
pub fn vmsa_pages(
    fw: &FirmwareImage<'_>,
    vcpus: u32,
    vcpu_sig: u64,
    sev_features: u64,
    vmm: VmmType,
) -> Result<Vec<[u8; PAGE]>, Error> {
    let ap_eip = fw.sev_es_reset_eip()?;
    let bsp = vmsa_page(BSP_EIP, sev_features, vcpu_sig, vmm);
    let ap = (ap_eip != 0).then(|| vmsa_page(ap_eip, sev_features, vcpu_sig, vmm));
    let mut pages = Vec::with_capacity(vcpus as usize);
    for i in 0..vcpus {
        match (i, &ap) {
            (0, _) => pages.push(bsp),
            (_, Some(ap)) => pages.push(*ap),
            // sev-snp-measure would fail on a missing AP area; so do we, with a clear error.
            (_, None) => {
                return Err(Error::MissingTableEntry {
                    what: "non-zero SEV-ES AP reset EIP (needed for more than one vCPU)",
                    guid: crate::guid::known::SEV_ES_RESET_BLOCK,
                });
            }
        }
    }
    Ok(pages)
}

/// Everything an SNP launch digest depends on besides the firmware bytes.
#[derive(Debug, Clone)]
pub struct SnpParams {
    /// Number of vCPUs (at least 1).
    pub vcpus: u32,
    /// CPUID leaf 1 EAX of the guest vCPUs (required for QEMU, ignored by EC2/GCE).
    pub vcpu_sig: Option<u64>,
    /// SEV_FEATURES the host kernel sets (sev-snp-measure defaults to 0x1).
    pub guest_features: u64,
    /// The hypervisor.
    pub vmm: VmmType,
    /// Kernel/initrd/cmdline digests for measured direct boot.
    pub kernel_hashes: Option<KernelHashes>,
    /// A precomputed firmware ("OVMF hash") digest: seeds the chain and skips the firmware pages.
    pub ovmf_hash: Option<Sha384Digest>,
    /// Threads for page hashing (1 = serial).
    pub threads: usize,
}

impl SnpParams {
    /// QEMU defaults: 1 vCPU, guest features 0x1, no kernel.
    pub fn qemu(vcpus: u32, vcpu_sig: u32) -> Self {
        SnpParams {
            vcpus,
            vcpu_sig: Some(u64::from(vcpu_sig)),
            guest_features: 0x1,
            vmm: VmmType::Qemu,
            kernel_hashes: None,
            ovmf_hash: None,
            threads: crate::digest::default_threads(),
        }
    }

    fn sig(&self) -> Result<u64, Error> {
        match (self.vmm, self.vcpu_sig) {
            (VmmType::Qemu, None) => Err(Error::MissingVcpuSignature),
            (_, s) => Ok(s.unwrap_or(0)),
        }
    }
}

/// The firmware part of the chain alone (`--mode snp:ovmf-hash`): seed for [`SnpParams::ovmf_hash`].
pub fn ovmf_hash(fw: &FirmwareImage<'_>, threads: usize) -> Result<Sha384Digest, Error> {
    let mut ld = LaunchDigest::default();
    ld.update_normal_pages("firmware image", fw.gpa(), fw.data(), threads)?;
    Ok(ld.value())
}

/// Measures the SEV metadata sections (file order; EC2 defers CPUID pages to the end).
fn update_metadata(
    ld: &mut LaunchDigest,
    fw: &FirmwareImage<'_>,
    hashes: Option<&KernelHashes>,
    vmm: VmmType,
) -> Result<(), Error> {
    let mut has_kernel_hashes = false;
    for (index, s) in fw.sev_metadata().iter().enumerate() {
        let t = s.section_type().ok_or(Error::UnknownSevSection { index, section_type: s.raw_type })?;
        let (gpa, size) = (u64::from(s.gpa), u64::from(s.size));
        match t {
            SevSectionType::SnpSecMem if vmm == VmmType::Gce => {
                ld.update_empty_pages(PageType::Unmeasured, gpa, size)?
            }
            SevSectionType::SnpSecMem | SevSectionType::SvsmCaa => ld.update_empty_pages(PageType::Zero, gpa, size)?,
            SevSectionType::SnpSecrets => ld.update(PageType::Secrets, gpa, &Sha384Digest::ZERO),
            SevSectionType::Cpuid if vmm != VmmType::Ec2 => ld.update(PageType::Cpuid, gpa, &Sha384Digest::ZERO),
            SevSectionType::Cpuid => {}
            SevSectionType::SnpKernelHashes => {
                has_kernel_hashes = true;
                match hashes {
                    Some(h) => {
                        let table_gpa = fw.sev_hashes_table_gpa()?;
                        if s.size as usize != PAGE {
                            return Err(Error::KernelHashesSectionSize { size: s.size });
                        }
                        let at = (table_gpa & 0xfff) as usize;
                        let table = h.table();
                        let mut page = [0u8; PAGE];
                        page.get_mut(at..at + table.len())
                            .ok_or(Error::KernelHashesCrossPage { offset: table_gpa & 0xfff })?
                            .copy_from_slice(&table);
                        ld.update(PageType::Normal, gpa, &sha384(&page));
                    }
                    None => ld.update_empty_pages(PageType::Zero, gpa, size)?,
                }
            }
        }
    }
    if vmm == VmmType::Ec2 {
        for s in fw.sev_metadata() {
            if s.section_type() == Some(SevSectionType::Cpuid) {
                ld.update(PageType::Cpuid, u64::from(s.gpa), &Sha384Digest::ZERO);
            }
        }
    }
    if hashes.is_some() && !has_kernel_hashes {
        return Err(Error::KernelHashesUnsupported { reason: "no SNP_KERNEL_HASHES section in its SEV metadata" });
    }
    Ok(())
}

/// The SEV-SNP launch digest (`--mode snp`).
pub fn launch_digest(fw: &FirmwareImage<'_>, p: &SnpParams) -> Result<Sha384Digest, Error> {
    launch_digest_with_vmsas(fw, p).map(|(d, _)| d)
}

/// The SEV-SNP launch digest and the VMSA pages that entered it (for `--dump-vmsa`).
pub fn launch_digest_with_vmsas(
    fw: &FirmwareImage<'_>,
    p: &SnpParams,
) -> Result<(Sha384Digest, Vec<[u8; PAGE]>), Error> {
    if p.vcpus == 0 {
        return Err(Error::ZeroVcpus);
    }
    let sig = p.sig()?;
    let mut ld = match p.ovmf_hash {
        Some(seed) => LaunchDigest::from_seed(seed),
        None => {
            let mut ld = LaunchDigest::default();
            ld.update_normal_pages("firmware image", fw.gpa(), fw.data(), p.threads)?;
            ld
        }
    };
    update_metadata(&mut ld, fw, p.kernel_hashes.as_ref(), p.vmm)?;
    let vmsas = vmsa_pages(fw, p.vcpus, sig, p.guest_features, p.vmm)?;
    // All APs share one save area: hash each distinct page once, chain it once per vCPU.
    let bsp = vmsas.first().map(|v| sha384(v));
    let ap = vmsas.get(1).map(|v| sha384(v));
    for i in 0..vmsas.len() {
        if let Some(d) = if i == 0 { bsp } else { ap } {
            ld.update(PageType::Vmsa, VMSA_GPA, &d);
        }
    }
    Ok((ld.value(), vmsas))
}

/// The SEV-SNP launch digest of OVMF running under a Coconut-SVSM (`--mode snp:svsm`, QEMU only).
/// The SVSM image ends `vars_size` bytes below the firmware; its own table supplies the SEV
/// metadata and the entry point.
pub fn svsm_launch_digest(
    ovmf: &[u8],
    svsm: &[u8],
    vars_size: u64,
    vcpus: u32,
    vcpu_sig: u64,
    threads: usize,
) -> Result<(Sha384Digest, Vec<[u8; PAGE]>), Error> {
    if vcpus == 0 {
        return Err(Error::ZeroVcpus);
    }
    let ovmf = FirmwareImage::parse(ovmf)?;
    let end = ovmf
        .gpa()
        .checked_sub(vars_size)
        .filter(|e| *e >= svsm.len() as u64)
        .ok_or(Error::SvsmLayout { svsm_len: svsm.len(), end: ovmf.gpa().wrapping_sub(vars_size) })?;
    let svsm = FirmwareImage::parse_ending_at(svsm, end)?;
    let entry = svsm.table_u32(&crate::guid::known::SVSM_INFO, "SVSM info")?;
    let eip = u64::from(entry).wrapping_add(svsm.gpa());
    let mut ld = LaunchDigest::default();
    ld.update_normal_pages("firmware image", ovmf.gpa(), ovmf.data(), threads)?;
    ld.update_normal_pages("SVSM image", svsm.gpa(), svsm.data(), threads)?;
    update_metadata(&mut ld, &svsm, None, VmmType::Qemu)?;
    let page = svsm_vmsa_page(eip, vcpu_sig);
    let d = sha384(&page);
    for _ in 0..vcpus {
        ld.update(PageType::Vmsa, VMSA_GPA, &d);
    }
    Ok((ld.value(), vec![page; vcpus as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_signatures() {
        assert_eq!(vcpu_type_sig("EPYC-v4"), Ok(0x800f12));
        assert_eq!(vcpu_type_sig("EPYC-Rome"), Ok(0x830f10));
        assert_eq!(vcpu_type_sig("EPYC-Milan"), Ok(0xa00f11));
        assert_eq!(vcpu_type_sig("EPYC-Genoa"), Ok(0xa10f10));
        assert_eq!(vcpu_type_sig("EPYC-Turin"), Ok(0xb00f00));
        assert!(matches!(vcpu_type_sig("Skylake"), Err(Error::UnknownVcpuType(_))));
    }

    #[test]
    fn vcpu_spec_precedence() {
        let spec = |family, sig, name: Option<&str>| VcpuSpec {
            family,
            model: Some(17),
            stepping: Some(0),
            sig,
            type_name: name.map(str::to_owned),
        };
        assert_eq!(spec(Some(25), Some(7), Some("EPYC")).resolve(), Ok(Some(0xa10f10)));
        assert_eq!(spec(Some(0), Some(7), Some("EPYC")).resolve(), Ok(Some(7)));
        assert_eq!(spec(None, Some(0), Some("EPYC")).resolve(), Ok(Some(0x800f12)));
        assert_eq!(spec(None, None, None).resolve(), Ok(None));
        let partial = VcpuSpec { family: Some(25), ..VcpuSpec::default() };
        assert_eq!(partial.resolve(), Err(Error::IncompleteVcpuModel));
    }

    #[test]
    fn vmsa_layout_qemu_bsp() {
        let p = vmsa_page(BSP_EIP, 0x21, 0x800f12, VmmType::Qemu);
        assert_eq!(&p[0x10..0x20], &[0, 0xf0, 0x9b, 0, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(u64::from_le_bytes(p[0x178..0x180].try_into().unwrap_or_default()), 0xfff0);
        assert_eq!(u64::from_le_bytes(p[0x310..0x318].try_into().unwrap_or_default()), 0x800f12);
        assert_eq!(u64::from_le_bytes(p[0x3b0..0x3b8].try_into().unwrap_or_default()), 0x21);
        assert_eq!(u16::from_le_bytes([p[0x410], p[0x411]]), 0x37f);
    }

    #[test]
    fn page_info_chain_step() {
        // One step computed by hand: SHA-384 of the 0x70-byte PAGE_INFO.
        let mut ld = LaunchDigest::default();
        ld.update(PageType::Secrets, 0x80d000, &Sha384Digest::ZERO);
        let mut info = [0u8; 0x70];
        info[0x60] = 0x70;
        info[0x62] = 5;
        info[0x68..0x70].copy_from_slice(&0x80d000u64.to_le_bytes());
        assert_eq!(ld.value(), sha384(&info));
    }
}
