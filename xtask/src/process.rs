//! Running external programs. This is the one place that turns an xshell `Cmd` into a
//! `std::process::Command`, echoes it (with `-v` only, shell-quoted so that it can be
//! pasted into sh; xshell's own echo is off), streams its stdin or stdout through a fixed-size
//! buffer (xshell's `read()` and `.stdin()` would hold a whole dump in memory), and turns
//! a failed exit into a typed `Failure` that carries the program, its exit code and the
//! tail of its stderr.
//!
//! Every program runs in its own process group, so a terminal's Ctrl-C reaches this
//! process alone; `interrupt` ends the programs in order. Work programs are not started
//! once a signal has arrived, and are stopped when one does; cleanup programs (dropping a
//! scratch database) still run.

use std::{
    ffi::OsStr,
    fmt,
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::process::CommandExt,
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use xshell::Cmd;

use crate::{
    interrupt::{self, OnStop, Stage},
    output::{self, Level},
};

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

/// Runs a command that cleans up after this run, also once a signal has arrived.
pub fn read_cleanup(what: &str, cmd: Cmd<'_>) -> Result<String> {
    let mut running = Running::start(what, cmd, Stdio::null(), Stdio::piped(), Kind::Cleanup)?;
    let mut text = String::new();
    let read = running.child.stdout.take().expect("piped").read_to_string(&mut text);
    running.finish_shown()?;
    read.with_context(|| format!("reading the output of {what}"))?;
    Ok(text)
}

/// Runs a command with stdin and stdout connected as a shell's `<` and `>` would, with
/// nothing of ours in between (the benchmark's bare pipe); returns its stderr unshown.
pub fn run_redirected(what: &str, cmd: Cmd<'_>, stdin: Stdio, stdout: Stdio) -> Result<String> {
    Ok(Running::spawn(what, cmd, stdin, stdout)?.finish()?)
}

/// As [`run_redirected`], calling `started` with the program's process id once it runs
/// and before it is waited for (the benchmark samples its memory from `/proc` meanwhile).
pub fn run_redirected_watched(
    what: &str,
    cmd: Cmd<'_>,
    stdin: Stdio,
    stdout: Stdio,
    started: impl FnOnce(u32),
) -> Result<String> {
    let running = Running::spawn(what, cmd, stdin, stdout)?;
    started(running.child.id());
    Ok(running.finish()?)
}

/// Runs a command with its output going straight to ours, for long tasks a person watches.
pub fn run_attached(what: &str, cmd: Cmd<'_>) -> Result<()> {
    let (mut command, shown) = prepare(cmd);
    let status = command.status().with_context(|| format!("cannot start `{shown}`"))?;
    Ok(check(what, status, "")?)
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

/// Runs a command with `input` on its stdin (small: a script) and returns its output.
pub fn read_fed(what: &str, cmd: Cmd<'_>, input: &[u8]) -> Result<String> {
    let mut running = Running::spawn(what, cmd, Stdio::piped(), Stdio::piped())?;
    let mut stdin = running.child.stdin.take().expect("piped");
    let input = input.to_vec();
    // A thread writes, so a program that answers before it has read everything cannot
    // fill its output pipe while this side is still writing.
    let writer = thread::spawn(move || stdin.write_all(&input));
    let mut text = String::new();
    let read = running.child.stdout.take().expect("piped").read_to_string(&mut text);
    let _ = writer.join();
    running.finish_shown()?;
    read.with_context(|| format!("reading the output of {what}"))?;
    Ok(text)
}

/// Runs a small command for a question asked in passing, whose failure is an answer
/// (echoed with -v like every command); its output, or how it failed.
pub fn read_quiet(cmd: Cmd<'_>) -> Result<String, Failure> {
    let (mut command, what) = prepare(cmd);
    let output = command.process_group(0).stdin(Stdio::null()).output();
    match output {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            Err(Failure { what, code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() })
        }
        Err(err) => Err(Failure { what, code: None, stderr: err.to_string() }),
    }
}

/// Whether a command succeeds; never echoed, not even with `-v`: probes repeat in a loop
/// (every half second while a database starts) and would drown the steps.
pub fn succeeds(cmd: Cmd<'_>) -> bool {
    interrupt::check().is_ok()
        && Command::from(cmd.quiet())
            .process_group(0)
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

/// A program whose stdin this process writes: a load fed piece by piece, whose end (and
/// whether a `COMMIT` comes before it) the caller decides.
pub struct Feeding {
    running: Option<Running>,
    stdin: Option<ChildStdin>,
}

impl Feeding {
    pub fn start(what: &str, cmd: Cmd<'_>) -> Result<Feeding> {
        Feeding::start_with(what, cmd, Stdio::null())
    }

    /// As `start`, with the program's stdout for the caller to read (`stdout`), on a
    /// thread of its own so neither side waits on the other.
    pub fn start_reading(what: &str, cmd: Cmd<'_>) -> Result<Feeding> {
        Feeding::start_with(what, cmd, Stdio::piped())
    }

    /// The program's stdout, once, when started with `start_reading`.
    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.running.as_mut()?.child.stdout.take()
    }

    fn start_with(what: &str, cmd: Cmd<'_>, stdout: Stdio) -> Result<Feeding> {
        let mut running = Running::spawn(what, cmd, Stdio::piped(), stdout)?;
        let stdin = running.child.stdin.take();
        // A larger pipe lets this side run ahead while the program works.
        if let Some(stdin) = &stdin {
            let _ = rustix::pipe::fcntl_setpipe_size(stdin, PIPE_SIZE);
        }
        Ok(Feeding { running: Some(running), stdin })
    }

    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("open until finish")
    }

    /// Stdin, once, for a thread of the caller's that feeds it (a download into `age -d`);
    /// dropping it is the end of input.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Closes stdin (the end of input) and waits: the program's own failure, if any.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        self.running.take().expect("running until finished").finish_shown().map(drop)
    }

    /// Ends the input early and waits, without judging the exit: the caller already
    /// knows what went wrong; the program's own words are added when it failed too.
    pub fn close(mut self) -> Option<Failure> {
        drop(self.stdin.take());
        self.running.take().expect("running until finished").finish().err()
    }
}

