//! SEV-SNP launch digest.

/// Names of the QEMU CPU models whose signature is known.
pub fn vcpu_type_names() -> Vec<&'static str> {
    Vec::new()
}
