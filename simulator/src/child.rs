//! Child processes the simulator starts (Switchyard, Envoy, peer routers): the end of their
//! output kept for error messages, and a stop that asks before it kills.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, Command};

/// The end of a child's output: the last 32–64 KiB, so a chatty child never grows it unbounded.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<String>>);

impl LogTail {
    pub fn push(&self, line: &str) {
        let mut l = self.0.lock();
        if l.len() > 64 * 1024 {
            let cut = l.len() - 32 * 1024;
            let cut = (cut..l.len()).find(|i| l.is_char_boundary(*i)).unwrap_or(0);
            l.replace_range(..cut, "…\n");
        }
        l.push_str(line);
        l.push('\n');
    }

    pub fn text(&self) -> String {
        self.0.lock().clone()
    }

    /// Keeps reading `reader` into the tail, so the child never blocks on a full pipe.
    pub fn drain<R>(&self, reader: R)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.drain_lines(BufReader::new(reader).lines());
    }

    /// The same, for a reader whose first lines the caller already consumed.
    pub fn drain_lines<R>(&self, mut lines: Lines<BufReader<R>>)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let tail = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tail.push(&line);
            }
        });
    }
}

/// SIGTERM, then SIGKILL if the child has not exited within 5 s.
pub async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_stays_bounded_and_keeps_the_newest_lines() {
        let t = LogTail::default();
        for i in 0..20_000 {
            t.push(&format!("line {i}"));
        }
        let text = t.text();
        assert!(text.len() <= 64 * 1024 + 16, "{}", text.len());
        assert!(text.ends_with("line 19999\n"));
        assert!(text.starts_with('…'));
    }
}
