//! Child processes for multi-process tests: the test binary re-executed to
//! run one `#[test]` entry (which does nothing unless its environment
//! variable is set), with piped stdin/stdout for a line protocol, killed
//! and reaped on drop so a failing test never leaves one behind.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};

/// A running child test process.
pub struct Child {
    inner: std::process::Child,
    stdout: BufReader<ChildStdout>,
    stdin: Option<ChildStdin>,
    reaped: bool,
}

impl Child {
    /// Starts `entry` (an `#[test]` fn of the current test binary) with the
    /// given environment. `pass_fd`, if set, is inherited by the child under
    /// the same number (its close-on-exec flag is cleared in the child only).
    pub fn spawn(entry: &str, envs: &[(&str, String)], pass_fd: Option<i32>) -> Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some(fd) = pass_fd {
            // SAFETY: the closure runs in the forked child before exec and
            // only calls fcntl, which is async-signal-safe; it touches no
            // memory shared with the parent.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut inner = cmd.spawn().expect("spawn child test process");
        let stdout = BufReader::new(inner.stdout.take().unwrap());
        let stdin = inner.stdin.take();
        Child {
            inner,
            stdout,
            stdin,
            reaped: false,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Reads stdout lines until one contains `marker` (libtest may print
    /// `test name ... ` before it on the same line); returns the rest of that
    /// line, split on whitespace. Panics if the child's output ends or
    /// nothing arrives for 60 s.
    pub fn expect_line(&mut self, marker: &str) -> Vec<String> {
        use std::os::unix::io::AsRawFd;
        let mut seen = String::new();
        loop {
            if self.stdout.buffer().is_empty() {
                let mut pfd = libc::pollfd {
                    fd: self.stdout.get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 60_000) };
                assert!(
                    n > 0,
                    "child printed nothing for 60 s; output so far:\n{seen}"
                );
            }
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read child stdout");
            if n == 0 {
                panic!("child ended without printing {marker:?}; output:\n{seen}");
            }
            if let Some(at) = line.find(marker) {
                let rest = &line[at + marker.len()..];
                return rest.split_whitespace().map(str::to_string).collect();
            }
            seen.push_str(&line);
        }
    }

    /// Sends one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write child stdin");
        stdin.flush().unwrap();
    }

    /// SIGKILL, then reap (a zombie would still look alive in /proc).
    pub fn kill9(&mut self) {
        // SAFETY: plain syscall; the pid is our unreaped child.
        let rc = unsafe { libc::kill(self.inner.id() as i32, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        let st = self.inner.wait().expect("wait");
        self.reaped = true;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
    }

    /// Closes stdin, waits for exit and returns the status and the rest of
    /// stdout.
    pub fn finish(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let st = self.inner.wait().expect("wait");
        self.reaped = true;
        (st, rest)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}

/// Child side: blocks until the parent sends a line or closes stdin;
/// returns the line (empty on EOF).
pub fn wait_for_parent() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line.trim_end().to_string()
}
