//! Trust anchors for SEV-SNP: the pinned AMD roots (ARK) of Milan, Genoa and Turin with their
//! intermediates (ASK, ASVK), plus roots a caller names explicitly (e.g. an emulated TEE's root).
//!
//! **What it trusts:** exactly the roots in a [`TrustAnchors`] value. Built-in certificates come
//! from [`super::amd_certs`] and are accepted only if their SHA-256 equals the pinned value; an
//! extra root is accepted only with the SHA-256 the caller states. Intermediates (ASK/ASVK) are
//! not trusted by themselves: every chain verification checks the ARK's signature on them.

use std::fmt;
use std::sync::Arc;

use cloister_evidence::snp::Product;

use super::amd_certs as amd;
use super::cert::{CertInfo, PublicKey, ders_from_pem_or_der, sha256};
use super::error::SnpVerifyError;

/// One root of trust.
#[derive(Clone, Debug)]
pub(crate) struct Anchor {
    /// The product whose reports it signs (selects the TCB layout and hwID length).
    pub product: Product,
    /// Built into the library (pinned AMD root) rather than added by the caller.
    pub builtin: bool,
    /// The root certificate.
    pub ark: Arc<CertInfo>,
    /// Intermediates shipped with the root (ASK, ASVK), still verified under the ARK when used.
    pub intermediates: Vec<Arc<CertInfo>>,
}

/// A public description of a root in a [`TrustAnchors`] set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootInfo {
    /// Product.
    pub product: Product,
    /// Subject common name of the root.
    pub subject: String,
    /// SHA-256 of the root's DER, lowercase hex.
    pub sha256: String,
    /// True for the built-in AMD roots.
    pub builtin: bool,
}

/// The set of roots a verifier accepts. Chains must end at one of them; nothing else is trusted.
#[derive(Clone)]
pub struct TrustAnchors {
    pub(crate) anchors: Vec<Anchor>,
    id: [u8; 32],
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.roots()).finish()
    }
}

fn decode_hex32(s: &str) -> Result<[u8; 32], SnpVerifyError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|e| SnpVerifyError::TrustAnchor(format!("fingerprint {s:?} is not 64 hex digits: {e}")))?;
    Ok(out)
}

/// Parses one PEM constant and checks its pinned fingerprint.
fn builtin_cert(pem: &str, pinned_hex: &str, what: &str) -> Result<Arc<CertInfo>, SnpVerifyError> {
    let ders = ders_from_pem_or_der(pem.as_bytes()).map_err(|e| SnpVerifyError::TrustAnchor(format!("{what}: {e}")))?;
    let [der] = ders.as_slice() else {
        return Err(SnpVerifyError::TrustAnchor(format!("{what}: expected one certificate")));
    };
    let pinned = decode_hex32(pinned_hex)?;
    if sha256(der) != pinned {
        return Err(SnpVerifyError::TrustAnchor(format!("{what}: SHA-256 differs from the pinned value")));
    }
    let info = CertInfo::parse(der).map_err(|e| SnpVerifyError::TrustAnchor(format!("{what}: {e}")))?;
    Ok(Arc::new(info))
}

