//! The shipped handler configurations (`deploy/runtime/*.toml`) parse, one per RuntimeClass
//! handler in `deploy/kubernetes/runtimeclasses.yaml`, each with the TEE its name says.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use cloister_shim::config::{RuntimeConfig, TeeName};

#[test]
fn shipped_handler_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/runtime");
    let classes = std::fs::read_to_string(dir.join("../kubernetes/runtimeclasses.yaml")).unwrap();
    let containerd = std::fs::read_to_string(dir.join("containerd-config.toml")).unwrap();
    for (handler, tee) in [
        ("cloister-qemu", TeeName::None),
        ("cloister-qemu-snp", TeeName::Snp),
        ("cloister-qemu-tdx", TeeName::Tdx),
        ("cloister-qemu-se", TeeName::Se),
        ("cloister-qemu-emulated", TeeName::EmulatedSnp),
        ("cloister-qemu-emulated-tdx", TeeName::EmulatedTdx),
    ] {
        let c = RuntimeConfig::load(&dir.join(format!("{handler}.toml"))).unwrap();
        assert_eq!(c.vm.tee, tee, "{handler}");
        assert!(classes.contains(&format!("handler: {handler}\n")), "{handler} not a RuntimeClass handler");
        assert!(containerd.contains(&format!("runtime_type = \"io.containerd.{handler}.v2\"")), "{handler}");
        assert!(containerd.contains(&format!("ConfigPath = \"/etc/cloister/runtime/{handler}.toml\"")), "{handler}");
    }
}
