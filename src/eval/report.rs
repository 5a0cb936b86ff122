//! What `deja eval` prints: a table per group (or JSON), and a PNG of served and wrong rates
//! against the threshold.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::EvalError;
use super::pairs::Rates;
use super::replay::ReplayRates;

/// The sweep of one group of pairs (a language, a category, or all).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupSweep {
    /// Group name: `all`, a `lang` or a `category`.
    pub group: String,
    /// Same-answer pairs in the group.
    pub same_answer: usize,
    /// Trap pairs in the group.
    pub traps: usize,
    /// Rates at each threshold.
    pub sweep: Vec<Rates>,
    /// The lowest threshold whose wrong rate is within `--max-wrong`.
    pub lowest_meeting: Option<Rates>,
}

/// The sweep table of one group.
pub fn sweep_table(group: &GroupSweep, max_wrong: f32) -> String {
    let mut out = format!(
        "{} ({} same-answer, {} traps)\nthreshold  served  wrong  precision  recall\n",
        group.group, group.same_answer, group.traps
    );
    for r in &group.sweep {
        let _ = writeln!(
            out,
            "{:9.2}  {:6.3}  {:5.3}  {:9.3}  {:6.3}",
            r.threshold, r.served, r.wrong, r.precision, r.recall
        );
    }
    let _ = match group.lowest_meeting {
        Some(r) => writeln!(
            out,
            "lowest threshold with wrong <= {max_wrong}: {:.2} (recall {:.3}, precision {:.3})",
            r.threshold, r.recall, r.precision
        ),
        None => writeln!(out, "no threshold keeps wrong <= {max_wrong}"),
    };
    out
}

/// One line per group at a single threshold.
pub fn summary_line(group: &str, r: &Rates) -> String {
    format!(
        "{group:<12} at {:.2}: served {:.3}  wrong {:.3}  precision {:.3}  recall {:.3}",
        r.threshold, r.served, r.wrong, r.precision, r.recall
    )
}

/// The replay table: hit rate per threshold, one column per guard set.
pub fn replay_table(rates: &[ReplayRates]) -> String {
    let mut sets: Vec<&str> = Vec::new();
    for r in rates {
        if !sets.contains(&r.guards.as_str()) {
            sets.push(&r.guards);
        }
    }
    let mut out = "hit rate (semantic part) by guard set\nthreshold".to_owned();
    for s in &sets {
        let _ = write!(out, "  {s:>24}");
    }
    out.push('\n');
    let mut thresholds: Vec<f32> = rates.iter().map(|r| r.threshold).collect();
    thresholds.dedup();
    for t in thresholds {
        let _ = write!(out, "{t:9.2}");
        for s in &sets {
            if let Some(r) = rates.iter().find(|r| r.guards == *s && r.threshold == t) {
                let cell = format!("{:.3} ({:.3})", r.hit_rate, r.semantic_rate);
                let _ = write!(out, "  {cell:>24}");
            }
        }
        out.push('\n');
    }
    out
}

/// Draws served (share of same-answer pairs served) and wrong (share of traps served) against
/// the threshold for each group, with the chosen threshold marked.
pub fn plot(
    path: &Path,
    groups: &[GroupSweep],
    chosen: Option<f32>,
    max_wrong: f32,
) -> Result<(), EvalError> {
    register_font();
    let err = |e: &dyn std::fmt::Display| EvalError::Output(format!("{}: {e}", path.display()));
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "deja eval: same-answer pairs served vs traps served",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.70f32..1.0f32, 0.0f32..1.0f32)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("cosine threshold")
        .y_desc("share of pairs")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, group) in groups.iter().enumerate() {
        let color = palette[i % palette.len()];
        let served = group.sweep.iter().map(|r| (r.threshold, r.recall));
        chart
            .draw_series(LineSeries::new(served, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("{}: same-answer served", group.group))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        let wrong = group.sweep.iter().map(|r| (r.threshold, r.wrong));
        chart
            .draw_series(DashedLineSeries::new(wrong, 6, 4, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("{}: traps served (wrong)", group.group))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
            });
    }
    let limit = [(0.70f32, max_wrong), (1.0, max_wrong)];
    chart
        .draw_series(LineSeries::new(limit, BLACK.mix(0.4)))
        .map_err(|e| err(&e))?
        .label(format!("max wrong {max_wrong}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    if let Some(t) = chosen {
        chart
            .draw_series(LineSeries::new([(t, 0.0), (t, 1.0)], BLACK.stroke_width(1)))
            .map_err(|e| err(&e))?
            .label(format!("chosen threshold {t:.2}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // The font is compiled in, so a plot needs nothing from the machine it runs on.
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}
