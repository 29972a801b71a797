//! TLS: server certificates chosen per SNI from the current snapshot, the
//! default certificate, and upstream (client) TLS settings.

use crate::snapshot::SharedSnapshot;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::sync::Arc;

/// The crypto provider every TLS config of the proxy uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate entity: the primary key pair and the optional alternate
/// (`cert_alt`/`key_alt`, typically ECDSA next to RSA).
#[derive(Debug)]
pub struct CertPair {
    pub primary: Arc<CertifiedKey>,
    pub alt: Option<Arc<CertifiedKey>>,
}

impl CertPair {
    /// The key pair the client can verify: the primary unless only the
    /// alternate supports one of the client's signature schemes.
    pub fn choose(&self, schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
        if let Some(alt) = &self.alt {
            if self.primary.key.choose_scheme(schemes).is_none()
                && alt.key.choose_scheme(schemes).is_some()
            {
                return alt.clone();
            }
        }
        self.primary.clone()
    }
}

/// A kong.conf certificate value: PEM text itself, or the path of a PEM file.
pub fn read_pem(v: &str) -> Result<String, String> {
    if v.contains("-----BEGIN") {
        return Ok(v.to_owned());
    }
    std::fs::read_to_string(v).map_err(|e| format!("could not read {v}: {e}"))
}

/// Parses a PEM certificate chain.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(certs)
}

/// Parses a PEM certificate chain and private key into a signing pair.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let certs = parse_certs(cert_pem)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| format!("invalid key: {e}"))?
        .ok_or("no private key found")?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

/// A self-signed certificate for `localhost`, like Kong's default
/// `kong_default` certificate generated at start.
pub fn self_signed_default() -> Result<Arc<CertPair>, String> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| format!("could not generate the default certificate: {e}"))?;
    let primary = certified_key(&ck.cert.pem(), &ck.key_pair.serialize_pem())?;
    Ok(Arc::new(CertPair { primary, alt: None }))
}

/// Picks the certificate per SNI from the *current* snapshot on every
/// handshake, falling back to the default certificate.
#[derive(Debug)]
pub struct SniResolver {
    pub snapshot: SharedSnapshot,
    pub default: Arc<CertPair>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        if let Some(name) = hello.server_name() {
            let snap = self.snapshot.load();
            if let Some(pair) = snap.certificates.find(name) {
                return Some(pair.choose(schemes));
            }
        }
        Some(self.default.choose(schemes))
    }
}

/// One certificate, whatever the SNI (what a certificate phase picked).
#[derive(Debug)]
struct Fixed(Arc<CertPair>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.choose(hello.signature_schemes()))
    }
}

/// A TLS handshake with Kong's certificate phase (kong/init.lua `Kong.ssl_certificate`):
/// Kong's own pick by SNI first, then the global plugins', which may pick another
/// certificate (by id or by SNI) or abort. Used only when a global plugin has the phase:
/// it reads the ClientHello before choosing the config, and builds a config for the
/// connection when a plugin picked a certificate.
pub async fn accept_with_certificate_phase<IO>(
    stream: IO,
    client_ip: std::net::IpAddr,
    snapshot: &SharedSnapshot,
    base: Arc<rustls::ServerConfig>,
    http2: bool,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tollgate_plugins::{CertificateChoice, CertificateCx};
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let cfg = {
        let hello = start.client_hello();
        let snap = snapshot.load();
        let mut cx = CertificateCx::new(hello.server_name(), client_ip);
        snap.plugins.certificate(&mut cx);
        let pair = match cx.into_choice() {
            CertificateChoice::Kong => None,
            CertificateChoice::Abort => {
                return Err(std::io::Error::other("aborted by the certificate phase"));
            }
            CertificateChoice::Id(id) => {
                Some(snap.certificates_by_id.get(&*id).cloned().ok_or_else(|| {
                    std::io::Error::other(format!("certificate phase: no certificate {id}"))
                })?)
            }
            CertificateChoice::Sni(name) => {
                Some(snap.certificates.find(&name).cloned().ok_or_else(|| {
                    std::io::Error::other(format!("certificate phase: no certificate for {name}"))
                })?)
            }
        };
        match pair {
            None => base,
            Some(p) => {
                Arc::new(server_config(Arc::new(Fixed(p)), http2).map_err(std::io::Error::other)?)
            }
        }
    };
    start.into_stream(cfg).await
}

/// The TLS version and cipher of a connection, in OpenSSL's names (nginx's
/// `$ssl_protocol`, `$ssl_cipher`).
pub fn tls_info(conn: &rustls::ServerConnection) -> Option<(&'static str, &'static str)> {
    use rustls::CipherSuite as C;
    let version = match conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => return None,
    };
    let cipher = match conn.negotiated_cipher_suite()?.suite() {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other.as_str().unwrap_or("UNKNOWN"),
    };
    Some((version, cipher))
}

/// The server config of a TLS listener (`http2` adds `h2` to ALPN).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    http2: bool,
) -> Result<rustls::ServerConfig, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}

/// The client config for an upstream: `verify` with the given CA PEMs (the
/// public web roots when none), an optional client certificate, one ALPN id.
pub fn client_config(
    verify: bool,
    ca_pems: &[&str],
    client_cert: Option<&Arc<CertifiedKey>>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if verify {
        let mut roots = rustls::RootCertStore::empty();
        if ca_pems.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for pem in ca_pems {
                for c in parse_certs(pem)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("invalid CA certificate: {e}"))?;
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tollgate_tls::NoVerify(provider)))
    };
    let mut cfg = match client_cert {
        Some(ck) => {
            #[derive(Debug)]
            struct Fixed(Arc<CertifiedKey>);
            impl rustls::client::ResolvesClientCert for Fixed {
                fn resolve(
                    &self,
                    _hints: &[&[u8]],
                    _schemes: &[SignatureScheme],
                ) -> Option<Arc<CertifiedKey>> {
                    Some(self.0.clone())
                }
                fn has_certs(&self) -> bool {
                    true
                }
            }
            builder.with_client_cert_resolver(Arc::new(Fixed(ck.clone())))
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}
