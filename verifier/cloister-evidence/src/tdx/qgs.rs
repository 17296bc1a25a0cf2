//! Messages of Intel's TD Quote Generation Service (QGS), which turns a TDREPORT into a quote on
//! the host. A TD guest without configfs-tsm reaches it over vsock (host CID 2, port 4050 by
//! default); QEMU reaches it over a unix socket for the kernel's GetQuote path. Both carry the same
//! framing:
//!
//! * a 4-byte **big-endian** length of the message that follows;
//! * the message: `qgs_msg_header_t` (all little-endian) `{u16 major_version = 1; u16
//!   minor_version; u32 type; u32 size (the whole message, header included); u32 error_code}`,
//!   then for `GET_QUOTE_REQ` (type 0) `{u32 report_size ≠ 0; u32 id_list_size}` followed by the
//!   TDREPORT and the id list, and for `GET_QUOTE_RESP` (type 1) `{u32 selected_id_size; u32
//!   quote_size}` followed by the selected id and the quote.
//!
//! A receiver checks the major version only (minor versions are compatible), the type, that `size`
//! equals the framed length, and that the inner sizes add up exactly.
//!
//! Sources (read to learn the layout, no code taken): Intel DCAP `qgs_msg_lib.h` as reproduced in
//! QEMU's `tdx-quote-generator.c` and Gramine's TDX PAL, and the QGS error codes
//! (`QGS_MSG_ERROR_*`) used there.
//!
//! **What it trusts:** nothing: lengths are checked against the input and against
//! [`MAX_MESSAGE_LEN`] before anything is allocated.

/// Major version of the message library; the only one accepted.
pub const QGS_MAJOR_VERSION: u16 = 1;
/// Minor version sent.
pub const QGS_MINOR_VERSION: u16 = 0;
/// `GET_QUOTE_REQ`.
pub const GET_QUOTE_REQ: u32 = 0;
/// `GET_QUOTE_RESP`.
pub const GET_QUOTE_RESP: u32 = 1;
/// Length of `qgs_msg_header_t`.
pub const HEADER_LEN: usize = 16;
/// Length of the request or response prelude (header and two sizes).
pub const PRELUDE_LEN: usize = HEADER_LEN + 8;
/// Largest message accepted (a quote with its PCK chain is a few KiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// The default vsock port of the QGS on the host.
pub const DEFAULT_VSOCK_PORT: u32 = 4050;

/// `QGS_MSG_SUCCESS`.
pub const QGS_SUCCESS: u32 = 0;
/// `QGS_MSG_ERROR_UNEXPECTED`.
pub const QGS_ERROR_UNEXPECTED: u32 = 0x0001_2001;
/// `QGS_MSG_ERROR_OUT_OF_MEMORY`.
pub const QGS_ERROR_OUT_OF_MEMORY: u32 = 0x0001_2002;
/// `QGS_MSG_ERROR_INVALID_PARAMETER`.
pub const QGS_ERROR_INVALID_PARAMETER: u32 = 0x0001_2003;
/// `QGS_MSG_ERROR_INVALID_VERSION`.
pub const QGS_ERROR_INVALID_VERSION: u32 = 0x0001_2004;
/// `QGS_MSG_ERROR_INVALID_TYPE`.
pub const QGS_ERROR_INVALID_TYPE: u32 = 0x0001_2005;
/// `QGS_MSG_ERROR_INVALID_SIZE`.
pub const QGS_ERROR_INVALID_SIZE: u32 = 0x0001_2006;
/// `QGS_MSG_ERROR_INVALID_CODE`.
pub const QGS_ERROR_INVALID_CODE: u32 = 0x0001_2007;

/// The name of a QGS error code.
pub fn error_name(code: u32) -> &'static str {
    match code {
        QGS_SUCCESS => "success",
        QGS_ERROR_UNEXPECTED => "unexpected error",
        QGS_ERROR_OUT_OF_MEMORY => "out of memory",
        QGS_ERROR_INVALID_PARAMETER => "invalid parameter",
        QGS_ERROR_INVALID_VERSION => "invalid version",
        QGS_ERROR_INVALID_TYPE => "invalid message type",
        QGS_ERROR_INVALID_SIZE => "invalid message size",
        QGS_ERROR_INVALID_CODE => "invalid error code",
        _ => "unknown error",
    }
}

