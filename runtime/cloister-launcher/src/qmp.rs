//! A minimal blocking QMP (QEMU Machine Protocol) client: greeting, `qmp_capabilities`, then
//! commands whose replies are matched by skipping asynchronous events. QEMU is untrusted: every
//! line is length-bounded and parsed as JSON, never assumed well-formed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::QmpError;

/// The longest QMP line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// A QMP session in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    greeting: Value,
}

impl Qmp {
    /// Connects to `socket`, reads the greeting and negotiates capabilities; every read and write
    /// times out after `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut qmp = Qmp { reader: BufReader::new(stream), greeting: Value::Null };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("expected the QMP greeting, got {}", short(&greeting))));
        }
        qmp.greeting = greeting;
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The greeting QEMU sent (`{"QMP": {"version": …, "capabilities": …}}`).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// QEMU's version from the greeting, as `major.minor.micro`.
    pub fn qemu_version(&self) -> Option<String> {
        let q = self.greeting.get("QMP")?.get("version")?.get("qemu")?;
        let n = |k: &str| q.get(k).and_then(Value::as_u64);
        Some(format!("{}.{}.{}", n("major")?, n("minor")?, n("micro")?))
    }

    /// Runs a command and returns its `return` value; events received meanwhile are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let w = self.reader.get_mut();
        w.write_all(msg.to_string().as_bytes())?;
        w.write_all(b"\n")?;
        w.flush()?;
        loop {
            let m = self.read_message()?;
            if m.get("event").is_some() {
                tracing::debug!(event = %short(&m), "QMP event");
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
                return Err(QmpError::Command { command: command.to_owned(), class: s("class"), desc: s("desc") });
            }
            return Err(QmpError::Protocol(format!("unexpected reply {}", short(&m))));
        }
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let n = self.reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        if line.len() > MAX_LINE {
            return Err(QmpError::Protocol(format!("line longer than {MAX_LINE} bytes")));
        }
        let v: Value =
            serde_json::from_slice(&line).map_err(|e| QmpError::Protocol(format!("line is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(QmpError::Protocol(format!("message is not an object: {}", short(&v))));
        }
        Ok(v)
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn fake_qemu(
        script: Vec<&'static str>,
    ) -> (tempfile::TempDir, std::path::PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut got = Vec::new();
            w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n").unwrap();
            for reply in script {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap() == 0 {
                    break;
                }
                got.push(l.trim().to_owned());
                w.write_all(reply.as_bytes()).unwrap();
            }
            got
        });
        (dir, path, h)
    }

    #[test]
    fn negotiates_and_skips_events() {
        let (_d, path, h) = fake_qemu(vec![
            "{\"return\": {}}\n",
            "{\"event\": \"RESUME\", \"timestamp\": {}}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n",
            "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}\n",
        ]);
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(q.qemu_version().as_deref(), Some("7.2.22"));
        let st = q.execute("query-status", None).unwrap();
        assert_eq!(st["status"], "running");
        let e = q.execute("nope", None).unwrap_err();
        assert!(matches!(e, QmpError::Command { ref class, .. } if class == "CommandNotFound"), "{e}");
        drop(q);
        let got = h.join().unwrap();
        assert_eq!(got[0], "{\"execute\":\"qmp_capabilities\"}");
    }

    #[test]
    fn rejects_garbage() {
        let (_d, path, _h) = fake_qemu(vec!["not json\n"]);
        let e = Qmp::connect(&path, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, QmpError::Protocol(_)), "{e}");
    }
}