impl Drop for Feeding {
    /// Left on an early return (a signal): ended and waited for, never left behind.
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(running) = self.running.take() {
            running.abandon();
        }
    }
}

/// A program started now and waited for later, its (small) stdout gathered on a thread:
/// work that runs beside the main one, such as the roles' dump beside pg_dump.
pub struct Background {
    running: Running,
    out: JoinHandle<String>,
}

impl Background {
    pub fn start(what: &str, cmd: Cmd<'_>) -> Result<Background> {
        let mut running = Running::spawn(what, cmd, Stdio::null(), Stdio::piped())?;
        let mut stdout = running.child.stdout.take().expect("piped");
        let out = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Ok(Background { running, out })
    }

    /// Its output, or its failure in its own words.
    pub fn finish(self) -> Result<String> {
        let text = self.out.join().unwrap_or_default();
        self.running.finish()?;
        Ok(text)
    }
}

/// A program this process talks to line by line for the length of the run, such as the
/// psql session that holds the database lock. It is not stopped by a signal: it goes
/// when dropped, after the cleanup it protects.
pub struct Conversation {
    running: Running,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Conversation {
    pub fn start(what: &str, cmd: Cmd<'_>) -> Result<Conversation> {
        let mut running = Running::start(what, cmd, Stdio::piped(), Stdio::piped(), Kind::Held)?;
        let stdin = running.child.stdin.take().expect("piped");
        let stdout = BufReader::new(running.child.stdout.take().expect("piped"));
        Ok(Conversation { running, stdin, stdout })
    }

    /// Sends `text` and reads lines until one equals `end`; the lines before it come back.
    pub fn ask(&mut self, text: &str, end: &str) -> Result<Vec<String>> {
        let what = self.running.what.clone();
        self.stdin.write_all(text.as_bytes()).and_then(|()| self.stdin.flush()).map_err(|_| self.gone())?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.gone()).with_context(|| format!("{what} ended")),
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line == end {
                return Ok(lines);
            }
            lines.push(line.to_owned());
        }
    }

    /// The program's failure, once it is known to have ended.
    fn gone(&mut self) -> anyhow::Error {
        let status = self.running.child.wait();
        let stderr = std::mem::replace(&mut self.running.stderr, thread::spawn(String::new));
        let stderr = stderr.join().unwrap_or_default();
        match status {
            Ok(status) => match check(&self.running.what, status, &stderr) {
                Ok(()) => anyhow!("{} ended early: {}", self.running.what, one_line(&stderr)),
                Err(failure) => failure.into(),
            },
            Err(err) => anyhow!("waiting for {}: {err}", self.running.what),
        }
    }

    /// Ends the conversation: closing stdin ends the program.
    pub fn end(self) {
        let Conversation { running, stdin, stdout } = self;
        drop(stdin);
        drop(stdout);
        let _ = running.finish();
    }
}

