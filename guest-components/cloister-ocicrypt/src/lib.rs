//! ocicrypt encrypted OCI layers, guest side: parse an encrypted layer's descriptor, unwrap its
//! layer key (JWE recipients with local private keys, or key providers — a `cmd` program or CoCo's
//! `attestation-agent` packet with a key-encryption key from the key broker), and stream-decrypt
//! the blob with `AES_256_CTR_HMAC_SHA256`, verifying its HMAC and plaintext digest. Encryption is
//! included for tests and tools, byte-compatible with skopeo / containers/ocicrypt.
//!
//! # What it trusts
//!
//! * Nothing in the image: descriptors, annotations, JWEs, packets and blobs are untrusted input;
//!   parsers never panic, and a layer is accepted only if the HMAC (keyed with the unwrapped
//!   layer key) over the whole ciphertext and the SHA-256 of the plaintext both match.
//! * The keys and providers the caller configures ([`DecryptConfig`]): a private key, a `cmd`
//!   provider program, or a [`KekSource`] (the confidential data hub) is trusted to be the
//!   guest's own. Whatever private options an unwrap yields are then checked by the HMAC.
//! * Plaintext is handed out before the end of the stream is verified (as in Go's ocicrypt); the
//!   consumer must roll back on any error, including the one at end of stream.
//!
//! Secrets (layer keys, KEKs, private options) are kept in `Zeroizing` buffers and never logged or
//! put into error messages. Module map: [`annotations`] (descriptor, options), [`jwe`] (the
//! ocicrypt JWE profile), [`keyprovider`] (protocol, `cmd` transport, config), [`aa`]
//! (attestation-agent packets), [`cipher`] (the layer cipher), [`layer`] (orchestration).
#![forbid(unsafe_code)]

pub mod aa;
pub mod annotations;
pub mod cipher;
pub mod error;
pub mod jwe;
pub mod keyprovider;
pub mod layer;
mod util;

pub use aa::{
    AnnotationPacket, AttestationAgentProvider, KekSource, KekSourceError, OfflineKekSource, WrapKey, WrapType,
    attestation_agent_annotation, normalize_kid, wrap_attestation_agent,
};
pub use annotations::{EncryptedLayer, KeyScheme, PrivateOptions, PublicOptions, WrappedKeys};
pub use cipher::{DigestCheck, LayerDecryptReader, LayerDecryptor, LayerEncryptor, encrypt_stream};
pub use error::OcicryptError;
pub use jwe::{EcCurve, Jwe, JwePrivateKey, JwePublicKey};
pub use keyprovider::{
    BoxFuture, CmdKeyProvider, KeyProvider, KeyProviderConfig, KeyProviderInput, KeyProviderOutput,
    handle_keyprovider_request,
};
pub use layer::{
    DecryptConfig, EncryptConfig, EncryptedLayerOutput, decrypt_layer, encrypt_layer, encrypted_media_type,
    unwrap_private_options,
};
pub use util::GoBytes;
