//! The rustls client configuration for a scrape config's `tls_config`, in
//! one place for every case: the roots (the bundled WebPKI roots, or only
//! those of `ca_file`, as Go's `RootCAs`), the client certificate,
//! `server_name` and `insecure_skip_verify`.
//!
//! With `server_name` the target's certificate is verified against that
//! name instead of the host in the scrape URL (e.g. scraping by IP a target
//! whose certificate names its DNS name). The SNI sent is still the URL's
//! host: the HTTP connector derives it from the URL.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, SignatureScheme};

use crate::config::TlsConfig;
use crate::http::FetcherError;

/// Verifies like WebPKI, but against a fixed server name.
#[derive(Debug)]
struct FixedNameVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: accepts any certificate and any handshake
/// signature. This is what the reqwest client this replaced did for it
/// (`danger_accept_invalid_certs`), so targets that worked with it keep
/// working; checking signatures would not make an unverified peer any more
/// trustworthy.
#[derive(Debug)]
struct AcceptAnyCert;

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // Every scheme a server might pick, since none is checked.
        vec![
            SignatureScheme::RSA_PKCS1_SHA1,
            SignatureScheme::ECDSA_SHA1_Legacy,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::ECDSA_NISTP521_SHA512,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::ED25519,
            SignatureScheme::ED448,
        ]
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, FetcherError> {
    std::fs::read(path).map_err(|e| FetcherError(format!("cannot read {}: {e}", path.display())))
}

/// The trust roots: only `ca_file`'s certificates when it is set (Go's
/// `RootCAs` replaces the system pool), the bundled WebPKI roots otherwise.
fn roots(tls: &TlsConfig) -> Result<rustls::RootCertStore, FetcherError> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(ca) = &tls.ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let pem = read(ca)?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| FetcherError(format!("invalid CA file {}: {e}", ca.display())))?;
        roots.add(cert).map_err(|e| {
            FetcherError(format!("invalid CA certificate in {}: {e}", ca.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(FetcherError(format!(
            "invalid CA file {}: no certificate found",
            ca.display()
        )));
    }
    Ok(roots)
}

/// The client TLS configuration for `tls`: ring as the crypto provider,
/// TLS 1.2 and 1.3, HTTP/1.1 only (ALPN `http/1.1`).
pub fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, FetcherError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Read even when verification is off: a broken `ca_file` is a
    // configuration error either way.
    let roots = Arc::new(roots(tls)?);
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AcceptAnyCert)
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| FetcherError(format!("cannot build the certificate verifier: {e}")))?;
        match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|e| {
                    FetcherError(format!("invalid tls_config.server_name {name:?}: {e}"))
                })?;
                Arc::new(FixedNameVerifier {
                    inner: webpki,
                    name,
                })
            }
            None => webpki,
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetcherError(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read(cert)?;
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    FetcherError(format!("invalid certificate {}: {e}", cert.display()))
                })?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| FetcherError(format!("invalid key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| FetcherError(format!("invalid client certificate or key: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
