//! How the sink and the store open connections: TLS or plain TCP, and never
//! on a thread that drives an async runtime.
//!
//! The `postgres` client runs a runtime of its own and blocks on it for
//! every call, which panics on a thread already driving one (inside
//! `#[tokio::main]`, a task). The sink's connection lives on its session
//! thread (see `session`); the store's calls from such a thread, and
//! dropping its connection there, run on a short-lived thread of their
//! own; elsewhere they run in place.

use std::fmt;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, NoTls};

use super::{describe, PostgresError};

/// How connections are secured; see [`PostgresOptions::tls`](super::PostgresOptions::tls).
#[derive(Clone)]
pub struct PostgresTls(Mode);

#[derive(Clone)]
enum Mode {
    FromUrl,
    Disabled,
    #[cfg(feature = "postgres-tls")]
    EncryptOnly,
    #[cfg(feature = "postgres-tls")]
    Verify(std::sync::Arc<rustls::RootCertStore>),
}

impl Default for PostgresTls {
    fn default() -> Self {
        PostgresTls::from_url()
    }
}

impl fmt::Debug for PostgresTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Mode::FromUrl => f.write_str("PostgresTls::FromUrl"),
            Mode::Disabled => f.write_str("PostgresTls::Disabled"),
            #[cfg(feature = "postgres-tls")]
            Mode::EncryptOnly => f.write_str("PostgresTls::EncryptOnly"),
            #[cfg(feature = "postgres-tls")]
            Mode::Verify(roots) => write!(f, "PostgresTls::Verify({} roots)", roots.len()),
        }
    }
}

impl PostgresTls {
    /// What the URL's `sslmode` says (the default): `sslmode=require` is
    /// TLS without verifying the server's certificate, as libpq does for
    /// `require` (feature `postgres-tls`; without it, connecting says
    /// so); `disable` and `prefer` (the driver's default) are plain TCP.
    /// For a verified connection choose [`PostgresTls::verify_pem`] or
    /// [`PostgresTls::verify_webpki_roots`].
    pub fn from_url() -> PostgresTls {
        PostgresTls(Mode::FromUrl)
    }

    /// Plain TCP, whatever the URL says.
    pub fn disabled() -> PostgresTls {
        PostgresTls(Mode::Disabled)
    }

    /// TLS without verifying the server's certificate (libpq's
    /// `sslmode=require`): encrypted, but open to an active
    /// man-in-the-middle. Whatever the URL's `sslmode` says, TLS is
    /// required.
    #[cfg(feature = "postgres-tls")]
    pub fn encrypt_only() -> PostgresTls {
        PostgresTls(Mode::EncryptOnly)
    }

    /// TLS, the server's certificate verified against the root
    /// certificates in `pem` (a CA bundle, or a self-signed server
    /// certificate) and the host name of the URL (libpq's
    /// `sslmode=verify-full`). TLS is required.
    #[cfg(feature = "postgres-tls")]
    pub fn verify_pem(pem: &[u8]) -> Result<PostgresTls, PostgresError> {
        Ok(PostgresTls(Mode::Verify(std::sync::Arc::new(
            tls::roots_from_pem(pem)?,
        ))))
    }

    /// TLS, the server's certificate verified against the Mozilla root
    /// certificates (`webpki-roots`) and the URL's host name. TLS is
    /// required.
    #[cfg(feature = "postgres-tls")]
    pub fn verify_webpki_roots() -> PostgresTls {
        PostgresTls(Mode::Verify(std::sync::Arc::new(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })))
    }
}

/// Opens a connection; called again on every reconnection.
pub(crate) type Connector = Box<dyn Fn() -> Result<Client, postgres::Error> + Send + Sync>;

