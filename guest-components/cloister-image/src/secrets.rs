//! Secrets for the pull from the confidential data hub (and so from the key broker, after
//! attestation): layer key-encryption keys (`provider.attestation-agent` annotations), keys named
//! by the signature policy (`keyPath: kbs:///…`), and documents such as the policy itself or the
//! registry credentials, named by `kbs:///repo/type/tag`.

use std::sync::Arc;

use cloister_cdh::Cdh;
use cloister_ocicrypt::{KekSource, KekSourceError};
use cloister_signature::{BoxFuture, KeySource, SourceError};
use zeroize::Zeroizing;

use crate::error::ImageError;

/// The data hub as the source of every secret a pull needs.
#[derive(Clone, Debug)]
pub struct CdhSecrets(pub Arc<Cdh>);

impl CdhSecrets {
    /// Fetches `kbs:///repo/type/tag`; `what` names it in errors.
    pub async fn fetch(&self, uri: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, ImageError> {
        self.0
            .get_resource(uri)
            .await
            .map_err(|e| ImageError::Resource { what: format!("{what} {uri}"), why: e.to_string() })
    }
}

impl KekSource for CdhSecrets {
    fn get_resource<'a>(
        &'a self,
        uri: &'a str,
    ) -> cloister_ocicrypt::BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KekSourceError>> {
        Box::pin(async move { self.0.get_resource(uri).await.map_err(|e| Box::new(e) as KekSourceError) })
    }
}

impl KeySource for CdhSecrets {
    fn fetch_kbs<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        Box::pin(async move {
            self.0.get_resource(uri).await.map(|z| z.to_vec()).map_err(|e| SourceError::new(format!("{uri}: {e}")))
        })
    }
}
