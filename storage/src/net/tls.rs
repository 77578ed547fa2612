//! TLS configuration (rustls, with the ring provider): the server's certificate
//! and key ([`ServerTls`]), and how a client checks the server ([`ClientTls`]: a
//! CA certificate, or the SHA-256 fingerprint of the server's certificate
//! pinned), with the `tls://HOST:PORT?ca=FILE` / `?fingerprint=HEX` address form.
//!
//! Invariants:
//! - A client never talks to a server whose certificate it did not verify: by a
//!   CA it was given (name and chain checked by webpki), or by a pinned
//!   fingerprint that matches the certificate exactly (signatures checked too).
//! - A `tls://` address without a way to check the server is refused before any
//!   connection is made.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The ring provider: it builds with a C compiler alone, where aws-lc (rustls'
/// default, with post-quantum key exchange) needs cmake and a long build.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// The server's side of TLS: its certificate chain and private key.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    fingerprint: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// From PEM files: `cert` holds the certificate chain (the server's first),
    /// `key` its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| invalid(cert, format!("cannot read the certificate: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| invalid(cert, format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(invalid(cert, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| invalid(key, format!("not a PEM private key: {e}")))?;
        Self::from_der(chain, key).map_err(|e| invalid(cert, e))
    }

    /// From PEM text, for programs that hold the certificate and key in memory.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<ServerTls> {
        let here = Path::new("certificate");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| invalid(here, format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(invalid(here, "no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| invalid(here, format!("not a PEM private key: {e}")))?;
        Self::from_der(chain, key).map_err(|e| invalid(here, e))
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> std::result::Result<ServerTls, rustls::Error> {
        let fingerprint = certificate_fingerprint(chain[0].as_ref());
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The SHA-256 fingerprint of the server's certificate, as a client pins it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn session(&self) -> std::result::Result<rustls::Connection, rustls::Error> {
        rustls::ServerConnection::new(Arc::clone(&self.config)).map(rustls::Connection::Server)
    }
}

/// How a client checks the server it connects to over TLS.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Trusts the CA certificate(s) in this PEM file (the server's own
    /// certificate, for a self-signed one); the server's name is checked.
    pub fn ca_file(path: &Path) -> Result<ClientTls> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(path, format!("cannot read the CA certificate: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| invalid(path, format!("not a PEM certificate: {e}")))?;
        Self::trusting(certs).map_err(|e| invalid(path, e))
    }

    /// Trusts the CA certificate(s) in this PEM text.
    pub fn ca_pem(pem: &[u8]) -> Result<ClientTls> {
        let here = Path::new("CA certificate");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| invalid(here, format!("not a PEM certificate: {e}")))?;
        Self::trusting(certs).map_err(|e| invalid(here, e))
    }

    fn trusting(certs: Vec<CertificateDer<'static>>) -> std::result::Result<ClientTls, String> {
        if certs.is_empty() {
            return Err("no certificate in it".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// Trusts exactly the server certificate whose SHA-256 fingerprint (of its
    /// DER bytes) is `hex`: 64 hex digits, `:` between bytes allowed, as `openssl
    /// x509 -fingerprint -sha256` prints it. The name is not checked.
    pub fn pinned_sha256(hex: &str) -> Result<ClientTls> {
        let here = Path::new("fingerprint");
        let fingerprint = parse_fingerprint(hex).ok_or_else(|| {
            invalid(
                here,
                format!("{hex:?} is not a SHA-256 fingerprint (64 hex digits)"),
            )
        })?;
        let provider = provider();
        let verifier = Arc::new(Pinned {
            fingerprint,
            algorithms: provider.signature_verification_algorithms,
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(here, e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    pub(crate) fn session(&self, host: &str) -> std::result::Result<rustls::Connection, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a host name for TLS: {e}"))?;
        rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map(rustls::Connection::Client)
            .map_err(|e| e.to_string())
    }
}

/// The SHA-256 fingerprint of a certificate's DER bytes, as hex (what
/// [`ClientTls::pinned_sha256`] takes).
pub fn certificate_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_fingerprint(hex: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Accepts exactly the server certificate with this fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 fingerprint {}, not the one pinned",
                certificate_fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server address as a client is given it: `HOST:PORT` (plain TCP), or
/// `tls://HOST:PORT` with `?ca=FILE` or `?fingerprint=HEX` (or the client's
/// [`ClientTls`]).
#[derive(Debug)]
pub(crate) struct Address {
    /// `HOST:PORT`, to resolve.
    pub(crate) host_port: String,
    /// The host alone (the name TLS checks).
    pub(crate) host: String,
    /// How to check the server, when the address says TLS.
    pub(crate) tls: Option<ClientTls>,
}

/// Parses `address`; `configured` is the client's own [`ClientTls`], used for a
/// `tls://` address without a query (and for a plain address, which it makes TLS).
pub(crate) fn parse_address(address: &str, configured: Option<&ClientTls>) -> Result<Address> {
    let here = || Path::new(address).to_path_buf();
    let (rest, tls_scheme) = match address.strip_prefix("tls://") {
        Some(rest) => (rest, true),
        None => (address.strip_prefix("tcp://").unwrap_or(address), false),
    };
    let rest = rest.trim_end_matches('/');
    let (host_port, query) = match rest.split_once('?') {
        Some((hp, q)) => (hp.trim_end_matches('/'), Some(q)),
        None => (rest, None),
    };
    let host = match host_port.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => host_port,
    }
    .to_string();
    let mut tls = None;
    if let Some(query) = query {
        if !tls_scheme {
            return Err(Error::Format {
                path: here(),
                what: "options after `?` are for tls:// addresses".into(),
            });
        }
        for pair in query.split('&') {
            tls = Some(match pair.split_once('=') {
                Some(("ca", file)) => ClientTls::ca_file(Path::new(file))?,
                Some(("fingerprint", hex)) => ClientTls::pinned_sha256(hex)?,
                _ => {
                    return Err(Error::Format {
                        path: here(),
                        what: format!(
                            "unknown option {pair:?}: a tls:// address takes ?ca=FILE or \
                             ?fingerprint=SHA256"
                        ),
                    });
                }
            });
        }
    }
    let tls = tls.or_else(|| configured.cloned());
    if tls_scheme && tls.is_none() {
        return Err(Error::Format {
            path: here(),
            what: "a tls:// address needs a way to check the server: ?ca=FILE (its CA \
                   certificate) or ?fingerprint=SHA256 (its certificate's), or ClientOptions::tls"
                .into(),
        });
    }
    Ok(Address {
        host_port: host_port.to_string(),
        host,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_their_tls_options() {
        let plain = parse_address("127.0.0.1:8100", None).unwrap();
        assert_eq!(
            (plain.host_port.as_str(), plain.tls.is_none()),
            ("127.0.0.1:8100", true)
        );
        let hex = "ab".repeat(32);
        let pinned =
            parse_address(&format!("tls://db.example:9/?fingerprint={hex}"), None).unwrap();
        assert_eq!(pinned.host_port, "db.example:9");
        assert_eq!(pinned.host, "db.example");
        assert!(pinned.tls.is_some());
        let v6 = parse_address(&format!("tls://[::1]:9?fingerprint={hex}"), None).unwrap();
        assert_eq!(v6.host, "::1");
        for bad in [
            "tls://h:1",
            "tls://h:1?fingerprint=abc",
            "tls://h:1?colour=blue",
            "h:1?ca=x",
        ] {
            let e = parse_address(bad, None).unwrap_err();
            assert!(matches!(e, Error::Format { .. }), "{bad}: {e}");
        }
        let with_colons: Vec<String> = (0..32).map(|_| "0F".to_string()).collect();
        assert_eq!(parse_fingerprint(&with_colons.join(":")), Some([0x0f; 32]));
    }
}