/// The connector for `url` with `tls`, or why there is none.
pub(crate) fn connector(
    url: &str,
    tls: &PostgresTls,
    timeout: Option<Duration>,
    keepalive: Option<Duration>,
    application_name: &str,
) -> Result<Connector, PostgresError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| PostgresError::InvalidUrl(e.to_string()))?;
    if let Some(t) = timeout {
        // The driver's timeout covers the TCP connect only; the sink waits
        // at most this long for the whole start-up (see `session`).
        config.connect_timeout(t);
    }
    if let Some(idle) = keepalive {
        config
            .keepalives(true)
            .keepalives_idle(idle)
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    match (&tls.0, config.get_ssl_mode()) {
        (Mode::Disabled, _) => {
            config.ssl_mode(SslMode::Disable);
            Ok(Box::new(move || config.connect(NoTls)))
        }
        (Mode::FromUrl, SslMode::Require) => from_url_require(config),
        (Mode::FromUrl, _) => {
            // `prefer` with no TLS connector is plain TCP; say so plainly.
            config.ssl_mode(SslMode::Disable);
            Ok(Box::new(move || config.connect(NoTls)))
        }
        #[cfg(feature = "postgres-tls")]
        (Mode::EncryptOnly, _) => {
            config.ssl_mode(SslMode::Require);
            with_rustls(config, tls::encrypt_only()?)
        }
        #[cfg(feature = "postgres-tls")]
        (Mode::Verify(roots), _) => {
            config.ssl_mode(SslMode::Require);
            with_rustls(config, tls::verifying(roots)?)
        }
    }
}

#[cfg(feature = "postgres-tls")]
fn from_url_require(config: postgres::Config) -> Result<Connector, PostgresError> {
    with_rustls(config, tls::encrypt_only()?)
}

#[cfg(feature = "postgres-tls")]
fn with_rustls(
    config: postgres::Config,
    tls: rustls::ClientConfig,
) -> Result<Connector, PostgresError> {
    let make = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    Ok(Box::new(move || config.connect(make.clone())))
}

#[cfg(not(feature = "postgres-tls"))]
fn from_url_require(_config: postgres::Config) -> Result<Connector, PostgresError> {
    Err(PostgresError::Connect(
        "the URL asks for TLS (sslmode=require) and phi-audit was built without the \
         `postgres-tls` feature"
            .into(),
    ))
}

/// Runs `f` where the blocking client may block: here, or on a thread of
/// its own when this thread drives an async runtime.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R, PostgresError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(f());
    }
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("phi-audit-postgres".into())
            .spawn_scoped(s, f)
            .map_err(|e| {
                PostgresError::Connect(format!("cannot start a connection thread: {e}"))
            })?;
        match handle.join() {
            Ok(r) => Ok(r),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Connects with `connect`, off the runtime.
pub(crate) fn open(connect: &Connector) -> Result<Client, PostgresError> {
    off_runtime(|| connect().map_err(|e| PostgresError::Connect(describe(&e))))?
}

#[cfg(feature = "postgres-tls")]
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use super::PostgresError;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, PostgresError>
    {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PostgresError::Connect(format!("TLS set-up failed: {e}")))
    }

    pub(super) fn verifying(roots: &Arc<RootCertStore>) -> Result<ClientConfig, PostgresError> {
        Ok(builder()?
            .with_root_certificates(Arc::clone(roots))
            .with_no_client_auth())
    }

    pub(super) fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, PostgresError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| {
                PostgresError::Connect(format!("reading the root certificates failed: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                PostgresError::Connect(format!("a root certificate is not usable: {e}"))
            })?;
        }
        if roots.is_empty() {
            return Err(PostgresError::Connect(
                "no certificate found in the root certificates (PEM expected)".into(),
            ));
        }
        Ok(roots)
    }

    pub(super) fn encrypt_only() -> Result<ClientConfig, PostgresError> {
        Ok(builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth())
    }

    /// Accepts any server certificate (libpq's `sslmode=require`), while
    /// still checking that the server holds the certificate's key.
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

impl Drop for super::PostgresStore {
    /// Closes the connection off any async runtime (closing blocks on the
    /// client's own runtime).
    fn drop(&mut self) {
        // SAFETY: `client` is taken once, here, and never used again: the
        // store is being dropped.
        let client = unsafe { std::mem::ManuallyDrop::take(self.client_slot()) };
        if let Err(e) = off_runtime(move || drop(client)) {
            tracing::warn!(target: crate::config::INTERNAL_TARGET, error = %e, "closing a PostgreSQL connection failed");
        }
    }
}
