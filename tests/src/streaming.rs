//! A helper process (a Kafka client script) whose stdout is one JSON object per line,
//! read as it runs: a test acts on what the process has said so far and stops it by its
//! process id when it is done with it (or when the test fails: on drop).

// Only tests use this module, and a panic with a message is how a test fails.
#![allow(clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::json::Json;

const POLL: Duration = Duration::from_millis(50);

pub struct Streaming {
    child: Child,
    lines: Arc<Mutex<Vec<Json>>>,
    reader: Option<JoinHandle<()>>,
}

impl Streaming {
    /// Starts `command` with its stdout piped (stderr goes to the test's).
    pub fn start(mut command: Command) -> Streaming {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().expect("starting a helper process");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines: Arc<Mutex<Vec<Json>>> = Arc::default();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let json = Json::parse(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
                sink.lock().expect("the lines (a reader panicked)").push(json);
            }
        });
        Streaming { child, lines, reader: Some(reader) }
    }

    /// How many lines so far have `key`.
    pub fn count(&self, key: &str) -> usize {
        self.lines.lock().expect("the lines (a reader panicked)").iter().filter(|l| l.get(key).is_some()).count()
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<Json> {
        self.lines.lock().expect("the lines (a reader panicked)").clone()
    }

    /// Waits (at most `limit`) until a line has `key`.
    pub fn wait_for(&self, key: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count(key) == 0 {
            assert!(Instant::now() < deadline, "no {key:?} line after {limit:?}: {:?}", self.lines());
            std::thread::sleep(POLL);
        }
    }

    /// Waits (at most `limit`) for the process to exit by itself; its lines.
    pub fn finish(mut self, limit: Duration) -> Vec<Json> {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().expect("the helper process's status").is_none() {
            assert!(Instant::now() < deadline, "the helper process still runs after {limit:?}");
            std::thread::sleep(POLL);
        }
        self.join_reader()
    }

    /// Stops the process with SIGKILL (it gets no chance to say goodbye); its lines.
    pub fn kill(mut self) -> Vec<Json> {
        self.stop();
        self.join_reader()
    }

    fn join_reader(&mut self) -> Vec<Json> {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the line reader");
        }
        self.lines.lock().expect("the lines (a reader panicked)").clone()
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.stop();
    }
}
