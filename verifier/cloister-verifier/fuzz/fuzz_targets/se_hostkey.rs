//! IBM Z host-key documents, certificates and CRLs are read from files an operator was handed:
//! the PEM/DER splitter, the certificate and CRL decoders and the chain walk must refuse any
//! bytes with an error, never a panic. The input is used as a root, an intermediate, a CRL and
//! the document itself.
#![no_main]

use cloister_verifier::se::hostkey::{HostKeyAuthority, HostKeyRoot, pem_or_der_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for der in pem_or_der_all(data, "CERTIFICATE").into_iter().take(4) {
        let mut a = HostKeyAuthority::new();
        if let Ok(b) = a.clone().with_root(&der, HostKeyRoot::Emulated) {
            a = b;
        }
        if let Ok(b) = a.clone().with_cert(&der) {
            a = b;
        }
        if let Ok(b) = a.clone().with_crl(&der) {
            a = b;
        }
        let _ = a.verify(&der, 1_700_000_000);
    }
});
