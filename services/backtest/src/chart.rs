//! An SVG chart of demand and supply over time, for one or more runs on the
//! same trace, so that a reader sees at a glance where an autoscaler lagged,
//! overshot or flapped — the numbers in [`crate::elasticity`] say how much.
//!
//! Demand is drawn in black, each run's supply in its own colour, against
//! hours since the trace's start. Runs are overlaid on one panel or stacked
//! one panel each (each with the demand), sharing the y scale.
//!
//! A two-month trace at one interval a second has five million points, far
//! more than a chart has pixels, so each series is cut into at most
//! [`MAX_POINTS`] buckets of consecutive intervals and each bucket is drawn as
//! its **maximum**, placed at the bucket's start. Keeping the maximum rather
//! than the mean keeps peaks: a one-minute surge of demand, or a burst of
//! instances, stays as tall as it was. The price is that dips shorter than a
//! bucket do not show, for supply as for demand, so a brief shortfall may be
//! invisible on a long chart; the metrics count every interval.
//!
//! Text uses plotters' built-in font handling (no `ttf` feature): the SVG
//! names a generic `sans-serif` font and the viewer draws it.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use thiserror::Error;

/// At most this many points are drawn per series.
pub const MAX_POINTS: usize = 2000;

/// Chart width in pixels.
const WIDTH: u32 = 1200;
/// Height of one panel in pixels.
const PANEL_HEIGHT: u32 = 420;
/// Room for the chart's title above the panels.
const TITLE_HEIGHT: u32 = 40;

/// Colours for the runs' supply, in order (the Tableau 10 palette's first
/// four, distinguishable in print and by most colour-blind readers).
const RUN_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

/// One run's supply: ready instances per interval.
#[derive(Debug, Clone, Copy)]
pub struct SupplyRun<'a> {
    /// Its name in the legend ("NovaCron", "HPA").
    pub name: &'a str,
    /// Ready instances in each interval, as long as the demand.
    pub supply: &'a [u32],
}

/// How the runs share the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartLayout {
    /// All runs on one panel.
    Overlaid,
    /// One panel per run, stacked, each with the demand.
    Stacked,
}

/// What to draw.
#[derive(Debug, Clone, Copy)]
pub struct SupplyChart<'a> {
    /// The chart's title.
    pub title: &'a str,
    /// Length of each interval, in seconds.
    pub interval_secs: f64,
    /// Instances needed in each interval.
    pub demand: &'a [u32],
    /// The runs to compare.
    pub runs: &'a [SupplyRun<'a>],
    /// How the runs share the chart.
    pub layout: ChartLayout,
}

