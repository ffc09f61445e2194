//! A minimal progress bar on stderr, so that someone replaying a two-month
//! trace through two autoscalers sees it moving and how long is left.
//!
//! It draws only when stderr is a terminal (a log file or CI output should
//! not fill with carriage returns) and not `quiet`, and redraws at most ten
//! times a second whatever the caller's pace: a replay reports millions of
//! intervals, and writing each would cost more than replaying it. When not
//! drawing, [`Progress::update`] is a branch and a store.
//!
//! The line shows the fraction done, intervals done of the total, the rate in
//! intervals per second since the start, and the time left at that rate. It
//! ends with a newline at [`Progress::finish`], or when dropped part-way (a
//! run that fails should not leave its error message glued to the bar).

use std::io::{self, IsTerminal, Stderr, Write};
use std::time::{Duration, Instant};

/// Shortest time between two redraws.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 30;

/// A progress bar over `total` intervals; see the module docs.
pub struct Progress<W: Write = Stderr> {
    /// Where to draw; `None` when quiet or not a terminal.
    out: Option<W>,
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_drawn: Option<Instant>,
}

impl Progress<Stderr> {
    /// A bar labelled `label` over `total` intervals, drawn on stderr unless
    /// `quiet` or stderr is not a terminal.
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        let stderr = io::stderr();
        let out = (!quiet && stderr.is_terminal()).then_some(stderr);
        Progress::with_output(out, label, total, Instant::now())
    }
}

impl<W: Write> Progress<W> {
    fn with_output(out: Option<W>, label: &str, total: u64, started: Instant) -> Self {
        Progress {
            out,
            label: label.to_string(),
            total,
            done: 0,
            started,
            last_drawn: None,
        }
    }

    /// Records that `done` intervals are done, redrawing if it is time.
    pub fn update(&mut self, done: u64) {
        self.done = done;
        if self.out.is_some() {
            self.draw_if_due(Instant::now());
        }
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self) {
        self.finish_at(Instant::now());
    }

    fn draw_if_due(&mut self, now: Instant) {
        let due = self
            .last_drawn
            .is_none_or(|last| now.duration_since(last) >= REDRAW_EVERY);
        if due {
            self.draw(now);
        }
    }

    fn finish_at(&mut self, now: Instant) {
        if self.out.is_some() {
            self.draw(now);
            self.end_line();
        }
    }

    fn draw(&mut self, now: Instant) {
        let line = render_line(
            &self.label,
            self.done,
            self.total,
            now.duration_since(self.started),
        );
        if let Some(out) = &mut self.out {
            // A progress bar that cannot be drawn is not worth failing a run
            // for: stop drawing instead.
            if write!(out, "\r{line}\x1b[K")
                .and_then(|()| out.flush())
                .is_err()
            {
                self.out = None;
                return;
            }
        }
        self.last_drawn = Some(now);
    }

    /// Ends the bar's line, once, so later output starts on a fresh one.
    fn end_line(&mut self) {
        if let Some(mut out) = self.out.take() {
            // Same reasoning as in `draw`: nothing useful to do on failure.
            let _ = writeln!(out).and_then(|()| out.flush());
        }
    }
}

impl<W: Write> Drop for Progress<W> {
    fn drop(&mut self) {
        if self.last_drawn.is_some() {
            self.end_line();
        }
    }
}

/// `label [#####-----]  42.0%  2125179/5059950 intervals  3.1M/s  ETA 1s`
fn render_line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    // In [0, BAR_WIDTH] after the clamp above.
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let left = if rate > 0.0 && done < total {
        format!("  ETA {}", human_duration((total - done) as f64 / rate))
    } else {
        String::new()
    };
    format!(
        "{label} [{bar}] {:5.1}%  {done}/{total} intervals  {}/s{left}",
        fraction * 100.0,
        human_count(rate)
    )
}

