//! Redis as production runs it: TLS only (no plain port), clients that must present a certificate,
//! and an ACL user limited to Cascade's keys (the `default` user off). The certificates are made
//! for each test by the `openssl` command: a CA, a server certificate for 127.0.0.1 and a client
//! certificate, all signed by that CA.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::{RedisServer, TempDir, free_port};

/// The ACL user Cascade connects as, and its password (with characters a URL must escape).
pub const USER: &str = "cascade";
/// The user's password as Redis knows it.
pub const PASSWORD: &str = "s3cret:p@ss";
/// [`PASSWORD`] percent-escaped for a URL.
pub const PASSWORD_IN_URL: &str = "s3cret%3Ap%40ss";

/// A CA and the certificates it signed, in a folder of their own.
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// Makes the CA, the server certificate (for IP 127.0.0.1) and the client certificate.
    pub fn create() -> anyhow::Result<Self> {
        let dir = TempDir::new("cascade-certs")?;
        let certs = TestCerts { dir };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        certs.openssl(
            &[&["req", "-x509"], &ec[..], &["-days", "2", "-subj", "/CN=cascade-test-ca"]].concat(),
            &[
                "-keyout=ca.key",
                "-out=ca.crt",
                "-addext=basicConstraints=critical,CA:TRUE",
                "-addext=keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        for (name, usage, alt) in
            [("server", "serverAuth", "subjectAltName=IP:127.0.0.1"), ("client", "clientAuth", "")]
        {
            let subject = format!("/CN=cascade-test-{name}");
            let (key, csr) = (format!("-keyout={name}.key"), format!("-out={name}.csr"));
            certs.openssl(&[&["req"], &ec[..], &["-subj", &subject]].concat(), &[&key, &csr])?;
            let extensions = format!("basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{alt}\n");
            std::fs::write(certs.path(&format!("{name}.ext")), extensions)?;
            certs.openssl(
                &["x509", "-req", "-days", "2", "-CAcreateserial"],
                &[
                    &format!("-in={name}.csr"),
                    "-CA=ca.crt",
                    "-CAkey=ca.key",
                    &format!("-out={name}.crt"),
                    &format!("-extfile={name}.ext"),
                ],
            )?;
        }
        Ok(certs)
    }

    /// Runs `openssl` in the folder; `files` are `-flag=name` pairs, passed as `-flag name`.
    fn openssl(&self, args: &[&str], files: &[&str]) -> anyhow::Result<()> {
        let mut command = Command::new("openssl");
        command.current_dir(self.dir.path()).args(args);
        for file in files {
            let (flag, value) = file.split_once('=').context("flag=value")?;
            command.args([flag, value]);
        }
        let output = command.output().context("running openssl")?;
        anyhow::ensure!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        Ok(())
    }

    /// A file of the folder (`ca.crt`, `server.key`, …).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `--redis-tls-*` flags of the `cascade` commands, for these certificates.
    pub fn flags(&self) -> Vec<String> {
        ["ca.crt", "client.crt", "client.key"]
            .iter()
            .zip(["--redis-tls-ca", "--redis-tls-cert", "--redis-tls-key"])
            .flat_map(|(file, flag)| [flag.to_string(), self.path(file).display().to_string()])
            .collect()
    }

    /// The `CASCADE_REDIS_TLS_*` environment of `cascade serve`, for these certificates.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        [
            ("CASCADE_REDIS_TLS_CA", "ca.crt"),
            ("CASCADE_REDIS_TLS_CERT", "client.crt"),
            ("CASCADE_REDIS_TLS_KEY", "client.key"),
        ]
        .iter()
        .map(|(name, file)| (*name, self.path(file).display().to_string()))
        .collect()
    }
}

impl RedisServer {
    /// A server that speaks TLS only, requires a client certificate signed by `certs`' CA, and
    /// knows one user ([`USER`], [`PASSWORD`]) allowed `cascade:*` keys only, and no dangerous
    /// command but the `DBSIZE` and `INFO` health checks read and the `RESTORE` a reshard
    /// writes (the ACL README.md recommends). Its `url` is
    /// `rediss://cascade:…@127.0.0.1:port`.
    pub async fn start_secure(certs: &TestCerts) -> anyhow::Result<Self> {
        let port = free_port()?;
        let file = |name: &str| certs.path(name).display().to_string();
        let (tls_port, cert, key, ca) = (port.to_string(), file("server.crt"), file("server.key"), file("ca.crt"));
        let password = format!(">{PASSWORD}");
        // redis-server quotes each argument: a directive's words go as separate arguments.
        let args = [
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
            "--user",
            "default",
            "off",
            "--user",
            USER,
            "on",
            &password,
            "~cascade:*",
            "&*",
            "+@all",
            "-@dangerous",
            "+dbsize",
            "+info",
            "+restore",
        ];
        let mut server = RedisServer::start_on_with(port, &args).await?;
        server.url = format!("rediss://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{port}");
        Ok(server)
    }
}