/// The built-in (ARK, ASK, ASVK) PEMs and pinned fingerprints of a product.
fn builtin_pems(product: Product) -> [(&'static str, &'static str, &'static str); 3] {
    match product {
        Product::Milan => [
            (amd::MILAN_ARK_PEM, amd::MILAN_ARK_SHA256, "ARK-Milan"),
            (amd::MILAN_ASK_PEM, amd::MILAN_ASK_SHA256, "SEV-Milan"),
            (amd::MILAN_ASVK_PEM, amd::MILAN_ASVK_SHA256, "SEV-VLEK-Milan"),
        ],
        Product::Genoa => [
            (amd::GENOA_ARK_PEM, amd::GENOA_ARK_SHA256, "ARK-Genoa"),
            (amd::GENOA_ASK_PEM, amd::GENOA_ASK_SHA256, "SEV-Genoa"),
            (amd::GENOA_ASVK_PEM, amd::GENOA_ASVK_SHA256, "SEV-VLEK-Genoa"),
        ],
        Product::Turin => [
            (amd::TURIN_ARK_PEM, amd::TURIN_ARK_SHA256, "ARK-Turin"),
            (amd::TURIN_ASK_PEM, amd::TURIN_ASK_SHA256, "SEV-Turin"),
            (amd::TURIN_ASVK_PEM, amd::TURIN_ASVK_SHA256, "SEV-VLEK-Turin"),
        ],
    }
}

impl TrustAnchors {
    /// The pinned AMD roots of every product (Milan, Genoa, Turin) with their ASK and ASVK.
    pub fn amd() -> Result<Self, SnpVerifyError> {
        Self::amd_for(&Product::ALL)
    }

    /// The pinned AMD roots of the given products only.
    pub fn amd_for(products: &[Product]) -> Result<Self, SnpVerifyError> {
        let mut anchors = Self::empty();
        for &product in products {
            if anchors.anchors.iter().any(|a| a.builtin && a.product == product) {
                continue;
            }
            let [ark, ask, asvk] = builtin_pems(product);
            let ark = builtin_cert(ark.0, ark.1, ark.2)?;
            let intermediates = vec![builtin_cert(ask.0, ask.1, ask.2)?, builtin_cert(asvk.0, asvk.1, asvk.2)?];
            anchors.anchors.push(Anchor { product, builtin: true, ark, intermediates });
        }
        anchors.recompute_id();
        Ok(anchors)
    }

    /// No roots at all (every chain fails until roots are added).
    pub fn empty() -> Self {
        let mut a = Self { anchors: Vec::new(), id: [0; 32] };
        a.recompute_id();
        a
    }

    /// Adds a root the caller names explicitly, e.g. the emulated TEE's root: `root` is one
    /// certificate (DER or PEM) whose SHA-256 must equal `sha256_hex`; reports chaining to it are
    /// treated as reports of `product`. The root must hold an RSA key (AMD's chain format).
    pub fn with_root(mut self, product: Product, root: &[u8], sha256_hex: &str) -> Result<Self, SnpVerifyError> {
        let ders = ders_from_pem_or_der(root).map_err(SnpVerifyError::TrustAnchor)?;
        let [der] = ders.as_slice() else {
            return Err(SnpVerifyError::TrustAnchor(format!("expected one root certificate, got {}", ders.len())));
        };
        let pinned = decode_hex32(sha256_hex)?;
        let actual = sha256(der);
        if actual != pinned {
            return Err(SnpVerifyError::TrustAnchor(format!(
                "root SHA-256 is {}, not the named {}",
                hex::encode(actual),
                hex::encode(pinned)
            )));
        }
        let ark = CertInfo::parse(der).map_err(SnpVerifyError::TrustAnchor)?;
        if !matches!(ark.key, PublicKey::Rsa(_)) {
            return Err(SnpVerifyError::TrustAnchor("root key is not RSA".to_string()));
        }
        if !self.anchors.iter().any(|a| a.ark.sha256 == actual && a.product == product) {
            self.anchors.push(Anchor { product, builtin: false, ark: Arc::new(ark), intermediates: Vec::new() });
        }
        self.recompute_id();
        Ok(self)
    }

    /// The roots in this set.
    pub fn roots(&self) -> Vec<RootInfo> {
        self.anchors
            .iter()
            .map(|a| RootInfo {
                product: a.product,
                subject: a.ark.subject_cn.clone(),
                sha256: hex::encode(a.ark.sha256),
                builtin: a.builtin,
            })
            .collect()
    }

    /// True when the set has no roots.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// An identifier of the set: SHA-256 over the sorted (product, built-in, root SHA-256)
    /// entries. Part of the verified-VEK cache key.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    fn recompute_id(&mut self) {
        let mut entries: Vec<Vec<u8>> = self
            .anchors
            .iter()
            .map(|a| {
                let mut e = a.product.name().as_bytes().to_vec();
                e.push(u8::from(a.builtin));
                e.extend_from_slice(&a.ark.sha256);
                e
            })
            .collect();
        entries.sort();
        self.id = sha256(&entries.concat());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprints in `PROVENANCE.md` §1.1, typed independently of `amd_certs`.
    const PROVENANCE: [(&str, &str); 9] = [
        ("ARK-Milan", "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"),
        ("SEV-Milan", "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b"),
        ("SEV-VLEK-Milan", "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5"),
        ("ARK-Genoa", "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"),
        ("SEV-Genoa", "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521"),
        ("SEV-VLEK-Genoa", "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372"),
        ("ARK-Turin", "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"),
        ("SEV-Turin", "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185"),
        ("SEV-VLEK-Turin", "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c"),
    ];

    #[test]
    fn builtin_certificates_match_provenance() {
        let anchors = TrustAnchors::amd().unwrap();
        assert_eq!(anchors.anchors.len(), 3);
        let mut seen = 0;
        for a in &anchors.anchors {
            for c in std::iter::once(&a.ark).chain(a.intermediates.iter()) {
                let (_, fp) = PROVENANCE.iter().find(|(cn, _)| *cn == c.subject_cn).unwrap();
                assert_eq!(hex::encode(c.sha256), *fp, "{}", c.subject_cn);
                assert!(c.pss.is_ok());
                assert!(c.signed_by(&a.ark), "{} is signed by {}", c.subject_cn, a.ark.subject_cn);
                seen += 1;
            }
            assert!(a.ark.self_issued());
            assert!(a.ark.subject_cn.ends_with(a.product.name()));
        }
        assert_eq!(seen, 9);
    }

    #[test]
    fn builtin_certificates_match_fixture_files() {
        let Some(root) = std::env::var_os("CLOISTER_FIXTURES").filter(|v| !v.is_empty()) else {
            eprintln!("skipping builtin_certificates_match_fixture_files: CLOISTER_FIXTURES is not set");
            return;
        };
        let dir = std::path::Path::new(&root).join("evidence");
        let anchors = TrustAnchors::amd().unwrap();
        for (product, file) in [
            (Product::Milan, "virtee-sev/builtin_milan_ark.pem"),
            (Product::Genoa, "virtee-sev/builtin_genoa_ark.pem"),
            (Product::Turin, "virtee-sev/builtin_turin_ark.pem"),
        ] {
            let ders = ders_from_pem_or_der(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            let a = anchors.anchors.iter().find(|a| a.product == product).unwrap();
            assert_eq!(sha256(&ders[0]), a.ark.sha256, "{file}");
        }
    }

    #[test]
    fn extra_root_must_be_named() {
        let milan_ark = amd::MILAN_ARK_PEM.as_bytes();
        let wrong = "00".repeat(32);
        assert!(matches!(
            TrustAnchors::empty().with_root(Product::Milan, milan_ark, &wrong),
            Err(SnpVerifyError::TrustAnchor(_))
        ));
        let a = TrustAnchors::empty().with_root(Product::Milan, milan_ark, amd::MILAN_ARK_SHA256).unwrap();
        assert_eq!(a.roots().len(), 1);
        assert!(!a.roots()[0].builtin);
        assert_ne!(a.id(), TrustAnchors::empty().id());
        assert_ne!(a.id(), TrustAnchors::amd_for(&[Product::Milan]).unwrap().id());
    }
}
