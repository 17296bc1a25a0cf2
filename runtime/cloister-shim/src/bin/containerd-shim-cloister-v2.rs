//! `containerd-shim-cloister-v2`: containerd starts it as `io.containerd.cloister.v2` (or a
//! handler alias such as `containerd-shim-cloister-qemu-snp-v2`, which selects
//! `/etc/cloister/runtime/cloister-qemu-snp.toml`). All logic is in the library.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() {
    // The shim waits for its own children (QEMU, probes): neither a reaper that would take their
    // exit statuses nor a subreaper that would collect other processes' orphans.
    let config = containerd_shim::Config { no_reaper: true, no_sub_reaper: true, ..Default::default() };
    containerd_shim::asynchronous::run::<cloister_shim::Shim>("io.containerd.cloister.v2", Some(config)).await;
}
