//! A real SMTP server (aiosmtpd) on a free loopback port, run by the Python
//! that scripts/test installed it into (TOLLGATE_TEST_PYTHON). Each message
//! it accepts is on disk before the client gets its answer, so a test reads
//! exactly what was sent so far.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
}

pub struct SmtpSpool {
    child: Child,
    stdin: Option<ChildStdin>,
    folder: tempfile::TempDir,
    pub port: u16,
}

impl SmtpSpool {
    pub fn start() -> SmtpSpool {
        let python = std::env::var("TOLLGATE_TEST_PYTHON").expect(
            "TOLLGATE_TEST_PYTHON names a Python with aiosmtpd; scripts/test sets it up (python3 -m venv target/smtp-venv && target/smtp-venv/bin/pip install aiosmtpd==1.4.6)",
        );
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_spool.py");
        let folder = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(script)
            .arg(folder.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the SMTP server");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut port = String::new();
        lines.read_line(&mut port).unwrap();
        SmtpSpool {
            child,
            stdin,
            folder,
            port: port
                .trim()
                .parse()
                .expect("the server prints its port first"),
        }
    }

    /// Every message accepted so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        let mut paths: Vec<_> = std::fs::read_dir(self.folder.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "json")
            })
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for SmtpSpool {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
