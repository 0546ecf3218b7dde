//! Reads an upstream's `tls.ca_file` when the config is loaded: a PEM bundle of CA
//! certificates, each checked to be a certificate the TLS stack can use.

use super::spec::CaBundle;
use std::path::{Path, PathBuf};

/// Why a `ca_file` cannot be used, in words for a config problem.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CaFileError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path} is not a PEM file of certificates: {reason}")]
    NotPem { path: String, reason: String },
    #[error("{path} holds no certificate (expected blocks of -----BEGIN CERTIFICATE-----)")]
    Empty { path: String },
    #[error("{path}: certificate {index} is not a valid X.509 certificate: {reason}")]
    BadCertificate {
        path: String,
        index: usize,
        reason: String,
    },
}

/// `file` resolved against `base` (the config file's directory) unless absolute.
pub fn resolve(file: &str, base: &Path) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Reads the PEM bundle at `path`: every `CERTIFICATE` block, each parsed as X.509 (other
/// blocks, such as a private key left in the file, are ignored).
pub fn read(path: &Path) -> Result<CaBundle, CaFileError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| CaFileError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut bytes.as_slice()) {
        let der = item.map_err(|e| CaFileError::NotPem {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if let Err(e) = x509_parser::parse_x509_certificate(&der) {
            return Err(CaFileError::BadCertificate {
                path: shown,
                index: certs.len() + 1,
                reason: e.to_string(),
            });
        }
        certs.push(der.to_vec());
    }
    if certs.is_empty() {
        return Err(CaFileError::Empty { path: shown });
    }
    Ok(CaBundle {
        path: path.to_path_buf(),
        certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn missing_empty_and_garbled_files_say_what_is_wrong() {
        let e = read(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            matches!(&e, CaFileError::Unreadable { reason, .. } if reason.contains("No such file")),
            "{e}"
        );
        let f = file(b"just text\n");
        assert!(matches!(read(f.path()), Err(CaFileError::Empty { .. })));
        let f = file(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let e = read(f.path()).unwrap_err();
        assert!(
            matches!(e, CaFileError::BadCertificate { index: 1, .. }),
            "{e}"
        );
        let f = file(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        assert!(read(f.path()).is_err());
    }

    /// A self-signed CA certificate (EC P-256, valid until 2126), made with `openssl req -x509`.
    const CA: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBnDCCAUGgAwIBAgIUU4fC+3U94FNllkhaQzrxzr19uQ8wCgYIKoZIzj0EAwIw\n\
IjEgMB4GA1UEAwwXcHJvbXB0Z2F0ZSB1bml0IHRlc3QgQ0EwIBcNMjYxMTI5MTUy\n\
ODMwWhgPMjEyNjExMDUxNTI4MzBaMCIxIDAeBgNVBAMMF3Byb21wdGdhdGUgdW5p\n\
dCB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4MoGHQgeKnbIobAD\n\
cK12DT1nlTZc+C4uUEXQygEOkSSxEwrLYMiODEuPZcNvxdz863VY5Wkv3QRIuKJj\n\
ptSqTaNTMFEwHQYDVR0OBBYEFHkFAdw2HtD+EcrjIidAZkdso493MB8GA1UdIwQY\n\
MBaAFHkFAdw2HtD+EcrjIidAZkdso493MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI\n\
zj0EAwIDSQAwRgIhAMVAo0zWmPpsD22iRhF4pbXozjxNElEQoLHWXU/pzCnpAiEA\n\
4dPSjxbJe3RFzFfbdgIcqylh3b686mSwhxdm5RwiN6M=\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn every_certificate_of_a_bundle_is_read_and_other_blocks_ignored() {
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let f = file(format!("{CA}{key}{CA}").as_bytes());
        let bundle = read(f.path()).unwrap();
        assert_eq!(bundle.certs.len(), 2);
        assert_eq!(bundle.path, f.path());
        // A certificate's DER starts with a SEQUENCE.
        assert_eq!(bundle.certs[0][0], 0x30);
    }

    #[test]
    fn relative_paths_are_against_the_config_directory() {
        assert_eq!(
            resolve("ca.pem", Path::new("/etc/promptgate")),
            PathBuf::from("/etc/promptgate/ca.pem")
        );
        assert_eq!(
            resolve("/x/ca.pem", Path::new("/etc/promptgate")),
            PathBuf::from("/x/ca.pem")
        );
    }
}
