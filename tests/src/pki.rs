//! Certificates for the TLS tests, made with the openssl CLI (Debian package openssl,
//! which .ci/run installs): CAs and the certificates they sign, EC P-256, valid two days.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::node_client::run_command;

/// The longest one openssl command may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(60);

/// A test PKI in a directory, made with the openssl CLI: CAs (`NAME.pem`, `NAME.key`) and
/// certificates they sign for 127.0.0.1, usable by servers and clients alike.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    #[must_use]
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("creating the PKI directory");
        Pki { dir: dir.to_path_buf() }
    }

    fn openssl(&self, args: &[&str]) {
        assert!(
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("openssl").is_file())),
            "the openssl CLI is not installed; .ci/run installs what the tests need"
        );
        let mut command = Command::new("openssl");
        command.args(args).current_dir(&self.dir);
        let run = run_command(command, b"", OPENSSL_TIMEOUT);
        assert_eq!(run.code, Some(0), "openssl {args:?} failed: {run:?}");
    }

    #[must_use]
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A new EC P-256 key `NAME.key` and, for subject `/CN=NAME`, a certificate request
    /// (or with `-x509` in `extra`, a self-signed certificate) `out`.
    fn new_key(&self, name: &str, out: &str, extra: &[&str]) {
        let (key, subject) = (format!("{name}.key"), format!("/CN={name}"));
        let mut args = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        args.extend_from_slice(extra);
        args.extend(["-keyout", &key, "-out", out, "-subj", &subject]);
        self.openssl(&args);
    }

    /// A self-signed CA `name`; returns its certificate's path.
    #[must_use]
    pub fn ca(&self, name: &str) -> String {
        let cert = format!("{name}.pem");
        self.new_key(name, &cert, &["-x509", "-days", "2"]);
        self.path(&cert)
    }

    /// A certificate `name` for IP 127.0.0.1 (server and client use), signed by CA `ca`;
    /// returns the paths of the certificate and its key.
    #[must_use]
    pub fn leaf(&self, name: &str, ca: &str) -> (String, String) {
        let (key, csr, cert, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(
            self.dir.join(&ext),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("writing the extensions file");
        self.new_key(name, &csr, &[]);
        let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        (self.path(&cert), self.path(&key))
    }
}
