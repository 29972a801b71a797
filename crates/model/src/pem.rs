//! Certificate and key checks (Kong's `typedefs.certificate`/`key` and the certificates
//! entity check that the key matches the certificate).

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate: {e}"))?;
    if certs.is_empty() {
        return Err("invalid certificate: no PEM certificate found".into());
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c).map_err(|e| format!("invalid certificate: {e}"))?;
    }
    Ok(certs)
}

pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("invalid key: {e}"))?
        .ok_or_else(|| "invalid key: no PEM private key found".to_string())
}

pub fn validate_certificate(pem: &str) -> Result<(), String> {
    parse_certs(pem).map(|_| ())
}

pub fn validate_key(pem: &str) -> Result<(), String> {
    let key = parse_key(pem)?;
    rustls::crypto::ring::sign::any_supported_type(&key)
        .map(|_| ())
        .map_err(|e| format!("invalid key: {e}"))
}

/// The key's algorithm family ("RSA", "EC", "ED25519") to tell `cert` from `cert_alt`.
pub fn key_type(pem: &str) -> Result<&'static str, String> {
    let key = parse_key(pem)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("invalid key: {e}"))?;
    Ok(match signer.algorithm() {
        rustls::SignatureAlgorithm::RSA => "RSA",
        rustls::SignatureAlgorithm::ECDSA => "EC",
        rustls::SignatureAlgorithm::ED25519 => "ED25519",
        _ => "OTHER",
    })
}

/// Whether the private key belongs to the first certificate of the chain.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> Result<bool, String> {
    let certs = parse_certs(cert_pem)?;
    let key = parse_key(key_pem)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("invalid key: {e}"))?;
    let Some(spki) = signer.public_key() else {
        return Ok(true);
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| format!("invalid certificate: {e}"))?;
    Ok(cert.tbs_certificate.subject_pki.raw == spki.as_ref())
}

/// Kong's `cert_digest`: the SHA-256 of the certificate's DER, hex.
pub fn cert_digest(pem: &str) -> Result<String, String> {
    let certs = parse_certs(pem)?;
    Ok(hex::encode(Sha256::digest(&certs[0])))
}

/// CA certificates: exactly one certificate, with `CA:TRUE`, not expired.
pub fn validate_ca_certificate(pem: &str) -> Result<(), String> {
    let certs = parse_certs(pem)?;
    if certs.len() != 1 {
        return Err("please submit only one certificate at a time".into());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| format!("invalid certificate: {e}"))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("certificate does not appear to be a CA because it is missing the \"CA\" basic constraint".into());
    }
    if !cert.validity().is_valid() {
        return Err("certificate expired, \"Not After\" time is in the past".into());
    }
    Ok(())
}
