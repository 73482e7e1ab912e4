//! A development PKI per test, and TLS clients and servers made from it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How a client speaks HTTP over TLS.
#[derive(Clone, Copy, Debug)]
pub enum Proto {
    /// HTTP/1.1 only (ALPN offers only http/1.1).
    Http1,
    /// Whatever ALPN picks (the client offers h2 and http/1.1).
    Alpn,
    /// HTTP/2 with prior knowledge.
    H2,
}

/// A development PKI (CA, server and IM-side client certificates) written
/// to a temporary folder as `ca.pem`, `server.pem`, `server-key.pem`,
/// `client.pem`, `client-key.pem`...
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub pki: callgate::certs::DevPki,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = callgate::certs::generate().unwrap();
        pki.write(dir.path()).unwrap();
        Pki { dir, pki }
    }

    /// The path of one of its files.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// DER of its IM-side client certificate.
    pub fn client_cert_der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.pki.client_cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// A client trusting only this CA, presenting `identity`'s IM-side
    /// client certificate when given. `localhost` resolves to 127.0.0.1.
    pub fn client(&self, identity: Option<&Pki>, proto: Proto) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pki.ca_cert_pem.as_bytes()).unwrap();
        let mut b = reqwest::Client::builder()
            .tls_certs_only([ca])
            .no_proxy()
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)))
            .timeout(Duration::from_secs(10));
        if let Some(id) = identity {
            let pem = format!("{}{}", id.pki.client_cert_pem, id.pki.client_key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b = match proto {
            Proto::Http1 => b.http1_only(),
            Proto::Alpn => b,
            Proto::H2 => b.http2_prior_knowledge(),
        };
        b.build().unwrap()
    }

    /// A server side with its server certificate, wanting a client
    /// certificate from its CA (the gateway's own TLS settings).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = callgate::tls::server_config(
            Path::new(&self.path("server.pem")),
            Path::new(&self.path("server-key.pem")),
            Some(Path::new(&self.path("ca.pem"))),
        )
        .unwrap();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
