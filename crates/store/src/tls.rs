//! The rustls client configuration of the database connections (`pg_ssl`,
//! `cassandra_ssl`), with Kong's verification rules.

use std::path::PathBuf;
use std::sync::Arc;
use tollgate_model::{Error, Result};

/// A client configuration for `what` (`postgres`, `cassandra`). With `verify`, the server
/// certificate and name are checked against `trusted_cas` (`lua_ssl_trusted_certificate`;
/// the bundled web roots when it is empty); without, the connection is encrypted but the
/// server is not authenticated (Kong's default, `*_ssl_verify = off`).
pub(crate) fn client_config(
    what: &str,
    verify: bool,
    trusted_cas: &[PathBuf],
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::database(format!("{what} TLS: {e}")))?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tollgate_tls::NoVerify(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    if trusted_cas.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for path in trusted_cas {
        let pem = std::fs::read(path).map_err(|e| {
            Error::database(format!(
                "cannot read the trusted certificate {}: {e}",
                path.display()
            ))
        })?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert
                .map_err(|e| Error::database(format!("invalid PEM in {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| {
                Error::database(format!("invalid certificate in {}: {e}", path.display()))
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}
