//! QEMU: the argv builder, the capability probe and the process manager.

pub mod argv;
pub mod caps;
pub mod process;