/// A chart that could not be drawn or written.
#[derive(Debug, Error)]
pub enum ChartError {
    /// There is no interval, or no run, to draw.
    #[error("nothing to chart: {0}")]
    Empty(&'static str),
    /// The interval length is not a positive number of seconds.
    #[error("interval must be a positive number of seconds, not {0}")]
    InvalidInterval(f64),
    /// A run's supply does not cover the same intervals as the demand.
    #[error("run {run:?} has {found} intervals of supply, but demand has {expected}")]
    LengthMismatch {
        /// The run's name.
        run: String,
        /// Intervals of demand.
        expected: usize,
        /// Intervals of the run's supply.
        found: usize,
    },
    /// Plotters failed to draw.
    #[error("cannot draw the chart: {0}")]
    Draw(String),
    /// The file could not be written.
    #[error("{file}: cannot write the chart: {source}")]
    Write {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for ChartError {
    fn from(error: DrawingAreaErrorKind<E>) -> Self {
        ChartError::Draw(error.to_string())
    }
}

/// Draws `chart` and writes it as SVG to `path`.
pub fn write_svg(path: &Path, chart: &SupplyChart<'_>) -> Result<(), ChartError> {
    let svg = render_svg(chart)?;
    std::fs::write(path, svg).map_err(|source| ChartError::Write {
        file: path.display().to_string(),
        source,
    })
}

/// Draws `chart` as an SVG document.
pub fn render_svg(chart: &SupplyChart<'_>) -> Result<String, ChartError> {
    validate(chart)?;
    let demand = downsample_max(chart.demand, chart.interval_secs, MAX_POINTS);
    let supplies: Vec<Vec<(f64, f64)>> = chart
        .runs
        .iter()
        .map(|run| downsample_max(run.supply, chart.interval_secs, MAX_POINTS))
        .collect();
    let hours = chart.demand.len() as f64 * chart.interval_secs / 3600.0;
    let highest = demand
        .iter()
        .chain(supplies.iter().flatten())
        .map(|(_, instances)| *instances)
        .fold(1.0, f64::max);
    // Headroom so the top line is not drawn on the frame.
    let y_max = (highest * 1.1).ceil();

    let panels = match chart.layout {
        ChartLayout::Overlaid => 1,
        ChartLayout::Stacked => chart.runs.len(),
    };
    let height = TITLE_HEIGHT + PANEL_HEIGHT * u32::try_from(panels).unwrap_or(u32::MAX).min(16);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(chart.title, ("sans-serif", 24))?;
        let areas = body.split_evenly((panels, 1));
        let runs: Vec<(&SupplyRun<'_>, &[(f64, f64)], RGBColor)> = chart
            .runs
            .iter()
            .zip(&supplies)
            .zip(RUN_COLOURS.iter().cycle())
            .map(|((run, points), colour)| (run, points.as_slice(), *colour))
            .collect();
        match chart.layout {
            ChartLayout::Overlaid => {
                if let Some(area) = areas.first() {
                    draw_panel(area, None, hours, y_max, &demand, &runs)?;
                }
            }
            ChartLayout::Stacked => {
                for (area, run) in areas.iter().zip(&runs) {
                    draw_panel(area, Some(run.0.name), hours, y_max, &demand, &[*run])?;
                }
            }
        }
        root.present()?;
    }
    Ok(svg)
}

fn validate(chart: &SupplyChart<'_>) -> Result<(), ChartError> {
    if chart.demand.is_empty() {
        return Err(ChartError::Empty("no intervals"));
    }
    if chart.runs.is_empty() {
        return Err(ChartError::Empty("no runs"));
    }
    if !(chart.interval_secs.is_finite() && chart.interval_secs > 0.0) {
        return Err(ChartError::InvalidInterval(chart.interval_secs));
    }
    for run in chart.runs {
        if run.supply.len() != chart.demand.len() {
            return Err(ChartError::LengthMismatch {
                run: run.name.to_string(),
                expected: chart.demand.len(),
                found: run.supply.len(),
            });
        }
    }
    Ok(())
}

/// One panel: axes, demand, the given runs' supply, and a legend.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: Option<&str>,
    hours: f64,
    y_max: f64,
    demand: &[(f64, f64)],
    runs: &[(&SupplyRun<'_>, &[(f64, f64)], RGBColor)],
) -> Result<(), ChartError>
where
    DB::ErrorType: 'static,
{
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56);
    if let Some(caption) = caption {
        builder.caption(caption, ("sans-serif", 18));
    }
    let mut panel = builder.build_cartesian_2d(0.0..hours, 0.0..y_max)?;
    // Whole hours on a long chart, fractions on a short one.
    let decimals = match hours {
        10.0.. => 0,
        1.0.. => 1,
        _ => 2,
    };
    let hours_label = |hours: &f64| format!("{hours:.decimals$}");
    panel
        .configure_mesh()
        .x_desc("hours")
        .y_desc("instances")
        .x_label_formatter(&hours_label)
        .y_label_formatter(&|instances| format!("{instances:.0}"))
        .draw()?;
    panel
        .draw_series(LineSeries::new(
            demand.iter().copied(),
            BLACK.stroke_width(1),
        ))?
        .label("demand")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (run, points, colour) in runs {
        let colour = *colour;
        panel
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(1),
            ))?
            .label(format!("{} supply", run.name))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    panel
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// At most `max_points` points (hours, instances): the maximum of each run of
/// `⌈len / max_points⌉` consecutive intervals, at the run's start.
fn downsample_max(values: &[u32], interval_secs: f64, max_points: usize) -> Vec<(f64, f64)> {
    let bucket_len = values.len().div_ceil(max_points.max(1)).max(1);
    values
        .chunks(bucket_len)
        .enumerate()
        .map(|(bucket, chunk)| {
            let start_hours = (bucket * bucket_len) as f64 * interval_secs / 3600.0;
            let highest = chunk.iter().copied().max().unwrap_or(0);
            (start_hours, f64::from(highest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_peaks() {
        let cases: &[(&str, &[u32], f64, usize, &[(f64, f64)])] = &[
            (
                "short series unchanged",
                &[1, 2, 3],
                3600.0,
                10,
                &[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)],
            ),
            (
                "max of each pair",
                &[1, 5, 2, 0, 3],
                1800.0,
                3,
                &[(0.0, 5.0), (1.0, 2.0), (2.0, 3.0)],
            ),
            ("one bucket", &[4, 9, 1, 1], 900.0, 1, &[(0.0, 9.0)]),
            ("empty", &[], 1.0, 10, &[]),
            (
                "zero points means one per bucket of all",
                &[2, 7],
                1.0,
                0,
                &[(0.0, 7.0)],
            ),
        ];
        for (name, values, interval_secs, max_points, want) in cases {
            assert_eq!(
                downsample_max(values, *interval_secs, *max_points),
                *want,
                "{name}"
            );
        }
        let long: Vec<u32> = (0..5_059_950).map(|i| (i % 1000) as u32).collect();
        let points = downsample_max(&long, 1.0, MAX_POINTS);
        assert!(points.len() <= MAX_POINTS, "{}", points.len());
        assert!(points.iter().all(|(_, v)| *v == 999.0));
    }

    fn chart<'a>(
        demand: &'a [u32],
        runs: &'a [SupplyRun<'a>],
        layout: ChartLayout,
    ) -> SupplyChart<'a> {
        SupplyChart {
            title: "NASA 1995, x100",
            interval_secs: 60.0,
            demand,
            runs,
            layout,
        }
    }

    #[test]
    fn renders_svg_with_text() {
        let demand: Vec<u32> = (0..5000).map(|i| 5 + (i % 300) / 10).collect();
        let nova: Vec<u32> = demand.iter().map(|d| d + 2).collect();
        let hpa: Vec<u32> = demand.iter().map(|d| d.saturating_sub(1)).collect();
        let runs = [
            SupplyRun {
                name: "NovaCron",
                supply: &nova,
            },
            SupplyRun {
                name: "HPA",
                supply: &hpa,
            },
        ];
        for layout in [ChartLayout::Overlaid, ChartLayout::Stacked] {
            let svg = render_svg(&chart(&demand, &runs, layout)).expect("chart");
            assert!(svg.starts_with("<svg"), "{layout:?}");
            for text in [
                "<text",
                "NASA 1995, x100",
                "hours",
                "instances",
                "demand",
                "NovaCron supply",
                "HPA supply",
            ] {
                assert!(svg.contains(text), "{layout:?}: no {text:?}");
            }
            // Three series of at most MAX_POINTS points each, no more.
            assert!(
                svg.len() < 3 * MAX_POINTS * 40 + 200_000,
                "{layout:?}: {} bytes",
                svg.len()
            );
        }
    }

    #[test]
    fn writes_the_file() {
        let dir = std::env::temp_dir().join(format!(
            "nova-backtest-chart-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("backtest.svg");
        let demand = [1, 2, 3, 2, 1];
        let runs = [SupplyRun {
            name: "NovaCron",
            supply: &[1, 1, 3, 3, 1],
        }];
        let written = write_svg(&path, &chart(&demand, &runs, ChartLayout::Overlaid));
        let contents = std::fs::read_to_string(&path);
        let _ = std::fs::remove_dir_all(&dir);
        written.expect("written");
        assert!(contents.expect("readable").starts_with("<svg"));

        let unwritable = dir.join("missing-directory").join("chart.svg");
        match write_svg(&unwritable, &chart(&demand, &runs, ChartLayout::Overlaid)) {
            Err(ChartError::Write { file, .. }) => {
                assert_eq!(file, unwritable.display().to_string())
            }
            other => panic!("expected Write, got {other:?}"),
        }
    }

    #[test]
    fn rejects_what_it_cannot_draw() {
        let demand = [1, 2];
        let short = [SupplyRun {
            name: "HPA",
            supply: &[1],
        }];
        let fine = [SupplyRun {
            name: "HPA",
            supply: &[1, 2],
        }];
        let cases: &[(SupplyChart<'_>, &str)] = &[
            (chart(&[], &fine, ChartLayout::Overlaid), "Empty"),
            (chart(&demand, &[], ChartLayout::Overlaid), "Empty"),
            (
                chart(&demand, &short, ChartLayout::Stacked),
                "LengthMismatch",
            ),
            (
                SupplyChart {
                    interval_secs: 0.0,
                    ..chart(&demand, &fine, ChartLayout::Overlaid)
                },
                "InvalidInterval",
            ),
        ];
        for (input, want) in cases {
            let variant = match render_svg(input) {
                Err(ChartError::Empty(_)) => "Empty",
                Err(ChartError::LengthMismatch { .. }) => "LengthMismatch",
                Err(ChartError::InvalidInterval(_)) => "InvalidInterval",
                other => panic!("{want}: unexpected {other:?}"),
            };
            assert_eq!(variant, *want);
        }
    }
}
