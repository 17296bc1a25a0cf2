//! The SEV-SNP extended-report certificate table (GHCB specification; `SNP_GET_EXT_REPORT`,
//! configfs-tsm `auxblob`): 24-byte entries `{GUID, u32 offset, u32 length}` ending with an
//! all-zero entry, then the DER blobs; offsets count from the start of the table. One layout
//! shared by the verifier (reading), the emulated platform and tests (writing).

/// A GUID in its stored (mixed-endian) byte order.
pub type Guid = [u8; 16];

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// ARK entry.
pub const GUID_ARK: Guid = guid(0xc0b406a4, 0xa803, 0x4952, [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae]);
/// ASK entry.
pub const GUID_ASK: Guid = guid(0x4ab7b379, 0xbbac, 0x4fe4, [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82]);
/// VCEK entry.
pub const GUID_VCEK: Guid = guid(0x63da758d, 0xe664, 0x4564, [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd]);
/// VLEK entry.
pub const GUID_VLEK: Guid = guid(0xa8074bc2, 0xa25a, 0x483e, [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1]);
/// CRL entry.
pub const GUID_CRL: Guid = guid(0x92f81bc3, 0x5811, 0x4d3d, [0x97, 0xff, 0xd1, 0x9f, 0x88, 0xdc, 0x67, 0xea]);

/// Serialises `(guid, blob)` entries into a table.
pub fn build(entries: &[(Guid, &[u8])]) -> Vec<u8> {
    let mut offset = (entries.len() + 1) * 24;
    let mut table = Vec::new();
    let mut blobs = Vec::new();
    for (g, der) in entries {
        table.extend_from_slice(g);
        table.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes());
        table.extend_from_slice(&u32::try_from(der.len()).unwrap_or(u32::MAX).to_le_bytes());
        blobs.extend_from_slice(der);
        offset += der.len();
    }
    table.extend_from_slice(&[0u8; 24]);
    table.extend_from_slice(&blobs);
    table
}

/// Parses a table into `(guid, blob)` entries, or says why it is malformed.
pub fn parse(table: &[u8]) -> Result<Vec<(Guid, &[u8])>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let entry = table.get(pos..pos + 24).ok_or("no terminating entry")?;
        if entry.iter().all(|b| *b == 0) {
            return Ok(out);
        }
        let mut g = [0u8; 16];
        g.copy_from_slice(&entry[..16]);
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        let blob = offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| format!("entry {} points outside the table", pos / 24))?;
        out.push((g, blob));
        pos += 24;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_mixed_endian_and_tables_round_trip() {
        assert_eq!(hex::encode(GUID_ARK), "a406b4c003a8524997433fb6014cd0ae");
        let t = build(&[(GUID_VCEK, b"vcek"), (GUID_ASK, b"ask")]);
        assert_eq!(parse(&t).unwrap(), vec![(GUID_VCEK, &b"vcek"[..]), (GUID_ASK, &b"ask"[..])]);
        assert!(parse(&t[..30]).is_err());
        let mut bad = t.clone();
        bad[16] = 0xff;
        assert!(parse(&bad).unwrap_err().contains("outside"));
    }
}