/// How a program relates to a signal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not started after a signal; stopped when one arrives.
    Work,
    /// Runs also after a signal: it cleans up.
    Cleanup,
    /// Not started after a signal, but kept when one arrives (the lock's session).
    Held,
}

struct Running {
    what: String,
    child: Child,
    stderr: JoinHandle<String>,
    _on_stop: Option<OnStop>,
}

impl Running {
    fn spawn(what: &str, cmd: Cmd<'_>, stdin: Stdio, stdout: Stdio) -> Result<Running> {
        Running::start(what, cmd, stdin, stdout, Kind::Work)
    }

    fn start(what: &str, cmd: Cmd<'_>, stdin: Stdio, stdout: Stdio, kind: Kind) -> Result<Running> {
        if kind != Kind::Cleanup {
            interrupt::check()?;
        }
        let (mut command, shown) = prepare(cmd);
        let mut child = command
            .process_group(0)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stderr = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || keep_tail(stderr));
        let on_stop = (kind == Kind::Work).then(|| {
            let group = rustix::process::Pid::from_child(&child);
            interrupt::on_stop(Stage::Programs, move || {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
            })
        });
        Ok(Running { what: what.to_owned(), child, stderr, _on_stop: on_stop })
    }

    /// Stops the program after our side failed; its exit says nothing more than our error.
    fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.stderr.join();
    }

    /// Waits for the program; on failure its stderr is the error, on success it is returned.
    fn finish(mut self) -> Result<String, Failure> {
        let status = self.child.wait();
        let stderr = self.stderr.join().unwrap_or_default();
        match status {
            Ok(status) => check(&self.what, status, &stderr).map(|()| stderr),
            Err(err) => Err(Failure { what: self.what, code: None, stderr: format!("waiting failed: {err}") }),
        }
    }

    /// As `finish`, showing a successful program's stderr in our log: its warnings at
    /// every level, the rest (Compose's progress, psql's notices) only with `-v`.
    fn finish_shown(self) -> Result<String> {
        let what = self.what.clone();
        let stderr = self.finish()?;
        for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
            let level = if line.to_lowercase().contains("warning") { Level::Quiet } else { Level::Verbose };
            output::line_at(level, format_args!("  {what} | {}", line.trim_end()));
        }
        Ok(stderr)
    }
}

/// The `Command` for `cmd`, with xshell's own echo off, and how it is shown: echoed now
/// with `-v`, and the same text in messages about it.
fn prepare(cmd: Cmd<'_>) -> (Command, String) {
    let command = Command::from(cmd.quiet());
    let shown = shown(&command, &crate::project_root());
    output::line_at(Level::Verbose, format_args!("$ {shown}"));
    (command, shown)
}

/// `command` as sh would take it: `cd DIR && ` when it runs elsewhere than the repository
/// root, the variables set for it (a secret's value hidden), then the program and its
/// arguments, each quoted only when it needs to be.
pub fn shown(command: &Command, root: &std::path::Path) -> String {
    let mut words = Vec::new();
    if let Some(dir) = command.get_current_dir().filter(|dir| *dir != root) {
        words.push(format!("cd {} &&", quote(dir.as_os_str())));
    }
    for (key, value) in command.get_envs() {
        let Some(value) = value else { continue };
        let key = key.to_string_lossy();
        let value = if is_secret(&key) { quote(OsStr::new("<hidden>")) } else { quote(value) };
        words.push(format!("{key}={value}"));
    }
    words.push(quote(command.get_program()));
    words.extend(command.get_args().map(quote));
    words.join(" ")
}

/// A variable whose value must never be printed: a password, or a URL, which may carry one.
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "URL", "DSN", "CREDENTIAL"].iter().any(|word| name.contains(word))
}