/// Why a QGS message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QgsError {
    /// The length prefix is zero or above [`MAX_MESSAGE_LEN`].
    #[error("QGS frame length {0} is zero or larger than {MAX_MESSAGE_LEN}")]
    FrameLength(usize),
    /// The message is shorter than its prelude.
    #[error("QGS message of {0} bytes is shorter than its {PRELUDE_LEN}-byte prelude")]
    Truncated(usize),
    /// A major version other than 1.
    #[error("QGS message version {major}.{minor}; only major version {QGS_MAJOR_VERSION} is supported")]
    Version {
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// Not the expected message type.
    #[error("QGS message type {found}, expected {expected}")]
    Type {
        /// Expected.
        expected: u32,
        /// Found.
        found: u32,
    },
    /// The header's size does not match the message.
    #[error("QGS header says {declared} bytes, the message has {actual}")]
    Size {
        /// `header.size`.
        declared: u32,
        /// Bytes received.
        actual: usize,
    },
    /// The inner sizes do not add up to the message.
    #[error("QGS {what}: {detail}")]
    Layout {
        /// Which message.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The QGS answered with an error.
    #[error("the quote generation service failed: {} ({code:#x})", error_name(*code))]
    Service {
        /// `header.error_code`.
        code: u32,
    },
}

/// A parsed `GET_QUOTE_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetQuoteRequest {
    /// The TDREPORT.
    pub report: Vec<u8>,
    /// QE identity list (usually empty).
    pub id_list: Vec<u8>,
}

/// A parsed `GET_QUOTE_RESP` that reports success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetQuoteResponse {
    /// The selected QE identity (empty when the request had none).
    pub selected_id: Vec<u8>,
    /// The quote.
    pub quote: Vec<u8>,
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn len_u32(n: usize, what: &'static str) -> Result<u32, QgsError> {
    if n > MAX_MESSAGE_LEN - PRELUDE_LEN {
        return Err(QgsError::Layout { what, detail: format!("{n} bytes is too large") });
    }
    Ok(n as u32)
}

/// A message with its 4-byte big-endian length prefix.
fn frame(ty: u32, error_code: u32, a: u32, b: u32, payload: &[&[u8]]) -> Vec<u8> {
    let size = PRELUDE_LEN + payload.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(&QGS_MAJOR_VERSION.to_le_bytes());
    out.extend_from_slice(&QGS_MINOR_VERSION.to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&error_code.to_le_bytes());
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    for p in payload {
        out.extend_from_slice(p);
    }
    out
}

/// The framed `GET_QUOTE_REQ` for a TDREPORT (length prefix included).
pub fn encode_get_quote_request(report: &[u8], id_list: &[u8]) -> Result<Vec<u8>, QgsError> {
    if report.is_empty() {
        return Err(QgsError::Layout { what: "request", detail: "the report is empty".into() });
    }
    let r = len_u32(report.len(), "request")?;
    let i = len_u32(id_list.len(), "request")?;
    len_u32(report.len() + id_list.len(), "request")?;
    Ok(frame(GET_QUOTE_REQ, QGS_SUCCESS, r, i, &[report, id_list]))
}

/// The framed `GET_QUOTE_RESP` carrying a quote, or only an error code (`quote` empty).
pub fn encode_get_quote_response(error_code: u32, selected_id: &[u8], quote: &[u8]) -> Result<Vec<u8>, QgsError> {
    let s = len_u32(selected_id.len(), "response")?;
    let q = len_u32(quote.len(), "response")?;
    len_u32(selected_id.len() + quote.len(), "response")?;
    Ok(frame(GET_QUOTE_RESP, error_code, s, q, &[selected_id, quote]))
}

/// Checks the 4-byte big-endian length prefix; the message length that follows.
pub fn frame_length(prefix: [u8; 4]) -> Result<usize, QgsError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n == 0 || n > MAX_MESSAGE_LEN {
        return Err(QgsError::FrameLength(n));
    }
    Ok(n)
}

/// Reads one framed message (its length prefix checked) from a stream. A bad prefix is
/// [`std::io::ErrorKind::InvalidData`] wrapping the [`QgsError`].
pub fn read_message<R: std::io::Read>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let n = frame_length(prefix).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut msg = vec![0u8; n];
    r.read_exact(&mut msg)?;
    Ok(msg)
}

/// Checks the header of `msg` (without the length prefix): version, type and size. Returns the
/// error code and the two size fields.
fn header(msg: &[u8], expected: u32) -> Result<(u32, usize, usize), QgsError> {
    if msg.len() < PRELUDE_LEN {
        return Err(QgsError::Truncated(msg.len()));
    }
    let major = u16::from_le_bytes([msg[0], msg[1]]);
    let minor = u16::from_le_bytes([msg[2], msg[3]]);
    if major != QGS_MAJOR_VERSION {
        return Err(QgsError::Version { major, minor });
    }
    let found = u32_le(msg, 4);
    if found != expected {
        return Err(QgsError::Type { expected, found });
    }
    let declared = u32_le(msg, 8);
    if declared as usize != msg.len() {
        return Err(QgsError::Size { declared, actual: msg.len() });
    }
    Ok((u32_le(msg, 12), u32_le(msg, 16) as usize, u32_le(msg, 20) as usize))
}

