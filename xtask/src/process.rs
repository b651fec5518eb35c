//! Running external programs. This is the one place that turns an xshell `Cmd` into a
//! `std::process::Command`, echoes it, streams its stdin or stdout through a fixed-size
//! buffer (xshell's `read()` and `.stdin()` would hold a whole dump in memory), and turns
//! a failed exit into an error that carries the program's own message.

use std::{
    fs::File,
    io::{self, Read, Write},
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use xshell::Cmd;

use crate::output::{self, Progress, step};

/// Copy buffer for dumps: large enough that a pipe read never has to be split.
const BUF_SIZE: usize = 256 * 1024;
/// The pipe from a dump, when the kernel allows (`/proc/sys/fs/pipe-max-size`, 1 MiB by default).
const PIPE_SIZE: usize = 1024 * 1024;
/// How much of a program's stderr is kept for the error message; the rest scrolls away.
const STDERR_TAIL: usize = 16 * 1024;

/// Runs a command to completion, its output kept only for the error message.
pub fn run(what: &str, cmd: Cmd<'_>) -> Result<()> {
    Running::spawn(what, cmd, Stdio::null(), Stdio::null())?.finish_shown().map(drop)
}

/// Runs a command with stdin and stdout connected as a shell's `<` and `>` would, with
/// nothing of ours in between (the benchmark's bare pipe); returns its stderr unshown.
pub fn run_redirected(what: &str, cmd: Cmd<'_>, stdin: Stdio, stdout: Stdio) -> Result<String> {
    Running::spawn(what, cmd, stdin, stdout)?.finish()
}

/// Runs a command with its output going straight to ours, for long tasks a person watches.
pub fn run_attached(what: &str, cmd: Cmd<'_>) -> Result<()> {
    let shown = cmd.to_string();
    step!("$ {shown}");
    let status = Command::from(cmd).status().with_context(|| format!("cannot start `{shown}`"))?;
    check(what, status, "")
}

/// Runs a command whose output is small (a query result, a list of services) and returns it.
pub fn read(what: &str, cmd: Cmd<'_>) -> Result<String> {
    let mut running = Running::spawn(what, cmd, Stdio::null(), Stdio::piped())?;
    let mut text = String::new();
    let read = running.child.stdout.take().expect("piped").read_to_string(&mut text);
    running.finish_shown()?;
    read.with_context(|| format!("reading the output of {what}"))?;
    Ok(text)
}

/// Whether a command succeeds; quiet, for probes repeated in a loop.
pub fn succeeds(cmd: Cmd<'_>) -> bool {
    Command::from(cmd.quiet())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Streams the command's stdout into `sink`. A program that
/// fails is reported in its own words; a sink that fails (a full disk) stops the program.
pub fn stream_out(what: &str, cmd: Cmd<'_>, sink: &mut dyn Write) -> Result<()> {
    let mut running = Running::spawn(what, cmd, Stdio::null(), Stdio::piped())?;
    let mut stdout = running.child.stdout.take().expect("piped");
    // A 64 KiB pipe wakes both sides sixteen times per MiB; a larger one lets the program
    // write on while this side is busy. Best effort: the kernel may cap it.
    let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE);
    match copy(&mut stdout, sink) {
        Ok(()) => {
            drop(stdout);
            running.finish_shown().map(drop)
        }
        Err(err) => {
            running.abandon();
            Err(anyhow!("{err}"))
        }
    }
}

/// Runs the command with its stdout going straight into `file` (the program writes it
/// itself, as with a shell's `>`, which spares a pipe hop through this process), while
/// `sink` sees every byte as it lands, read back through `follow`, another handle on the
/// same file: one pass from the page cache, memory flat.
pub fn stream_into_file(what: &str, cmd: Cmd<'_>, file: &File, follow: &mut File, sink: &mut dyn Write) -> Result<()> {
    let mut running = Running::spawn(what, cmd, Stdio::null(), Stdio::from(file.try_clone()?))?;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut exited = false;
    loop {
        let n = match follow.read(&mut buf) {
            Ok(0) if exited => break,
            Ok(0) => {
                // Caught up: once the program has exited, one more read takes the rest.
                exited = match running.child.try_wait() {
                    Ok(status) => status.is_some(),
                    Err(err) => {
                        running.abandon();
                        return Err(anyhow!("waiting for {what} failed: {err}"));
                    }
                };
                if !exited {
                    thread::sleep(Duration::from_millis(2));
                }
                continue;
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                running.abandon();
                return Err(anyhow!("reading back failed: {err}"));
            }
        };
        if let Err(err) = sink.write_all(&buf[..n]) {
            running.abandon();
            return Err(anyhow!("{err}"));
        }
    }
    running.finish_shown()?;
    Ok(sink.flush()?)
}

/// Runs the command with `file` as its stdin, as a shell's `<` would: no pipe hop through
/// this process. `progress` learns how far it has read from the kernel's record of the
/// file offset.
pub fn stream_from_file(what: &str, cmd: Cmd<'_>, file: File, progress: &mut Progress) -> Result<()> {
    let mut running = Running::spawn(what, cmd, Stdio::from(file), Stdio::null())?;
    let fdinfo = format!("/proc/{}/fdinfo/0", running.child.id());
    while running.child.try_wait()?.is_none() {
        let pos = std::fs::read_to_string(&fdinfo)
            .ok()
            .and_then(|info| info.lines().find_map(|line| line.strip_prefix("pos:")?.trim().parse::<u64>().ok()));
        if let Some(pos) = pos {
            progress.add(pos.saturating_sub(progress.bytes()) as usize);
        }
        thread::sleep(Duration::from_millis(50));
    }
    running.finish_shown().map(drop)
}

/// Streams `source` into the command's stdin.
pub fn stream_in(what: &str, cmd: Cmd<'_>, source: &mut dyn Read) -> Result<()> {
    let mut running = Running::spawn(what, cmd, Stdio::piped(), Stdio::null())?;
    let mut stdin = running.child.stdin.take().expect("piped");
    let copied = copy(source, &mut stdin);
    // Closing stdin is the end of input.
    drop(stdin);
    match copied {
        Ok(()) => running.finish_shown().map(drop),
        // The program stopped reading: its own message (an SQL error) says why.
        Err(CopyError::Write(err)) => {
            running.finish_shown()?;
            Err(anyhow!("{what} stopped reading its input: {err}"))
        }
        Err(err @ CopyError::Read(_)) => {
            running.abandon();
            Err(anyhow!("{err}"))
        }
    }
}

#[derive(Debug)]
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Read(err) => write!(f, "reading failed: {err}"),
            CopyError::Write(err) => write!(f, "writing failed: {err}"),
        }
    }
}

