//! Charts drawn with plotters, each to SVG and to PNG. PNG goes through the bitmap backend
//! with DejaVu Sans bundled in `assets/` (registered once), so no system font is needed.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// Past this many fault windows a timeline shades them without labels (the page lists them).
pub const WINDOW_LABELS_MAX: usize = 12;

/// Chart size in pixels.
pub const CHART_SIZE: (u32, u32) = (900, 420);

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // The bundled font is valid TrueType; if registration failed, PNG text would be missing,
        // not wrong, and the SVG (text drawn by the browser) would still be complete.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A shaded time window on a timeline (a fault), with its label.
#[derive(Clone, Debug)]
pub struct Window {
    /// Start (s).
    pub from: f64,
    /// End (s).
    pub to: f64,
    /// What it was.
    pub label: String,
}

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// A line chart with optional shaded windows and vertical markers, to `<stem>.svg` and
/// `<stem>.png`.
#[allow(clippy::too_many_arguments)]
pub fn line_chart(
    dir: &Path,
    stem: &str,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    windows: &[Window],
    markers: &[(f64, String)],
) -> DrawResult {
    register_font();
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    draw_lines(
        SVGBackend::new(&svg, CHART_SIZE).into_drawing_area(),
        title,
        x_desc,
        y_desc,
        series,
        windows,
        markers,
    )?;
    draw_lines(
        BitMapBackend::new(&png, CHART_SIZE).into_drawing_area(),
        title,
        x_desc,
        y_desc,
        series,
        windows,
        markers,
    )
}

#[allow(clippy::too_many_arguments)]
fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    windows: &[Window],
    markers: &[(f64, String)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(windows.iter().map(|w| w.to));
    let x_max = xs.fold(1.0_f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    for (i, w) in windows.iter().enumerate() {
        let shade = RGBColor(255, 200, 120).mix(0.25);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(w.from, 0.0), (w.to, y_max)],
                shade.filled(),
            )))
            .map_err(err)?;
        if windows.len() > WINDOW_LABELS_MAX {
            continue;
        }
        // Stagger labels so overlapping windows stay readable.
        let y = y_max * (0.97 - 0.06 * (i % 5) as f64);
        chart
            .draw_series(std::iter::once(Text::new(
                w.label.clone(),
                (w.from, y),
                ("sans-serif", 11).into_font().color(&RGBColor(140, 80, 0)),
            )))
            .map_err(err)?;
    }
    for (i, (x, label)) in markers.iter().enumerate() {
        chart
            .draw_series(LineSeries::new([(*x, 0.0), (*x, y_max)], BLACK.mix(0.5)))
            .map_err(err)?;
        // Stagger the labels: p95 and p99 are often a hair apart.
        let y = y_max * (0.05 + 0.07 * i as f64);
        let text = Text::new(format!(" {label}"), (*x, y), ("sans-serif", 12));
        chart.draw_series(std::iter::once(text)).map_err(err)?;
    }
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(if windows.is_empty() {
                SeriesLabelPosition::MiddleRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// A bar chart of labelled counts, to `<stem>.svg` and `<stem>.png`.
pub fn bar_chart(
    dir: &Path,
    stem: &str,
    title: &str,
    y_desc: &str,
    bars: &[(String, f64)],
) -> DrawResult {
    register_font();
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    draw_bars(
        SVGBackend::new(&svg, CHART_SIZE).into_drawing_area(),
        title,
        y_desc,
        bars,
    )?;
    draw_bars(
        BitMapBackend::new(&png, CHART_SIZE).into_drawing_area(),
        title,
        y_desc,
        bars,
    )
}

fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    bars: &[(String, f64)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let y_max = bars.iter().map(|b| b.1).fold(1.0_f64, f64::max) * 1.15;
    let n = bars.len().max(1);
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..n as f64, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_labels(n * 2)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let color = PALETTE[i % PALETTE.len()];
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, b.1)],
                color.filled(),
            )
        }))
        .map_err(err)?;
    root.present().map_err(err)
}
