//! The SVG chart: median write and read latency versus payload size, one
//! line per contender, log-log axes (plotters, SVG backend only).

use std::path::Path;

use plotters::prelude::*;

use crate::contenders::Result;
use crate::results::Results;
use crate::stats::fmt_bytes;

const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(150, 150, 150),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
];

/// Draw `results` into an SVG file at `path`.
pub fn draw(results: &Results, path: &Path) -> Result<()> {
    if results.sizes.is_empty() {
        return Err("no latency data to chart".into());
    }
    let names: Vec<&'static str> = results.sizes[0].measured.iter().map(|m| m.name).collect();
    // x is log2(payload bytes) on a linear axis, so ticks fall on powers
    // of two (64 KiB, 128 KiB, ... 8 MiB) rather than powers of ten.
    let x_of = |bytes: usize| (bytes.max(1) as f64).log2();
    let xs: Vec<f64> = results.sizes.iter().map(|s| x_of(s.size)).collect();
    let x_min = xs.iter().cloned().fold(f64::INFINITY, f64::min) - 0.5;
    let x_max = xs.iter().cloned().fold(0.0, f64::max) + 0.5;
    let mut y_min = f64::INFINITY;
    let mut y_max: f64 = 0.0;
    for s in &results.sizes {
        for m in &s.measured {
            for d in [m.write.median(), m.read.median()] {
                let v = d.as_secs_f64() * 1e3;
                if v > 0.0 {
                    y_min = y_min.min(v);
                    y_max = y_max.max(v);
                }
            }
        }
    }
    let (y_min, y_max) = (y_min / 2.0, y_max * 2.0);

    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "snapcache-bench ({} run, {}): median latency vs payload size",
            if results.quick { "quick" } else { "full" },
            results.date
        ),
        ("sans-serif", 20),
    )?;
    let panels = body.split_evenly((1, 2));
    for (panel, write) in panels.iter().zip([true, false]) {
        let caption = if write {
            "write / publish (durable where the contender is)"
        } else {
            "read back (verified where the contender verifies)"
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min..x_max, (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("payload (log scale)")
            .x_labels(((x_max - x_min).ceil() as usize + 1).max(2))
            .y_desc("median latency (ms, log scale)")
            .x_label_formatter(&|v| fmt_bytes(2f64.powf(v.round()) as u64))
            .y_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = results
                .sizes
                .iter()
                .filter_map(|s| {
                    let m = s.get(name)?;
                    let d = if write {
                        m.write.median()
                    } else {
                        m.read.median()
                    };
                    Some((x_of(s.size), (d.as_secs_f64() * 1e3).max(y_min)))
                })
                .collect();
            let style = ShapeStyle::from(&color).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Draw the scaling axes (one panel each, log-log, one line per operation)
/// into an SVG file at `path`.
pub fn draw_scaling(results: &Results, path: &Path) -> Result<()> {
    let axes = &results.scaling;
    if axes.is_empty() {
        return Err("no scaling data to chart".into());
    }
    let root = SVGBackend::new(path, (1500, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "snapcache-bench ({} run, {}): median time per operation (log-log)",
            if results.quick { "quick" } else { "full" },
            results.date
        ),
        ("sans-serif", 20),
    )?;
    let panels = body.split_evenly((1, axes.len()));
    for (panel, axis) in panels.iter().zip(axes) {
        let xs: Vec<f64> = axis.xs.iter().map(|&x| x.max(1) as f64).collect();
        let x_min = xs.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
        let x_max = xs.iter().cloned().fold(0.0, f64::max) * 1.5;
        let mut y_min = f64::INFINITY;
        let mut y_max: f64 = 0.0;
        for (_, ys) in &axis.series {
            for d in ys {
                let v = d.as_secs_f64() * 1e3;
                if v > 0.0 {
                    y_min = y_min.min(v);
                    y_max = y_max.max(v);
                }
            }
        }
        if !y_min.is_finite() || x_min >= x_max {
            continue;
        }
        let (y_min, y_max) = (y_min / 2.0, y_max * 2.0);
        let bytes = axis.unit == "bytes";
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("vs {}", axis.name), ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc(format!("{} (log scale)", axis.name))
            .y_desc("median time (ms, log scale)")
            .x_label_formatter(&|v| {
                if bytes {
                    fmt_bytes(*v as u64)
                } else {
                    format!("{v:.0}")
                }
            })
            .y_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .draw()?;
        for (i, (op, ys)) in axis.series.iter().enumerate() {
            let color = PALETTE[(i + 2) % PALETTE.len()];
            let points: Vec<(f64, f64)> = xs
                .iter()
                .zip(ys)
                .map(|(x, d)| (*x, (d.as_secs_f64() * 1e3).max(y_min)))
                .collect();
            let style = ShapeStyle::from(&color).stroke_width(2);
            let slope = crate::scaling::loglog_slope(&axis.xs, ys)
                .map_or(String::new(), |s| format!(" (slope {s:.2})"));
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(format!("{op}{slope}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
