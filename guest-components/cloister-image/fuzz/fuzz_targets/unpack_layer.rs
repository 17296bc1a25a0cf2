//! Arbitrary tar bytes into an empty directory: never a panic, and never a write outside it
//! (the directory sits inside a sentinel directory that must stay otherwise empty).
#![no_main]

use cloister_image::Digest;
use cloister_image::unpack::{UnpackOptions, unpack_layer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(outer) = tempfile::tempdir() else { return };
    let root = outer.path().join("layer");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    let _ = unpack_layer(Digest::of(b"fuzz"), data, &root, UnpackOptions { same_owner: false });
    let names: Vec<_> = std::fs::read_dir(outer.path()).map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect()).unwrap_or_default();
    assert_eq!(names.len(), 1, "wrote outside the layer directory: {names:?}");
});
