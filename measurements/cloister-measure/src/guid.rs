//! GUIDs as they are stored in firmware images (the little-endian "bytes_le" form).

use std::fmt;

/// A GUID in its on-disk, mixed-endian form (as `uuid.UUID.bytes_le` in Python).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    /// Builds a GUID from its textual fields, e.g. `96b582de-1fb2-45f7-baea-a366c55a082d`
    /// is `Guid::from_fields(0x96b582de, 0x1fb2, 0x45f7, [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d])`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]])
    }

    /// Wraps 16 bytes already in on-disk order.
    pub const fn from_bytes_le(bytes: [u8; 16]) -> Self {
        Guid(bytes)
    }

    /// The 16 bytes in on-disk order.
    pub const fn as_bytes_le(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Well-known GUIDs of the OVMF footer table and the QEMU kernel-hashes table.
pub mod known {
    use super::Guid;

    /// Footer entry of the OVMF GUID table (`96b582de-1fb2-45f7-baea-a366c55a082d`).
    pub const OVMF_TABLE_FOOTER: Guid =
        Guid::from_fields(0x96b582de, 0x1fb2, 0x45f7, [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]);
    /// SEV-ES AP reset block (`00f771de-1a7e-4fcb-890e-68c77e2fb44e`).
    pub const SEV_ES_RESET_BLOCK: Guid =
        Guid::from_fields(0x00f771de, 0x1a7e, 0x4fcb, [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e]);
    /// SEV hashes-table location (`7255371f-3a3b-4b04-927b-1da6efa8d454`).
    pub const SEV_HASH_TABLE_RV: Guid =
        Guid::from_fields(0x7255371f, 0x3a3b, 0x4b04, [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54]);
    /// SEV metadata (`dc886566-984a-4798-a75e-5585a7bf67cc`).
    pub const OVMF_SEV_METADATA: Guid =
        Guid::from_fields(0xdc886566, 0x984a, 0x4798, [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc]);
    /// SEV secret block (`4c2eb361-7d9b-4cc3-8081-127c90d3d294`).
    pub const SEV_SECRET_BLOCK: Guid =
        Guid::from_fields(0x4c2eb361, 0x7d9b, 0x4cc3, [0x80, 0x81, 0x12, 0x7c, 0x90, 0xd3, 0xd2, 0x94]);
    /// TDX metadata offset (`e47a6535-984a-4798-865e-4685a7bf8ec2`).
    pub const TDX_METADATA_OFFSET: Guid =
        Guid::from_fields(0xe47a6535, 0x984a, 0x4798, [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2]);
    /// The GUID that precedes the `TDVF` descriptor (`e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae`).
    pub const TDX_METADATA: Guid =
        Guid::from_fields(0xe9eaf9f3, 0x168e, 0x44d5, [0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae]);
    /// IGVM parameter area (`784fa70e-3176-4677-8a20-04b68699e374`).
    pub const IGVM_PARAM_AREA: Guid =
        Guid::from_fields(0x784fa70e, 0x3176, 0x4677, [0x8a, 0x20, 0x04, 0xb6, 0x86, 0x99, 0xe3, 0x74]);
    /// Coconut-SVSM info (`a789a612-0597-4c4b-a49f-cbb1fe9d1ddd`).
    pub const SVSM_INFO: Guid =
        Guid::from_fields(0xa789a612, 0x0597, 0x4c4b, [0xa4, 0x9f, 0xcb, 0xb1, 0xfe, 0x9d, 0x1d, 0xdd]);

    /// Header of QEMU's SEV kernel-hashes table (`9438d606-4f22-4cc9-b479-a793d411fd21`).
    pub const SEV_HASH_TABLE_HEADER: Guid =
        Guid::from_fields(0x9438d606, 0x4f22, 0x4cc9, [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21]);
    /// Kernel entry of the hashes table (`4de79437-abd2-427f-b835-d5b172d2045b`).
    pub const SEV_KERNEL_ENTRY: Guid =
        Guid::from_fields(0x4de79437, 0xabd2, 0x427f, [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b]);
    /// Initrd entry of the hashes table (`44baf731-3a2f-4bd7-9af1-41e29169781d`).
    pub const SEV_INITRD_ENTRY: Guid =
        Guid::from_fields(0x44baf731, 0x3a2f, 0x4bd7, [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d]);
    /// Command-line entry of the hashes table (`97d02dd8-bd20-4c94-aa78-e7714d36ab2a`).
    pub const SEV_CMDLINE_ENTRY: Guid =
        Guid::from_fields(0x97d02dd8, 0xbd20, 0x4c94, [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_guid_bytes_le_and_display() {
        // Bytes as found at the end of edk2 images (and as Python's uuid bytes_le gives them).
        let expect = [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d];
        assert_eq!(known::OVMF_TABLE_FOOTER.as_bytes_le(), &expect);
        assert_eq!(known::OVMF_TABLE_FOOTER.to_string(), "96b582de-1fb2-45f7-baea-a366c55a082d");
    }
}