/// Parses a `GET_QUOTE_REQ` message (without the length prefix).
pub fn decode_get_quote_request(msg: &[u8]) -> Result<GetQuoteRequest, QgsError> {
    let (code, report_size, id_list_size) = header(msg, GET_QUOTE_REQ)?;
    if code != QGS_SUCCESS {
        return Err(QgsError::Layout { what: "request", detail: format!("error code {code:#x} in a request") });
    }
    if report_size == 0 {
        return Err(QgsError::Layout { what: "request", detail: "report size is zero".into() });
    }
    let body = &msg[PRELUDE_LEN..];
    if report_size.checked_add(id_list_size) != Some(body.len()) {
        return Err(QgsError::Layout {
            what: "request",
            detail: format!(
                "report {report_size} + id list {id_list_size} bytes ≠ {} bytes after the prelude",
                body.len()
            ),
        });
    }
    Ok(GetQuoteRequest { report: body[..report_size].to_vec(), id_list: body[report_size..].to_vec() })
}

/// Parses a `GET_QUOTE_RESP` message (without the length prefix): the quote, or the service's
/// error as [`QgsError::Service`].
pub fn decode_get_quote_response(msg: &[u8]) -> Result<GetQuoteResponse, QgsError> {
    let (code, selected_id_size, quote_size) = header(msg, GET_QUOTE_RESP)?;
    if code != QGS_SUCCESS {
        return Err(QgsError::Service { code });
    }
    let body = &msg[PRELUDE_LEN..];
    if selected_id_size.checked_add(quote_size) != Some(body.len()) {
        return Err(QgsError::Layout {
            what: "response",
            detail: format!(
                "selected id {selected_id_size} + quote {quote_size} bytes ≠ {} bytes after the prelude",
                body.len()
            ),
        });
    }
    if quote_size == 0 {
        return Err(QgsError::Layout { what: "response", detail: "success without a quote".into() });
    }
    Ok(GetQuoteResponse { selected_id: body[..selected_id_size].to_vec(), quote: body[selected_id_size..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unframe(f: &[u8]) -> &[u8] {
        let n = frame_length([f[0], f[1], f[2], f[3]]).unwrap();
        assert_eq!(n, f.len() - 4);
        &f[4..]
    }

    #[test]
    fn request_layout_matches_qgs_msg_lib() {
        let report = [0xabu8; 1024];
        let f = encode_get_quote_request(&report, &[]).unwrap();
        // Length prefix big-endian, header little-endian: 1.0, type 0, size 1048, error 0,
        // report_size 1024, id_list_size 0.
        assert_eq!(&f[..4], &[0, 0, 0x04, 0x18]);
        assert_eq!(&f[4..28], &[1, 0, 0, 0, 0, 0, 0, 0, 0x18, 4, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0]);
        let req = decode_get_quote_request(unframe(&f)).unwrap();
        assert_eq!(req.report, report);
        assert!(req.id_list.is_empty());
    }

    #[test]
    fn response_round_trips_and_carries_errors() {
        let f = encode_get_quote_response(QGS_SUCCESS, &[], b"quote bytes").unwrap();
        let r = decode_get_quote_response(unframe(&f)).unwrap();
        assert_eq!(r.quote, b"quote bytes");
        let f = encode_get_quote_response(QGS_ERROR_INVALID_PARAMETER, &[], &[]).unwrap();
        let e = decode_get_quote_response(unframe(&f)).unwrap_err();
        assert_eq!(e, QgsError::Service { code: QGS_ERROR_INVALID_PARAMETER });
        assert!(e.to_string().contains("invalid parameter"), "{e}");
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = encode_get_quote_response(QGS_SUCCESS, &[], b"q").unwrap();
        let msg = &good[4..];
        assert_eq!(decode_get_quote_response(&msg[..10]), Err(QgsError::Truncated(10)));
        let mut v = msg.to_vec();
        v[0] = 2;
        assert!(matches!(decode_get_quote_response(&v), Err(QgsError::Version { major: 2, .. })));
        let mut v = msg.to_vec();
        v[4] = 0;
        assert_eq!(decode_get_quote_response(&v), Err(QgsError::Type { expected: 1, found: 0 }));
        let mut v = msg.to_vec();
        v.push(0);
        assert!(matches!(decode_get_quote_response(&v), Err(QgsError::Size { .. })));
        let mut v = msg.to_vec();
        v[20] = 9; // quote_size 9 but 1 byte follows
        assert!(matches!(decode_get_quote_response(&v), Err(QgsError::Layout { .. })));
        let mut v = msg.to_vec();
        v[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // overflowing sizes
        assert!(matches!(decode_get_quote_response(&v), Err(QgsError::Layout { .. })));
        assert_eq!(frame_length([0; 4]), Err(QgsError::FrameLength(0)));
        assert!(frame_length([0xff; 4]).is_err());
        assert!(decode_get_quote_request(&good[4..]).is_err());
        assert!(encode_get_quote_request(&[], &[]).is_err());
    }
}