/// One word for a POSIX shell: as it is when nothing in it is special, else in single
/// quotes, each `'` written `'\''` (close, an escaped quote, reopen).
pub fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:,+=@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.into_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A program that failed: which, its exit code (`None`: killed by a signal), and the
/// last part of what it said on stderr.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub code: Option<i32>,
    pub stderr: String,
}

impl Failure {
    /// The failure somewhere in an error's chain, for callers that act on its kind.
    pub fn in_chain(err: &anyhow::Error) -> Option<&Failure> {
        err.chain().find_map(|cause| cause.downcast_ref::<Failure>())
    }

    /// Whether the program said `text` (case-insensitive) on stderr.
    pub fn said(&self, text: &str) -> bool {
        self.stderr.to_lowercase().contains(&text.to_lowercase())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} exited with status {code}", self.what)?,
            None => write!(f, "{} was killed by a signal", self.what)?,
        }
        match one_line(&self.stderr) {
            said if said.is_empty() => Ok(()),
            said => write!(f, ": {said}"),
        }
    }
}

impl std::error::Error for Failure {}

fn check(what: &str, status: ExitStatus, stderr: &str) -> Result<(), Failure> {
    if status.success() {
        return Ok(());
    }
    Err(Failure { what: what.to_owned(), code: status.code(), stderr: stderr.to_owned() })
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
    use std::{ffi::OsStr, path::Path, process::Command};

    use super::{one_line, quote, shown};

    #[test]
    fn words_are_quoted_for_sh() {
        let q = |word: &str| quote(OsStr::new(word));
        assert_eq!(q("psql"), "psql");
        assert_eq!(q("/usr/bin/docker"), "/usr/bin/docker");
        assert_eq!(q("ON_ERROR_STOP=1"), "ON_ERROR_STOP=1");
        assert_eq!(q(""), "''");
        assert_eq!(q("a b"), "'a b'");
        assert_eq!(q("it's"), r"'it'\''s'");
        assert_eq!(
            q("SELECT datname FROM pg_database WHERE starts_with(datname, 'hindsight_db__verify_')"),
            r"'SELECT datname FROM pg_database WHERE starts_with(datname, '\''hindsight_db__verify_'\'')'"
        );
        assert_eq!(q("$HOME `x` \\ \"q\" *"), "'$HOME `x` \\ \"q\" *'");
    }

    #[test]
    fn quoted_words_come_back_whole_through_sh() {
        let words = ["it's", "dbname='a b' application_name='x:y'", "$HOME `id` \\n \"q\"", "", "-c", "*"];
        let line = words.iter().map(|w| quote(OsStr::new(w))).collect::<Vec<_>>().join(" ");
        let out = Command::new("sh").args(["-c", &format!("printf '%s\\n' {line}")]).output().unwrap();
        let back: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(back, words);
    }

    #[test]
    fn a_command_is_shown_with_its_directory_and_variables_but_no_secret() {
        let mut command = Command::new("/usr/bin/uv");
        command.args(["run", "alembic", "upgrade", "head"]).current_dir("/repo/migrations");
        command.env("DATABASE_URL", "postgresql://user:s3cret@127.0.0.1:5432/db").env("COMPOSE_PROJECT_NAME", "my app");
        let text = shown(&command, Path::new("/repo"));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.starts_with("cd /repo/migrations && "), "{text}");
        assert!(text.contains("COMPOSE_PROJECT_NAME='my app'"), "{text}");
        assert!(text.contains("DATABASE_URL='<hidden>'"), "{text}");
        assert!(text.ends_with("/usr/bin/uv run alembic upgrade head"), "{text}");
        let mut at_root = Command::new("psql");
        at_root.current_dir("/repo").env("POSTGRES_PASSWORD", "pw");
        assert_eq!(shown(&at_root, Path::new("/repo")), "POSTGRES_PASSWORD='<hidden>' psql");
    }

    #[test]
    fn stderr_is_folded_onto_one_line() {
        let said = one_line("pg_dump: error: query failed\npg_dump: detail: permission denied\n\n");
        assert_eq!(said, "pg_dump: error: query failed | pg_dump: detail: permission denied");
        let long = "x".repeat(2000);
        assert!(one_line(&long).starts_with("...") && one_line(&long).len() < 700);
    }
}
