//! The emulated TD Quote Generation Service: the host daemon a TD guest without configfs-tsm
//! asks for a quote (over vsock, port 4050), and that QEMU asks for the kernel's GetQuote path
//! (over a unix socket). It speaks Intel's QGS message protocol
//! ([`cloister_evidence::tdx::qgs`]) and quotes with [`EmulatedTdx::quote_td_report`], which
//! accepts only TDREPORTs MACed by the same emulated platform.
//!
//! > **WARNING — emulated evidence proves nothing about hardware** (see the crate documentation).

use std::io::{Read, Write};

use cloister_evidence::tdx::qgs::{
    self, QGS_ERROR_INVALID_PARAMETER, QGS_ERROR_INVALID_SIZE, QGS_ERROR_INVALID_TYPE, QGS_ERROR_INVALID_VERSION,
    QGS_ERROR_UNEXPECTED, QGS_SUCCESS, QgsError,
};

use crate::tdx::EmulatedTdx;

/// The framed response to one request message (without its length prefix).
pub fn answer(platform: &EmulatedTdx, msg: &[u8]) -> Vec<u8> {
    let (code, quote) = match qgs::decode_get_quote_request(msg) {
        Err(QgsError::Version { .. }) => (QGS_ERROR_INVALID_VERSION, Vec::new()),
        Err(QgsError::Type { .. }) => (QGS_ERROR_INVALID_TYPE, Vec::new()),
        Err(QgsError::Size { .. }) => (QGS_ERROR_INVALID_SIZE, Vec::new()),
        Err(_) => (QGS_ERROR_INVALID_PARAMETER, Vec::new()),
        Ok(req) => match platform.quote_td_report(&req.report) {
            Ok(q) => (QGS_SUCCESS, q),
            Err(e) => {
                tracing::warn!(error = %e, "emulated QGS: refusing a TDREPORT");
                (QGS_ERROR_UNEXPECTED, Vec::new())
            }
        },
    };
    // A quote is a few KiB, far below the message limit; an empty error reply always encodes.
    qgs::encode_get_quote_response(code, &[], &quote)
        .or_else(|_| qgs::encode_get_quote_response(QGS_ERROR_UNEXPECTED, &[], &[]))
        .unwrap_or_default()
}

/// Serves one connection until the peer closes it. A bad length prefix closes the connection
/// (the stream can no longer be framed); every framed request gets a response.
pub fn serve_connection<S: Read + Write>(platform: &EmulatedTdx, mut stream: S) -> std::io::Result<()> {
    loop {
        let msg = match qgs::read_message(&mut stream) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        stream.write_all(&answer(platform, &msg))?;
        stream.flush()?;
    }
}
