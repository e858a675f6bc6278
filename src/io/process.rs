//! Running a check's command: the one place the agent starts processes.
//!
//! The command runs in a process group of its own, so a timeout can kill everything it started
//! (`sh -c 'slow & slower'` leaves grandchildren that killing the shell alone would orphan), as
//! Consul's `KillCommandSubtree` does. Standard output and error go to one buffer that keeps the
//! last bytes written (Consul's `circbuf`), so an endless stream cannot grow memory.
//! Not simulated: under madsim the simulator uses a scripted prober instead of processes.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// How a command ended.
#[derive(Debug)]
pub enum ProcessEnd {
    Exited(ExitStatus),
    /// Still running at the timeout; its process group was killed.
    TimedOut,
    /// It could not be started (not found, not executable, ...) or watched; anything it
    /// started was killed.
    Failed(std::io::Error),
}

/// What a command did and what it wrote.
#[derive(Debug)]
pub struct ProcessRun {
    pub end: ProcessEnd,
    pub output: CapturedOutput,
}

/// The last `capacity` bytes of a stream and how many were written in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedOutput {
    tail: VecDeque<u8>,
    capacity: usize,
    total: u64,
}

impl CapturedOutput {
    pub fn new(capacity: usize) -> Self {
        CapturedOutput { tail: VecDeque::with_capacity(capacity.min(64 * 1024)), capacity, total: 0 }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let overflow = (self.tail.len() + keep.len()).saturating_sub(self.capacity);
        self.tail.drain(..overflow);
        self.tail.extend(keep);
    }

    /// Bytes written in all, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept bytes, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        let (front, back) = self.tail.as_slices();
        String::from_utf8_lossy(&[front, back].concat()).into_owned()
    }

    /// [`Self::text`] after Consul's `Captured N of M bytes\n...\n` when some bytes were dropped.
    pub fn render(&self) -> String {
        let text = self.text();
        if self.total > self.tail.len() as u64 {
            format!("Captured {} of {} bytes\n...\n{text}", self.tail.len(), self.total)
        } else {
            text
        }
    }
}

/// Runs `program` with `args` (no shell), stdin from /dev/null, for at most `timeout`, keeping
/// the last `output_len_max` bytes of its stdout and stderr together. The command has finished
/// when it exited and closed both streams; anything it left running in its process group when
/// the timeout hits is killed with it, and the call returns after the command is reaped, so
/// two runs of one check never overlap.
pub async fn run_command(program: &str, args: &[String], timeout: Duration, output_len_max: usize) -> ProcessRun {
    let mut output = CapturedOutput::new(output_len_max);
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return ProcessRun { end: ProcessEnd::Failed(e), output },
    };
    let end = match crate::io::timeout(timeout, collect(&mut child, &mut output)).await {
        Ok(Ok(status)) => ProcessEnd::Exited(status),
        Ok(Err(e)) => {
            kill_group(&child);
            let _ = child.wait().await;
            ProcessEnd::Failed(e)
        }
        Err(_) => {
            kill_group(&child);
            let _ = child.wait().await;
            ProcessEnd::TimedOut
        }
    };
    ProcessRun { end, output }
}

/// Reads stdout and stderr as they come until both close, then waits for the exit.
async fn collect(child: &mut Child, output: &mut CapturedOutput) -> std::io::Result<ExitStatus> {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out_buf, mut err_buf) = ([0u8; 4096], [0u8; 4096]);
    loop {
        tokio::select! {
            biased;
            read = async { stdout.as_mut().expect("guarded").read(&mut out_buf).await }, if stdout.is_some() => {
                match read? {
                    0 => stdout = None,
                    n => output.write(&out_buf[..n]),
                }
            }
            read = async { stderr.as_mut().expect("guarded").read(&mut err_buf).await }, if stderr.is_some() => {
                match read? {
                    0 => stderr = None,
                    n => output.write(&err_buf[..n]),
                }
            }
            else => break,
        }
    }
    child.wait().await
}

/// SIGKILL to the child's process group (its ID: it was started with `process_group(0)`).
fn kill_group(child: &Child) {
    let Some(pid) = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) else { return };
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        // ESRCH: the group is already gone, which is what we wanted.
        if e != rustix::io::Errno::SRCH {
            tracing::warn!(error = %e, "could not kill a check's process group");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer keeps the last bytes and counts all of them, however the writes are split.
    #[test]
    fn captured_output_keeps_the_tail() {
        let mut output = CapturedOutput::new(4);
        output.write(b"ab");
        assert_eq!(output.render(), "ab");
        output.write(b"cdef");
        output.write(b"");
        output.write(b"g");
        assert_eq!(output.render(), "Captured 4 of 7 bytes\n...\ndefg");
        let mut big = CapturedOutput::new(3);
        big.write(b"0123456789");
        assert_eq!((big.render(), big.total()), ("Captured 3 of 10 bytes\n...\n789".to_owned(), 10));
    }
}
