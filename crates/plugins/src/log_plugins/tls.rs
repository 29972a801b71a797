//! TLS for log endpoints. Kong's http-log (`ssl_verify = false`) and tcp-log
//! (`sslhandshake(false, sni, false)`) do not verify the server's certificate; neither
//! does this.

use rustls::pki_types::ServerName;
use std::sync::{Arc, LazyLock};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn config(sni: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tollgate_tls::NoVerify(provider)))
        .with_no_client_auth();
    c.enable_sni = sni;
    Arc::new(c)
}

static WITH_SNI: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| config(true));
static WITHOUT_SNI: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| config(false));

/// A TLS handshake over `tcp`, sending `sni` when given (else no SNI, as Kong's tcp-log
/// without `tls_sni`); `host` names the server otherwise.
pub(crate) async fn connect(
    tcp: TcpStream,
    host: &str,
    sni: Option<&str>,
) -> Result<TlsStream<TcpStream>, String> {
    let (cfg, name) = match sni {
        Some(s) => (WITH_SNI.clone(), s),
        None => (WITHOUT_SNI.clone(), host),
    };
    let name = ServerName::try_from(name.trim_matches(['[', ']']).to_owned())
        .map_err(|e| format!("invalid server name '{name}': {e}"))?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// A TLS acceptor with a self-signed certificate for `logs.example` (test receivers).
#[cfg(test)]
pub(crate) fn test_acceptor() -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["logs.example".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}
