//! The progress bar on stderr, so that someone replaying a two-month trace
//! through two autoscalers sees it moving and how long is left.
//!
//! It is an [`indicatif`] bar. It draws only when stderr is a terminal
//! (indicatif hides a bar whose stderr is not one, or whose `TERM` is unset
//! or `dumb`, so a log file or CI output does not fill with redraws) and not
//! `quiet`, and redraws at most ten times a second whatever the caller's pace.
//!
//! The line shows the label, the fraction done, intervals done of the total,
//! the rate in intervals per second, and the time left at that rate. The bar
//! stays on screen at [`ProgressBar::finish`] (full) and, when dropped
//! part-way, as far as it got: a run that fails does not claim 100 %, and the
//! bar pads its line to the terminal's width, so an error printed after it
//! starts on a line of its own.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// Redraws per second, at most.
const REDRAWS_PER_SECOND: u8 = 10;

/// `replaying [#####---------]  42%  2,125,179/5,059,950 intervals  3,012,345/s  ETA 1s`
const TEMPLATE: &str =
    "{prefix} [{bar:30}] {percent:>3}%  {human_pos}/{human_len} intervals  {per_sec:0}  ETA {eta}";

/// A bar labelled `label` over `total` intervals, drawn on stderr unless
/// `quiet` or stderr is not a terminal; tell it with
/// [`ProgressBar::set_position`], end it with [`ProgressBar::finish`].
pub fn bar(label: &str, total: u64, quiet: bool) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SECOND)
    };
    with_target(target, label, total)
}

fn with_target(target: ProgressDrawTarget, label: &str, total: u64) -> ProgressBar {
    // TEMPLATE is a constant, checked by the tests below.
    let style = ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#-");
    ProgressBar::with_draw_target(Some(total), target)
        .with_style(style)
        .with_prefix(label.to_string())
        .with_finish(ProgressFinish::Abandon)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use indicatif::TermLike;

    use super::*;

    /// A terminal 120 columns wide that keeps what is written to it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn text(&self) -> String {
            self.0.lock().map(|text| text.clone()).unwrap_or_default()
        }
        fn target(&self) -> ProgressDrawTarget {
            ProgressDrawTarget::term_like(Box::new(self.clone()))
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            if let Ok(mut text) = self.0.lock() {
                text.push_str(s);
            }
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            self.write_str("\r")
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The last line drawn, without the padding to the terminal's width.
    fn last_line(screen: &Screen) -> String {
        let text = screen.text();
        text.rsplit('\r')
            .next()
            .unwrap_or("")
            .trim_end()
            .to_string()
    }

    #[test]
    fn the_template_is_valid() {
        assert!(ProgressStyle::with_template(TEMPLATE).is_ok());
    }

    #[test]
    fn finish_draws_the_whole_bar() {
        let screen = Screen::default();
        let bar = with_target(screen.target(), "replay", 5_000_000);
        bar.set_position(2_500_000);
        bar.finish();
        let line = last_line(&screen);
        assert!(
            line.starts_with(
                "replay [##############################] 100%  5,000,000/5,000,000 intervals  "
            ),
            "{line:?}"
        );
        assert!(line.ends_with("/s  ETA 0s"), "{line:?}");
    }

    #[test]
    fn dropped_part_way_stays_where_it_got() {
        let screen = Screen::default();
        let bar = with_target(screen.target(), "replay", 10);
        bar.set_position(5);
        drop(bar);
        let line = last_line(&screen);
        assert!(
            line.starts_with("replay [###############---------------]  50%  5/10 intervals  "),
            "{line:?}"
        );
    }

    #[test]
    fn quiet_draws_nothing() {
        let bar = bar("replay", 10, true);
        assert!(bar.is_hidden());
        bar.set_position(5);
        bar.finish();
    }
}