fn copy(source: &mut dyn Read, sink: &mut dyn Write) -> Result<(), CopyError> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CopyError::Read(err)),
        };
        sink.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    sink.flush().map_err(CopyError::Write)
}

struct Running {
    what: String,
    child: Child,
    stderr: JoinHandle<String>,
}

impl Running {
    fn spawn(what: &str, cmd: Cmd<'_>, stdin: Stdio, stdout: Stdio) -> Result<Running> {
        let shown = cmd.to_string();
        step!("$ {shown}");
        let mut child = Command::from(cmd)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stderr = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || keep_tail(stderr));
        Ok(Running { what: what.to_owned(), child, stderr })
    }

    /// Stops the program after our side failed; its exit says nothing more than our error.
    fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.stderr.join();
    }

    /// Waits for the program; on failure its stderr is the error, on success it is returned.
    fn finish(mut self) -> Result<String> {
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.what))?;
        let stderr = self.stderr.join().unwrap_or_default();
        check(&self.what, status, &stderr)?;
        Ok(stderr)
    }

    /// As `finish`, showing a successful program's stderr (its warnings) in our log.
    fn finish_shown(self) -> Result<String> {
        let what = self.what.clone();
        let stderr = self.finish()?;
        for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
            output::line(format_args!("  {what} | {}", line.trim_end()));
        }
        Ok(stderr)
    }
}

fn check(what: &str, status: ExitStatus, stderr: &str) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    };
    let said = one_line(stderr);
    if said.is_empty() { Err(anyhow!("{what} {how}")) } else { Err(anyhow!("{what} {how}: {said}")) }
}

/// A program's stderr folded onto one line, as the last, most telling part of it.
fn one_line(stderr: &str) -> String {
    const MAX: usize = 600;
    let joined = stderr
        .lines()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        // Compose v2 draws progress with escape sequences; they are noise in a message.
        .map(|line| line.replace("\x1b[2K", "").replace('\r', ""))
        .collect::<Vec<_>>()
        .join(" | ");
    match joined.char_indices().rev().nth(MAX) {
        Some((cut, _)) => format!("...{}", &joined[cut..]),
        None => joined,
    }
}

fn keep_tail(mut stderr: ChildStderr) -> String {
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut buf) {
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn stderr_is_folded_onto_one_line() {
        let said = one_line("pg_dump: error: query failed\npg_dump: detail: permission denied\n\n");
        assert_eq!(said, "pg_dump: error: query failed | pg_dump: detail: permission denied");
        let long = "x".repeat(2000);
        assert!(one_line(&long).starts_with("...") && one_line(&long).len() < 700);
    }
}