/// 950, 12.3k, 4.5M.
fn human_count(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// 42s, 3m05s, 2h07m.
fn human_duration(seconds: f64) -> String {
    // Saturates for absurd values, which then read as very long.
    let seconds = seconds.round() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    #[test]
    fn renders_lines() {
        let cases: &[(u64, u64, u64, &str)] = &[
            (
                0,
                100,
                0,
                "replay [------------------------------]   0.0%  0/100 intervals  0/s",
            ),
            (
                50,
                100,
                10_000,
                "replay [###############---------------]  50.0%  50/100 intervals  5/s  ETA 10s",
            ),
            (
                2_500_000,
                5_000_000,
                1_000,
                "replay [###############---------------]  50.0%  2500000/5000000 intervals  2.5M/s  ETA 1s",
            ),
            (
                1_000,
                1_000,
                2_000,
                "replay [##############################] 100.0%  1000/1000 intervals  500/s",
            ),
            (
                5,
                0,
                1_000,
                "replay [##############################] 100.0%  5/0 intervals  5/s",
            ),
            (
                20,
                10,
                1_000,
                "replay [##############################] 100.0%  20/10 intervals  20/s",
            ),
        ];
        for (done, total, elapsed_ms, want) in cases {
            assert_eq!(
                render_line("replay", *done, *total, Duration::from_millis(*elapsed_ms)),
                *want
            );
        }
    }

    #[test]
    fn formats_counts_and_durations() {
        let counts: &[(f64, &str)] = &[
            (0.0, "0"),
            (999.4, "999"),
            (12_345.0, "12.3k"),
            (4.5e6, "4.5M"),
        ];
        for (value, want) in counts {
            assert_eq!(human_count(*value), *want);
        }
        let durations: &[(f64, &str)] = &[
            (0.4, "0s"),
            (59.0, "59s"),
            (185.0, "3m05s"),
            (7620.0, "2h07m"),
            (f64::INFINITY, "5124095576030431h00m"),
        ];
        for (seconds, want) in durations {
            assert_eq!(human_duration(*seconds), *want);
        }
    }

    /// A writer whose bytes stay readable after the bar lets go of it.
    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.borrow()).into_owned()
        }
    }

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn redraws_at_most_every_tenth_of_a_second() {
        let start = Instant::now();
        let output = Shared::default();
        let mut progress = Progress::with_output(Some(output.clone()), "replay", 10, start);
        for (done, after_ms) in [(1, 0), (2, 50), (3, 99), (4, 100), (5, 150), (6, 250)] {
            progress.done = done;
            progress.draw_if_due(start + Duration::from_millis(after_ms));
        }
        let text = output.text();
        // Drawn at 0, 100 and 250 ms.
        assert_eq!(text.matches('\r').count(), 3, "{text:?}");
        for (done, shown) in [
            (1, true),
            (2, false),
            (3, false),
            (4, true),
            (5, false),
            (6, true),
        ] {
            assert_eq!(
                text.contains(&format!(" {done}/10 intervals")),
                shown,
                "{done}: {text:?}"
            );
        }
    }

    #[test]
    fn finish_draws_the_end_and_a_newline_once() {
        let start = Instant::now();
        let output = Shared::default();
        let mut progress = Progress::with_output(Some(output.clone()), "replay", 10, start);
        progress.done = 10;
        progress.finish_at(start + Duration::from_secs(1));
        progress.finish_at(start + Duration::from_secs(2));
        drop(progress);
        let text = output.text();
        assert!(text.ends_with("10/10 intervals  10/s\x1b[K\n"), "{text:?}");
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    }

    #[test]
    fn dropped_part_way_ends_the_line() {
        let output = Shared::default();
        let mut progress =
            Progress::with_output(Some(output.clone()), "replay", 10, Instant::now());
        progress.update(3);
        drop(progress);
        assert!(output.text().ends_with("\x1b[K\n"), "{:?}", output.text());

        // Never drawn, nothing to end.
        let silent = Shared::default();
        drop(Progress::with_output(
            Some(silent.clone()),
            "replay",
            10,
            Instant::now(),
        ));
        assert_eq!(silent.text(), "");
    }

    #[test]
    fn quiet_draws_nothing() {
        let mut progress: Progress<Vec<u8>> =
            Progress::with_output(None, "replay", 10, Instant::now());
        progress.update(5);
        progress.finish();
        assert!(progress.last_drawn.is_none());
        // And the public constructor, quiet, never draws either.
        let mut quiet = Progress::new("replay", 10, true);
        quiet.update(10);
        quiet.finish();
        assert!(quiet.out.is_none() && quiet.last_drawn.is_none());
    }

    /// A writer that fails, as a closed terminal would.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("closed"))
        }
    }

    #[test]
    fn a_broken_output_stops_drawing() {
        let mut progress = Progress::with_output(Some(Broken), "replay", 10, Instant::now());
        progress.update(1);
        assert!(progress.out.is_none());
        progress.update(2);
        progress.finish();
    }
}
