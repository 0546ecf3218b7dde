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
